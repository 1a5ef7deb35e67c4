"""A normalizing flow in the plane: coupling layers that alternate which coordinate they
transform, each a monotone map of that coordinate whose shape an MLP of the other one sets,
so every layer inverts in closed form and its log-determinant is the map's log-slope.

  * "affine" (RealNVP, Dinh et al. 2017): x_b ← x_b·exp(s(x_a)) + t(x_a);
  * "spline" (neural spline flows, Durkan et al. 2019): a monotone rational-quadratic spline on
    [−SPLINE_BOUND, SPLINE_BOUND] with `bins` bins, the identity outside, which can bend one
    mode into several in a single layer.

The density is exact: log p(x) = log N(f(x); 0, I) + Σ log|det ∂f|, f the layers from data to
noise. Its view: a grid pushed through the layers one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...families.base import at_least, within
from ...families.layers import ExponentialMovingAverage
from .base import EXACT, PlaneFamily, as_points, descend, mlp

SCALE_BOUND = 3.0  # s = 3·tanh(·/3): a layer stretches by at most e³, which keeps early steps finite
SPLINE_BOUND = 5.0  # splines act on [−5, 5], beyond the playground's grid; outside it, the identity
MIN_BIN, MIN_SLOPE = 1e-3, 1e-3  # no bin narrower (as a share of the interval), no knot flatter
IDENTITY_SLOPE = math.log(math.expm1(1 - MIN_SLOPE))  # MIN_SLOPE + softplus(this) = 1
COUPLINGS = ("affine", "spline")


@dataclass(frozen=True)
class PlaneFlowConfig:
    coupling: Literal["affine", "spline"] = "spline"  # each layer's map: RealNVP's affine, or a rational-quadratic spline
    bins: int = 8         # spline bins per layer
    layers: int = 8       # coupling layers, alternating the coordinate they transform
    width: int = 128      # hidden units of each layer's MLP
    depth: int = 2        # hidden layers of each layer's MLP
    lr: float = 2e-3      # Adam learning rate
    batch: int = 256      # points per step
    ema_decay: float = 0.99  # EMA of the weights, which sample and give the density (0: the live ones)

    def __post_init__(self) -> None:
        at_least(self, 1, "layers", "width", "depth", "batch", "bins")
        at_least(self, 0, "lr")
        within(self, 0, 1, "ema_decay")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {', '.join(COUPLINGS)}, not {self.coupling!r}")


class AffineCoupling(nn.Module):
    """Transforms coordinate `moved` given the other one; data → noise is `forward`."""

    def __init__(self, moved: int, width: int, depth: int):
        super().__init__()
        self.moved, self.kept = moved, 1 - moved
        self.net = mlp(1, 2, width, depth)   # → (s, t); zero at first: the identity

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(kept[:, None]).unbind(1)
        return SCALE_BOUND * torch.tanh(s / SCALE_BOUND), t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y, log|det ∂y/∂x|) per point."""
        s, t = self._scale_shift(x[:, self.kept])
        y = x.clone()
        y[:, self.moved] = x[:, self.moved] * torch.exp(s) + t
        return y, s

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._scale_shift(y[:, self.kept])
        x = y.clone()
        x[:, self.moved] = (y[:, self.moved] - t) * torch.exp(-s)
        return x


def _knots(unnormalised: Tensor) -> tuple[Tensor, Tensor]:
    """(knot positions (B, K + 1) from −SPLINE_BOUND to SPLINE_BOUND, bin sizes (B, K))."""
    bins = unnormalised.shape[1]
    share = MIN_BIN + (1 - MIN_BIN * bins) * F.softmax(unnormalised, 1)
    knots = F.pad(torch.cumsum(share, 1), (1, 0)) * 2 * SPLINE_BOUND - SPLINE_BOUND
    knots[:, 0], knots[:, -1] = -SPLINE_BOUND, SPLINE_BOUND
    return knots, knots[:, 1:] - knots[:, :-1]


def rational_quadratic(x: Tensor, widths: Tensor, heights: Tensor, slopes: Tensor,
                       inverse: bool = False) -> tuple[Tensor, Tensor]:
    """(y, log dy/dx at x) of the monotone rational-quadratic spline (Durkan et al. 2019, eqs.
    4–6 and its inverse by the quadratic formula), with unnormalised bin widths and heights
    (B, K) and interior knot slopes (B, K − 1); the identity outside [−SPLINE_BOUND,
    SPLINE_BOUND]. With inverse=True, x is the output and the result is (the input, log dy/dx
    at it)."""
    x_knots, w = _knots(widths)
    y_knots, h = _knots(heights)
    d = F.pad(MIN_SLOPE + F.softplus(slopes + IDENTITY_SLOPE), (1, 1), value=1.0)   # slopes 0 → 1: the identity
    inside = (x > -SPLINE_BOUND) & (x < SPLINE_BOUND)
    value = x.clamp(-SPLINE_BOUND, SPLINE_BOUND)
    knots = y_knots if inverse else x_knots
    k = (torch.searchsorted(knots[:, 1:-1].contiguous(), value[:, None].contiguous())[:, 0])     # (B,) bin

    def at_bin(per_bin: Tensor) -> Tensor:   # (B, ·) → (B,) each row's entry for its bin
        return per_bin.gather(1, k[:, None])[:, 0]

    xk, wk, yk, hk = at_bin(x_knots), at_bin(w), at_bin(y_knots), at_bin(h)
    dk, dk1 = at_bin(d[:, :-1]), at_bin(d[:, 1:])
    sk = hk / wk
    if inverse:
        dy = value - yk
        a = hk * (sk - dk) + dy * (dk1 + dk - 2 * sk)
        b = hk * dk - dy * (dk1 + dk - 2 * sk)
        c = -sk * dy
        xi = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))).clamp(0, 1)
        out = xk + xi * wk
    else:
        xi = ((value - xk) / wk).clamp(0, 1)
        out = yk + hk * (sk * xi**2 + dk * xi * (1 - xi)) / (sk + (dk1 + dk - 2 * sk) * xi * (1 - xi))
    denominator = sk + (dk1 + dk - 2 * sk) * xi * (1 - xi)
    slope = sk**2 * (dk1 * xi**2 + 2 * sk * xi * (1 - xi) + dk * (1 - xi) ** 2) / denominator**2
    return torch.where(inside, out, x), torch.where(inside, torch.log(slope), torch.zeros_like(x))


class SplineCoupling(nn.Module):
    """Coordinate `moved` through a rational-quadratic spline whose bins and slopes an MLP of
    the other coordinate sets; data → noise is `forward`."""

    def __init__(self, moved: int, width: int, depth: int, bins: int):
        super().__init__()
        self.moved, self.kept, self.bins = moved, 1 - moved, bins
        self.net = mlp(1, 3 * bins - 1, width, depth)   # zero at first: equal bins, slope 1, the identity

    def _spline(self, kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.net(kept[:, None])
        return out[:, :self.bins], out[:, self.bins:2 * self.bins], out[:, 2 * self.bins:]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        moved, log_slope = rational_quadratic(x[:, self.moved], *self._spline(x[:, self.kept]))
        y = x.clone()
        y[:, self.moved] = moved
        return y, log_slope

    def inverse(self, y: Tensor) -> Tensor:
        moved, _log_slope = rational_quadratic(y[:, self.moved], *self._spline(y[:, self.kept]), inverse=True)
        x = y.clone()
        x[:, self.moved] = moved
        return x


class PlaneFlow(PlaneFamily):
    name = "flow"
    title = "Normalizing flow"
    latent = "2-D noise, exactly invertible"
    density_kind = EXACT
    Config = PlaneFlowConfig

    def __init__(self, config: PlaneFlowConfig, seed: int = 0):
        super().__init__(config, seed)
        self.layers = nn.ModuleList(
            SplineCoupling(i % 2, config.width, config.depth, config.bins) if config.coupling == "spline"
            else AffineCoupling(i % 2, config.width, config.depth) for i in range(config.layers))
        self.optimizer = torch.optim.Adam(self.layers.parameters(), lr=config.lr)
        self.ema = ExponentialMovingAverage(self.layers, config.ema_decay)

    def networks(self) -> dict[str, nn.Module]:
        return {"layers": self.layers, "layers_ema": self.ema}

    @property
    def averaged(self) -> nn.ModuleList:
        """The layers that sample and give the density: the EMA, or the live ones at decay 0."""
        return self.ema.average if self.config.ema_decay > 0 else self.layers

    @staticmethod
    def to_noise(x: Tensor, layers: nn.ModuleList) -> tuple[Tensor, Tensor]:
        """(f(x), Σ log|det ∂f|) through every layer, data → noise."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for layer in layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def _log_density(self, x: Tensor, layers: nn.ModuleList) -> Tensor:
        z, log_det = self.to_noise(x, layers)
        return -0.5 * z.pow(2).sum(1) - np.log(2 * np.pi) + log_det

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        loss = -self._log_density(batch, self.layers).mean()
        descend(self.optimizer, loss)
        self.ema.update(self.layers)
        return {"loss": loss.item()}

    @torch.no_grad()
    def through_layers(self, noise: np.ndarray) -> list[np.ndarray]:
        """[(M, 2)] the points after each layer in turn, noise → data (layers + 1 arrays)."""
        x = as_points(noise)
        stages = [x]
        for layer in reversed(self.averaged):
            x = layer.inverse(x)
            stages.append(x)
        return [stage.double().numpy() for stage in stages]

    def sample(self, n: int, seed: int) -> np.ndarray:
        noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
        return self.through_layers(noise.numpy())[-1]

    @torch.no_grad()
    def log_density(self, points: np.ndarray) -> np.ndarray:
        return self._log_density(as_points(points), self.averaged).double().numpy()
