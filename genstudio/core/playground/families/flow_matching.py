"""Flow matching in the plane: an MLP velocity field v(x, t) regressed on the straight path's
velocity, with the image family's process functions (families/flow_matching.py: the loss,
the solvers, the change-of-variables likelihood with the exact divergence, which in 2-D is two
backward passes). Its views: the field as arrows at a chosen t, and the paths of samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ...families.base import at_least, within
from ...families.flow_matching import (
    SOLVERS,
    TIME_SAMPLINGS,
    exact_divergence,
    flow_matching_loss,
    integrate,
    log_likelihood,
    sample_times,
    uniform_times,
)
from ...families.layers import ExponentialMovingAverage
from .base import ODE, PlaneFamily, as_points, descend, mlp, time_features

LIVE_STEPS_MIN = 5


@dataclass(frozen=True)
class PlaneFlowMatchingConfig:
    width: int = 128              # hidden units per layer
    depth: int = 3                # hidden layers
    lr: float = 2e-3              # Adam learning rate
    batch: int = 256              # points per step
    time_sampling: Literal["logit-normal", "uniform"] = "uniform"  # in 2-D the ends matter as much as the middle
    solver: Literal["euler", "midpoint", "heun"] = "heun"  # sampling and likelihood ODE solver
    steps: int = 40               # solver steps for samples, paths and the likelihood
    ema_decay: float = 0.995      # EMA of the weights, which sample and give the density (0: the live ones)

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "depth", "batch", "steps")
        at_least(self, 0, "lr")
        within(self, 0, 1, "ema_decay")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)}, not {self.time_sampling!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}")


class VelocityMLP(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = mlp(2 + 9, 2, width, depth)   # x, and t with 4 frequencies (time_features)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, time_features(t.to(x.dtype))], 1))


class PlaneFlowMatching(PlaneFamily):
    name = "flow-matching"
    title = "Flow matching"
    latent = "2-D noise, invertible by the ODE"
    density_kind = ODE
    Config = PlaneFlowMatchingConfig

    def __init__(self, config: PlaneFlowMatchingConfig, seed: int = 0):
        super().__init__(config, seed)
        self.field = VelocityMLP(config.width, config.depth)
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=config.lr)
        self.ema = ExponentialMovingAverage(self.field, config.ema_decay)

    def networks(self) -> dict[str, nn.Module]:
        return {"field": self.field, "field_ema": self.ema}

    @property
    def averaged(self) -> nn.Module:
        """The field that samples and gives the density: the EMA, or the live one at decay 0."""
        return self.ema.average if self.config.ema_decay > 0 else self.field

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        noise = torch.randn(batch.shape, generator=generator)
        t = sample_times(batch.shape[0], self.config.time_sampling, generator)
        loss = flow_matching_loss(self.field, noise, batch, t)
        descend(self.optimizer, loss)
        self.ema.update(self.field)
        return {"loss": loss.item()}

    @torch.no_grad()
    def paths(self, n: int, seed: int) -> np.ndarray:
        """(steps + 1, n, 2): samples along the ODE from their noise (t = 0) to the data (t = 1)."""
        noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
        states = [noise]
        integrate(self.averaged, noise, 0.0, 1.0, self.config.steps, self.config.solver,
                  on_step=lambda _i, _n, x: states.append(x))
        return torch.stack(states).double().numpy()

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.paths(n, seed)[-1]

    @torch.no_grad()
    def live_samples(self, n: int, seed: int) -> np.ndarray:
        """Euler in a quarter of the steps: a live view's samples, several times a second."""
        noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
        return integrate(self.averaged, noise, 0.0, 1.0, max(LIVE_STEPS_MIN, self.config.steps // 4), "euler").double().numpy()

    @torch.no_grad()
    def velocity(self, points: np.ndarray, t: float) -> np.ndarray:
        """(M, 2) the field at time t, for the arrows."""
        x = as_points(points)
        return self.averaged(x, torch.full((x.shape[0],), t)).double().numpy()

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """By the change of variables along the ODE from t = 1 back to noise, the divergence
        exact (continuous data: the field is smooth at t = 1, unlike for 8-bit images)."""
        x, field = as_points(points), self.averaged
        with torch.no_grad():
            log_p, _noise = log_likelihood(field, x, uniform_times(1.0, 0.0, self.config.steps),
                                           lambda v, t: exact_divergence(field, v, t)[:, None],
                                           solver=self.config.solver)
        return log_p[:, 0].double().numpy()
