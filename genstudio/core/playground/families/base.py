"""The contract every 2-D family keeps: a small MLP version of the image family, trained a step
at a time on a batch of points, sampled from a seed, and, where it has one, its log-density at
any points (the yardstick normalises it on the grid). Views particular to a family (a GAN's
discriminator, a flow's layers, a velocity field) are plain arrays a widget draws.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

# How a family's density on the grid is obtained, as the yardstick's table says it.
EXACT = "exact"                      # a closed-form log-density (flow, autoregressive)
ODE = "ODE change of variables"      # integrated, exact up to the solver (flow matching)
KERNEL = "kernel estimate from samples"  # no density (GAN)


class PlaneFamily(ABC):
    """One family on points in the plane. Subclasses set the class attributes and the abstract
    methods; `log_density` stays None-returning for a family without one."""

    name: ClassVar[str]
    title: ClassVar[str]
    density_kind: str  # how the yardstick gets its density (EXACT, ODE, KERNEL or the family's own words)
    Config: ClassVar[type]  # a frozen dataclass, every knob with a default and a reason
    latent: ClassVar[str] = "none"  # what latent space it has, as the properties table says it

    def __init__(self, config: Any, seed: int = 0):
        self.config = config
        self.seed = seed
        torch.manual_seed(seed)  # the networks' initial weights

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Every module whose weights make the model (for saving and for counting)."""

    @abstractmethod
    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        """One optimizer step on (B, 2) float32 points; the figures to plot."""

    @abstractmethod
    def sample(self, n: int, seed: int) -> np.ndarray:
        """(n, 2) float64 points, the same for the same seed and weights."""

    def live_samples(self, n: int, seed: int) -> np.ndarray:
        """(n, 2) points for a live view, refreshed several times a second: `sample` unless a
        family has cheaper ones that show what it is doing (the EBM's training chains)."""
        return self.sample(n, seed)

    def log_density(self, points: np.ndarray) -> np.ndarray | None:
        """(M,) log p in nats at (M, 2) points, or None for a family without a density."""
        return None


def descend(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One optimizer step down `loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def mlp(inputs: int, outputs: int, width: int, depth: int) -> nn.Sequential:
    """inputs → depth hidden layers of `width` with SiLU → outputs; the last layer starts at
    zero, so a fresh network outputs 0 (a still field, an identity layer)."""
    layers: list[nn.Module] = []
    size = inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.SiLU()]
        size = width
    last = nn.Linear(size, outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def time_features(t: Tensor, frequencies: int = 4) -> Tensor:
    """(B,) times in [0, 1] → (B, 1 + 2·frequencies): t and sines/cosines of it, so a small MLP
    can change quickly along t."""
    scaled = t[:, None] * (torch.pi * 2.0 ** torch.arange(frequencies, dtype=t.dtype, device=t.device))
    return torch.cat([t[:, None], torch.sin(scaled), torch.cos(scaled)], 1)


def as_points(points: np.ndarray) -> Tensor:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), not {points.shape}")
    return torch.as_tensor(points, dtype=torch.float32)
