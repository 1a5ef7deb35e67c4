"""Diffusion in the plane (Song et al. 2021's variance-preserving SDE, in continuous time): an
MLP ε(x_t, t) trained to predict the noise in x_t = √ᾱ(t)·x + √(1 − ᾱ(t))·ε, the loss of DDPM.
Sampling and the density both follow the probability-flow ODE

    dx/dt = −½β(t)·x + ½β(t)·ε(x, t)/σ(t),    σ(t) = √(1 − ᾱ(t)),

from N(0, I) at t = 1 to the data at t = T_MIN; the density by the change of variables along
it with the image family's `log_likelihood` and the exact divergence (2-D: two backward
passes), so it is the density of the data blurred by σ(T_MIN) = 0.01. Its view: the score
−ε/σ as arrows at a chosen t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...families.base import at_least, within
from ...families.flow_matching import exact_divergence, integrate_over, log_likelihood
from ...families.layers import ExponentialMovingAverage
from .base import ODE, PlaneFamily, as_points, descend, mlp, time_features

BETA_MIN, BETA_MAX = 0.1, 20.0   # Song et al.'s linear β(t); ᾱ(1) = e^−10.05, so x₁ is N(0, I)
T_MIN = 1e-4                     # the data end of the ODE: σ(T_MIN) ≈ 0.01
LIVE_STEPS_MIN = 5


def ode_times(steps: int) -> list[float]:
    """steps + 1 values of τ from 0 (noise) to 1 (data), closer together near the data, where
    σ(t) is small and the ODE stiff: τ = 1 − (1 − i/steps)², i.e. t − T_MIN ∝ (1 − i/steps)²."""
    return [1.0 - (1.0 - i / steps) ** 2 for i in range(steps + 1)]


def beta(t: Tensor) -> Tensor:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def alpha_bar(t: Tensor) -> Tensor:
    """ᾱ(t) = exp(−∫₀ᵗ β)."""
    return torch.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))


@dataclass(frozen=True)
class PlaneDiffusionConfig:
    width: int = 128      # hidden units per layer
    depth: int = 3        # hidden layers
    lr: float = 2e-3      # Adam learning rate
    batch: int = 256      # points per step
    steps: int = 50       # Heun steps of the ODE, for samples and the density
    ema_decay: float = 0.995  # EMA of the weights, which sample and give the density (0: the live ones)

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "depth", "batch", "steps")
        at_least(self, 0, "lr")
        within(self, 0, 1, "ema_decay")


class NoiseMLP(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = mlp(2 + 9, 2, width, depth)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, time_features(t.to(x.dtype))], 1))


class PlaneDiffusion(PlaneFamily):
    name = "diffusion"
    title = "Diffusion"
    latent = "2-D noise, invertible by the ODE"
    density_kind = ODE
    Config = PlaneDiffusionConfig

    def __init__(self, config: PlaneDiffusionConfig, seed: int = 0):
        super().__init__(config, seed)
        self.noise_net = NoiseMLP(config.width, config.depth)
        self.optimizer = torch.optim.Adam(self.noise_net.parameters(), lr=config.lr)
        self.ema = ExponentialMovingAverage(self.noise_net, config.ema_decay)

    def networks(self) -> dict[str, nn.Module]:
        return {"noise": self.noise_net, "noise_ema": self.ema}

    @property
    def averaged(self) -> nn.Module:
        """The network that samples and gives the density: the EMA, or the live one at decay 0."""
        return self.ema.average if self.config.ema_decay > 0 else self.noise_net

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        t = T_MIN + (1 - T_MIN) * torch.rand(batch.shape[0], generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        a = alpha_bar(t)[:, None]
        loss = (self.noise_net(a.sqrt() * batch + (1 - a).sqrt() * noise, t) - noise).pow(2).mean()
        descend(self.optimizer, loss)
        self.ema.update(self.noise_net)
        return {"loss": loss.item()}

    def score(self, points: np.ndarray, t: float) -> np.ndarray:
        """(M, 2) ∇ log p_t = −ε(x, t)/σ(t), for the arrows."""
        x = as_points(points)
        time = torch.full((x.shape[0],), t)
        with torch.no_grad():
            return (-self.averaged(x, time) / (1 - alpha_bar(time)[:, None]).sqrt()).double().numpy()

    def flow_field(self, x: Tensor, tau: Tensor) -> Tensor:
        return probability_flow(self.averaged, x, tau)

    @torch.no_grad()
    def paths(self, n: int, seed: int) -> np.ndarray:
        """(steps + 1, n, 2): samples along the probability flow from their noise to the data."""
        noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
        states = [noise]
        integrate_over(self.flow_field, noise, ode_times(self.config.steps), "heun",
                       on_step=lambda _i, _n, x: states.append(x))
        return torch.stack(states).double().numpy()

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.paths(n, seed)[-1]

    @torch.no_grad()
    def live_samples(self, n: int, seed: int) -> np.ndarray:
        """Heun in a sixth of the steps: a live view's samples, several times a second."""
        noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
        steps = max(LIVE_STEPS_MIN, self.config.steps // 6)
        return integrate_over(self.flow_field, noise, ode_times(steps), "heun").double().numpy()

    def log_density(self, points: np.ndarray) -> np.ndarray:
        return probability_flow_log_density(self.averaged, as_points(points), self.config.steps).double().numpy()


def probability_flow(noise_net: nn.Module, x: Tensor, tau: Tensor) -> Tensor:
    """The probability-flow ODE of the noise predictor, in the flow-matching direction: τ = 0 is
    the noise (t = 1), τ = 1 the data (t = T_MIN); dx/dτ = −(1 − T_MIN)·dx/dt."""
    t = 1 - tau * (1 - T_MIN)
    b, sigma = beta(t)[:, None], (1 - alpha_bar(t)[:, None]).sqrt()
    drift = -0.5 * b * x + 0.5 * b * noise_net(x, t) / sigma
    return -(1 - T_MIN) * drift


def probability_flow_log_density(noise_net: nn.Module, x: Tensor, steps: int) -> Tensor:
    """(B,) log p(x) by the change of variables along the probability flow, Heun in `steps`."""
    def field(v: Tensor, tau: Tensor) -> Tensor:
        return probability_flow(noise_net, v, tau)

    with torch.no_grad():
        log_p, _noise = log_likelihood(field, x, ode_times(steps)[::-1],
                                       lambda v, tau: exact_divergence(field, v, tau)[:, None])
    # x₁ is N(0, ᾱ(1)·Cov + (1 − ᾱ(1))·I), N(0, I) to within e^−10 of a nat: log_likelihood's prior.
    return log_p[:, 0]
