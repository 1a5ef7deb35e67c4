"""An autoregressive model of the plane: p(x) = p(x₁)·p(x₂ | x₁), each factor a mixture of
logistics (continuous, as PixelCNN++'s is over pixel values), its parameters for x₂ a function
of x₁ only. The `conditional` knob walks CS236's progression:

  * "logistic": one logistic whose location is linear in x₁ (FVSBN's logistic regression);
  * "nade": one logistic from a one-hidden-layer network of x₁ (NADE's shared hidden layer);
  * "mixture": `components` logistics from an MLP of x₁ (MADE with a mixture of logistics).

The density is exact; sampling draws x₁, then x₂ given it. Its view: the slice p(x₂ | x₁ = a).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...families.base import at_least
from .base import EXACT, PlaneFamily, as_points, descend, mlp

CONDITIONALS = ("logistic", "nade", "mixture")
MIN_LOG_SCALE = -3.0   # a logistic no narrower than e⁻³ = 0.05: finer than the toys, coarser than the grid can miss


@dataclass(frozen=True)
class PlaneAutoregressiveConfig:
    conditional: Literal["logistic", "nade", "mixture"] = "mixture"  # p(x₂ | x₁): linear logistic | NADE | MADE mixture
    components: int = 10   # logistics in each mixture (the "mixture" conditional, and p(x₁))
    width: int = 128       # hidden units
    depth: int = 2         # hidden layers of the mixture's network
    lr: float = 2e-3       # Adam learning rate
    batch: int = 256       # points per step

    def __post_init__(self) -> None:
        at_least(self, 1, "components", "width", "depth", "batch")
        at_least(self, 0, "lr")
        if self.conditional not in CONDITIONALS:
            raise ValueError(f"conditional must be one of {', '.join(CONDITIONALS)}, not {self.conditional!r}")


def logistic_mixture_log_prob(x: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """(B,) log Σ_k π_k·Logistic(x; loc_k, s_k) for x (B,) and parameters (B, K)."""
    log_scale = log_scale.clamp_min(MIN_LOG_SCALE)
    z = (x[:, None] - loc) * torch.exp(-log_scale)
    log_pdf = -z - log_scale - 2 * F.softplus(-z)
    return torch.logsumexp(F.log_softmax(logits, 1) + log_pdf, 1)


def sample_logistic_mixture(logits: Tensor, loc: Tensor, log_scale: Tensor, generator: torch.Generator) -> Tensor:
    component = torch.multinomial(F.softmax(logits, 1), 1, generator=generator)[:, 0]
    rows = torch.arange(logits.shape[0])
    u = torch.rand(logits.shape[0], generator=generator).clamp(1e-6, 1 - 1e-6)
    return loc[rows, component] + torch.exp(log_scale.clamp_min(MIN_LOG_SCALE)[rows, component]) * torch.log(u / (1 - u))


class PlaneAutoregressive(PlaneFamily):
    name = "autoregressive"
    title = "Autoregressive"
    density_kind = EXACT
    Config = PlaneAutoregressiveConfig

    def __init__(self, config: PlaneAutoregressiveConfig, seed: int = 0):
        super().__init__(config, seed)
        k = config.components
        # p(x₁): free parameters, spread over the grid at first so no mode starts starved.
        self.first = nn.ParameterDict({
            "logits": nn.Parameter(torch.zeros(k)),
            "loc": nn.Parameter(torch.linspace(-3, 3, k)),
            "log_scale": nn.Parameter(torch.zeros(k)),
        })
        if config.conditional == "logistic":
            self.second = nn.Linear(1, 2)                      # → (loc, log_scale)
        elif config.conditional == "nade":
            self.second = mlp(1, 2, config.width, 1)
        else:
            self.second = mlp(1, 3 * k, config.width, config.depth)
            # Components that start identical get identical gradients and stay one logistic:
            # spread their locations as p(x₁)'s are.
            with torch.no_grad():
                self.second[-1].bias[k:2 * k] = torch.linspace(-3, 3, k)
        self.optimizer = torch.optim.Adam([*self.first.parameters(), *self.second.parameters()], lr=config.lr)

    def networks(self) -> dict[str, nn.Module]:
        return {"first": self.first, "second": self.second}

    def first_parameters(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(self.first[name].expand(n, -1) for name in ("logits", "loc", "log_scale"))

    def second_parameters(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, loc, log_scale) of p(x₂ | x₁), each (B, K) (K = 1 but for the mixture)."""
        out = self.second(x1[:, None])
        if self.config.conditional != "mixture":
            return torch.zeros_like(out[:, :1]), out[:, :1], out[:, 1:2]
        return out.chunk(3, 1)

    def _log_density(self, x: Tensor) -> Tensor:
        return (logistic_mixture_log_prob(x[:, 0], *self.first_parameters(x.shape[0]))
                + logistic_mixture_log_prob(x[:, 1], *self.second_parameters(x[:, 0])))

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        loss = -self._log_density(batch).mean()
        descend(self.optimizer, loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        x1 = sample_logistic_mixture(*self.first_parameters(n), g)
        x2 = sample_logistic_mixture(*self.second_parameters(x1), g)
        return torch.stack([x1, x2], 1).double().numpy()

    @torch.no_grad()
    def log_density(self, points: np.ndarray) -> np.ndarray:
        return self._log_density(as_points(points)).double().numpy()

    @torch.no_grad()
    def conditional_slice(self, x1: float, x2: np.ndarray) -> np.ndarray:
        """(M,) p(x₂ | x₁ = x1) at the values x2, for the slice under the cursor."""
        values = torch.as_tensor(x2, dtype=torch.float32)
        parameters = self.second_parameters(torch.full((len(values),), float(x1)))
        return torch.exp(logistic_mixture_log_prob(values, *parameters)).double().numpy()

