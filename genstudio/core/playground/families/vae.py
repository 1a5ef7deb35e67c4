"""A VAE in the plane: a 2-D latent z ~ N(0, I), a Gaussian decoder p(x | z) = N(μ(z), σ(z)²I)
and a Gaussian encoder q(z | x), trained on the ELBO with the reparameterisation trick. Its
density is the importance-weighted estimate log (1/K) Σ p(x, z_k)/q(z_k | x) (Burda et al.
2016), a lower bound in expectation that tightens with K. The KL term's weight rises from 0 to 1
over the first `kl_warmup` steps: at full weight from the start, the decoder's variance learned
to explain one coordinate as noise and the latent collapsed to the other (docs/playground.md).
Its views: the data mapped to the latent plane with the posteriors' ellipses, and the decoder's
image of a latent grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...families.base import at_least
from .base import PlaneFamily, as_points, descend, mlp

MIN_LOG_STD = -5.0


@dataclass(frozen=True)
class PlaneVAEConfig:
    width: int = 128      # hidden units per layer, encoder and decoder
    depth: int = 2        # hidden layers of each
    lr: float = 2e-3      # Adam learning rate
    batch: int = 256      # points per step
    importance: int = 64  # samples K of the importance-weighted density
    kl_warmup: int = 5000  # steps of the KL's weight rising 0 → 1 (Sønderby et al. 2016); 0: none

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "depth", "batch", "importance")
        at_least(self, 0, "lr", "kl_warmup")


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """(…) log N(x; mean, diag(exp(log_std))²) summed over the last dimension."""
    return (-0.5 * ((x - mean) * torch.exp(-log_std)).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class PlaneVAE(PlaneFamily):
    name = "vae"
    title = "VAE"
    latent = "2-D z, with an encoder"
    Config = PlaneVAEConfig

    def __init__(self, config: PlaneVAEConfig, seed: int = 0):
        super().__init__(config, seed)
        self.encoder = mlp(2, 4, config.width, config.depth)   # → (μ, log σ) of q(z | x)
        self.decoder = mlp(2, 4, config.width, config.depth)   # → (μ, log σ) of p(x | z)
        self.optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr)
        self.steps = 0

    @property
    def density_kind(self) -> str:
        return f"importance-weighted, K = {self.config.importance}"

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.encoder(x).chunk(2, -1)
        return mean, log_std.clamp_min(MIN_LOG_STD)

    def likelihood(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.decoder(z).chunk(2, -1)
        return mean, log_std.clamp_min(MIN_LOG_STD)

    def train_step(self, batch: Tensor, generator: torch.Generator) -> dict[str, float]:
        mean, log_std = self.posterior(batch)
        z = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=generator)
        reconstruction = gaussian_log_prob(batch, *self.likelihood(z))
        kl = 0.5 * (mean.pow(2) + torch.exp(2 * log_std) - 1 - 2 * log_std).sum(1)
        weight = min(1.0, (self.steps + 1) / self.config.kl_warmup) if self.config.kl_warmup else 1.0
        loss = (weight * kl - reconstruction).mean()
        descend(self.optimizer, loss)
        self.steps += 1
        return {"loss": loss.item(), "kl": kl.mean().item(), "kl_weight": weight}

    @torch.no_grad()
    def decode_mean(self, latents: np.ndarray) -> np.ndarray:
        """(M, 2) μ(z), the decoder's image of latent points."""
        return self.likelihood(as_points(latents))[0].double().numpy()

    @torch.no_grad()
    def encode(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((M, 2) posterior means, (M, 2) posterior standard deviations)."""
        mean, log_std = self.posterior(as_points(points))
        return mean.double().numpy(), torch.exp(log_std).double().numpy()

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        mean, log_std = self.likelihood(torch.randn((n, 2), generator=g))
        return (mean + torch.exp(log_std) * torch.randn(mean.shape, generator=g)).double().numpy()

    @torch.no_grad()
    def log_density(self, points: np.ndarray, seed: int = 0) -> np.ndarray:
        x, k = as_points(points), self.config.importance
        g = torch.Generator().manual_seed(seed)
        mean, log_std = self.posterior(x)
        z = mean + torch.exp(log_std) * torch.randn((k, *mean.shape), generator=g)       # (K, M, 2)
        log_weights = (gaussian_log_prob(x, *self.likelihood(z)) + gaussian_log_prob(z, torch.zeros(()), torch.zeros(()))
                       - gaussian_log_prob(z, mean, log_std))                                 # (K, M)
        return (torch.logsumexp(log_weights, 0) - math.log(k)).double().numpy()
