"""A GAN in the plane: a generator MLP from a 2-D latent N(0, I) and a discriminator MLP,
trained with the chosen loss, `d_steps` discriminator steps per generator step. It has no
density: the yardstick scores a kernel estimate of its samples, and says so. Its views (GAN
Lab's): the discriminator's output over the plane, and the generator's image of a latent grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...families.base import at_least
from .base import KERNEL, PlaneFamily, as_points, descend, mlp

LOSSES = ("non-saturating", "hinge", "wgan-gp")


@dataclass(frozen=True)
class PlaneGANConfig:
    loss: Literal["non-saturating", "hinge", "wgan-gp"] = "non-saturating"  # Goodfellow's −log D(G(z)) | hinge | Wasserstein with gradient penalty
    d_steps: int = 1          # discriminator steps per generator step
    width: int = 128          # hidden units per layer, both networks
    depth: int = 3            # hidden layers of each
    lr: float = 1e-3          # Adam learning rate, both networks
    batch: int = 256          # points per step
    gp_weight: float = 0.1    # the gradient penalty's weight (wgan-gp)

    def __post_init__(self) -> None:
        at_least(self, 1, "d_steps", "width", "depth", "batch")
        at_least(self, 0, "lr", "gp_weight")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")


class PlaneGAN(PlaneFamily):
    name = "gan"
    title = "GAN"
    latent = "2-D z, no encoder"
    density_kind = KERNEL
    Config = PlaneGANConfig

    def __init__(self, config: PlaneGANConfig, seed: int = 0):
        super().__init__(config, seed)
        self.generator = mlp(2, 2, config.width, config.depth)
        nn.init.normal_(self.generator[-1].weight, std=0.1)  # not all at one point at the start
        self.discriminator = mlp(2, 1, config.width, config.depth)
        betas = (0.5, 0.9)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def _d_loss(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
        d_real, d_fake = self.discriminator(real)[:, 0], self.discriminator(fake)[:, 0]
        if self.config.loss == "non-saturating":
            return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if self.config.loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        mix = torch.rand(real.shape[0], 1, generator=generator)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(between).sum(), between, create_graph=True)
        penalty = (grad.norm(dim=1) - 1).pow(2).mean()
        return d_fake.mean() - d_real.mean() + self.config.gp_weight * penalty

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        for _ in range(self.config.d_steps):
            with torch.no_grad():
                fake = self.generator(torch.randn(batch.shape, generator=generator))
            d_loss = self._d_loss(batch, fake, generator)
            descend(self.d_optimizer, d_loss)
        d_fake = self.discriminator(self.generator(torch.randn(batch.shape, generator=generator)))[:, 0]
        g_loss = F.softplus(-d_fake).mean() if self.config.loss == "non-saturating" else -d_fake.mean()
        descend(self.g_optimizer, g_loss)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    @torch.no_grad()
    def generate(self, latents: np.ndarray) -> np.ndarray:
        """(M, 2) G(z) of latent points, for the manifold view."""
        return self.generator(as_points(latents)).double().numpy()

    @torch.no_grad()
    def discriminate(self, points: np.ndarray) -> np.ndarray:
        """(M,) the discriminator's raw output (a logit, or a critic's score)."""
        return self.discriminator(as_points(points))[:, 0].double().numpy()

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.generate(torch.randn((n, 2), generator=torch.Generator().manual_seed(seed)).numpy())
