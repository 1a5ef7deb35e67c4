"""An energy-based model in the plane: p(x) ∝ exp(−E(x)) with E an MLP, trained by contrastive
divergence: lower the energy of data, raise it at samples from short Langevin chains
(x ← x − ½η∇E(x) + √η·ε) started from a persistent buffer (Du & Mordatch 2019), with a small
penalty on the energies' squares. Its density is exp(−E) normalised on the grid (in 2-D the
partition function is a sum over cells, so the EBM is scored exactly on the grid). Its views:
the energy landscape, and Langevin chains moving on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...families.base import at_least, within
from ...families.layers import ExponentialMovingAverage
from .base import PlaneFamily, as_points, descend, mlp

BUFFER_SIZE = 4096
START_EXTENT = 4.0   # new chains start uniform on [−4, 4]², the playground's grid
SAMPLE_STEPS = 200   # Langevin steps of a sample from noise: the training's few only move persistent chains


@dataclass(frozen=True)
class PlaneEBMConfig:
    width: int = 64           # hidden units per layer: more steps in the same seconds beat a wider energy
    depth: int = 3            # hidden layers
    lr: float = 1e-3          # Adam learning rate
    batch: int = 256          # points per step
    sgld_steps: int = 5       # Langevin steps per training step (persistent chains: a few suffice)
    step_size: float = 0.02   # Langevin η
    restart: float = 0.05     # share of chains restarted from uniform noise each step
    energy_penalty: float = 0.1  # weight of E² on data and samples, which keeps energies near 0
    ema_decay: float = 0.99   # EMA of the weights, whose energy gives the density and samples (0: the live ones)

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "depth", "batch", "sgld_steps")
        at_least(self, 0, "lr", "step_size", "energy_penalty")
        within(self, 0, 1, "restart", "ema_decay")


class PlaneEBM(PlaneFamily):
    name = "ebm"
    title = "Energy-based"
    density_kind = "exp(−E) normalised on the grid"
    Config = PlaneEBMConfig

    def __init__(self, config: PlaneEBMConfig, seed: int = 0):
        super().__init__(config, seed)
        self.energy = mlp(2, 1, config.width, config.depth)
        self.optimizer = torch.optim.Adam(self.energy.parameters(), lr=config.lr, betas=(0.0, 0.999))
        self.ema = ExponentialMovingAverage(self.energy, config.ema_decay)
        g = torch.Generator().manual_seed(seed)
        self.buffer = (torch.rand(BUFFER_SIZE, 2, generator=g) * 2 - 1) * START_EXTENT

    def networks(self) -> dict[str, nn.Module]:
        return {"energy": self.energy, "energy_ema": self.ema}

    @property
    def averaged(self) -> nn.Module:
        """The energy that gives the density and samples: the EMA, or the live one at decay 0."""
        return self.ema.average if self.config.ema_decay > 0 else self.energy

    def langevin(self, x: Tensor, steps: int, generator: torch.Generator, keep: list[Tensor] | None = None,
                 energy: nn.Module | None = None) -> Tensor:
        """x after `steps` Langevin steps on E (the live energy unless another is given); `keep`
        collects every state (for the chains view)."""
        eta, energy = self.config.step_size, energy or self.energy
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            x = x - 0.5 * eta * grad + eta**0.5 * torch.randn(x.shape, generator=generator)
            if keep is not None:
                keep.append(x.detach())
        return x.detach()

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        rows = torch.randint(0, BUFFER_SIZE, (batch.shape[0],), generator=generator)
        start = self.buffer[rows]
        fresh = torch.rand(batch.shape[0], generator=generator) < self.config.restart
        start[fresh] = (torch.rand(int(fresh.sum()), 2, generator=generator) * 2 - 1) * START_EXTENT
        negatives = self.langevin(start, self.config.sgld_steps, generator)
        self.buffer[rows] = negatives
        e_data, e_model = self.energy(batch)[:, 0], self.energy(negatives)[:, 0]
        loss = e_data.mean() - e_model.mean() + self.config.energy_penalty * (e_data.pow(2) + e_model.pow(2)).mean()
        descend(self.optimizer, loss)
        self.ema.update(self.energy)
        return {"loss": loss.item(), "energy_gap": (e_model.mean() - e_data.mean()).item()}

    def chains(self, n: int, steps: int, seed: int) -> np.ndarray:
        """(steps + 1, n, 2) Langevin chains from uniform noise on the grid."""
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(n, 2, generator=g) * 2 - 1) * START_EXTENT
        states = [x]
        self.langevin(x, steps, g, keep=states, energy=self.averaged)
        return torch.stack(states).double().numpy()

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Long Langevin chains from uniform noise (SAMPLE_STEPS, or ten times the training's)."""
        return self.chains(n, max(SAMPLE_STEPS, 10 * self.config.sgld_steps), seed)[-1]

    def live_samples(self, n: int, seed: int) -> np.ndarray:
        """The persistent chains' latest states: the Langevin chains training moves."""
        return self.buffer[:n].double().numpy()

    @torch.no_grad()
    def energies(self, points: np.ndarray) -> np.ndarray:
        return self.averaged(as_points(points))[:, 0].double().numpy()

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """−E(x): unnormalised; the yardstick normalises it on the grid."""
        return -self.energies(points)
