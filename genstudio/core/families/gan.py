"""Generative adversarial network: a DCGAN-style generator and discriminator trained as a
two-player game (Goodfellow et al. 2014; architecture after Radford et al. 2015, DCGAN).

Three losses, chosen in the config (s = a discriminator score, σ the logistic function):

    non-saturating (Goodfellow 2014)   L_D = softplus(−s_real) + softplus(s_fake)
                                       L_G = softplus(−s_fake)          (= −log σ(s_fake))
    least-squares (Mao et al. 2017)    L_D = ½(s_real − 1)² + ½ s_fake²  (a = 0, b = c = 1)
                                       L_G = ½(s_fake − 1)²
    wgan-gp (Gulrajani et al. 2017)    L_D = s_fake − s_real + λ (‖∇ D(x̂)‖₂ − 1)²,
                                             x̂ = ε x + (1 − ε) G(z), ε ~ U[0, 1] per image
                                       L_G = −s_fake

Each term is averaged over the batch. Any loss may add the R1 penalty γ/2·E‖∇ₓD(x)‖² on real
images (Mescheder et al. 2018). The discriminator may be spectrally normalised (Miyato
et al. 2018); sampling uses an exponential moving average of the generator's weights (Yazıcı
et al. 2019), which is steadier than the live generator. With classes, D is a projection
discriminator (Miyato & Koyama 2018): D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩, and the class
reaches G through class-conditional BatchNorm (de Vries et al. 2017; Miyato & Koyama 2018): every
BatchNorm in G normalises without its own scale and shift and takes γ(y), β(y) from the class, so
z alone sets the content within a class. (Runs saved before this option concatenate a class
embedding to z instead, the cGAN of Mirza & Osindero 2014; `conditioning = "concat"`.)

A GAN has no encoder, so `encode` and `inpaint` optimise z to fit the image (GAN inversion,
e.g. Creswell & Bharath 2018): Adam on z from several seeded random starts, keeping the best.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from .base import Capability, Family, ImageSpec, SampleProgress, at_least, within
from .layers import ExponentialMovingAverage, level_widths, pyramid_sizes, to_symmetric, to_unit

LOSSES = ("non-saturating", "least-squares", "wgan-gp")


@dataclass(frozen=True)
class GANConfig:
    latent_dim: int = 64           # size of z ~ N(0, I)
    base_channels: int = 32        # conv width at full resolution; doubles per level (cap 256)
    loss: Literal["non-saturating", "least-squares", "wgan-gp"] = "non-saturating"  # non-saturating (Goodfellow) | least-squares (LSGAN) | wgan-gp
    lr_generator: float = 2e-4     # Adam learning rate of G
    lr_discriminator: float = 2e-4 # Adam learning rate of D
    adam_betas: tuple[float, ...] = ()  # (): the loss's usual, (0.5, 0.999) or (0.0, 0.9) for wgan-gp
    n_critic: int = 0              # D updates per G update, each on the whole batch; 0: 1, or 5 for wgan-gp
    gp_weight: float = 10.0        # λ of the WGAN-GP gradient penalty (wgan-gp only)
    r1_weight: float = 0.0         # γ of the R1 penalty γ/2·‖∇ₓD(x)‖² on real images; 0: off
    spectral_norm: bool = True     # spectrally normalise every D layer (Lipschitz ≈ 1; steadier)
    ema_decay: float = 0.999       # EMA of G's weights, used for sampling; 0: the live G
    ema_warmup: bool = True        # decay ramps up as (1+t)/(10+t), so early samples are not the init
    inversion_steps: int = 200     # Adam steps on z per start when encoding or inpainting
    inversion_restarts: int = 4    # seeded random starts per image; the best fit is kept
    inversion_lr: float = 0.1      # Adam learning rate on z, cosine-decayed to 0 over the steps
    conditioning: Literal["batchnorm", "concat"] = "batchnorm"  # how the class reaches G: class-conditional BatchNorm | an embedding beside z
    projection: Literal["pooled", "flat"] = "pooled"  # D's class term sees φ(x) summed over positions | flattened with them

    # What the empty value of these knobs means; forms show it instead of () or 0.
    AUTOMATIC: ClassVar[dict[str, str]] = {"adam_betas": "the loss's usual", "n_critic": "the loss's usual"}
    # Class-conditional runs saved before `conditioning` existed concatenated the class to z.
    # and projected the class on D's flattened features.
    EARLIER_VALUES: ClassVar[dict[str, Any]] = {"conditioning": "concat", "projection": "flat"}
    CONDITIONAL_ONLY: ClassVar[tuple[str, ...]] = ("conditioning", "projection")  # forms hide these for other runs

    def __post_init__(self) -> None:
        at_least(self, 1, "latent_dim", "base_channels", "inversion_restarts")
        at_least(self, 0, "lr_generator", "lr_discriminator", "inversion_lr", "gp_weight", "r1_weight")
        within(self, 0, 1, "ema_decay")
        if self.conditioning not in ("batchnorm", "concat"):
            raise ValueError(f"conditioning must be 'batchnorm' or 'concat', not {self.conditioning!r}")
        if self.projection not in ("pooled", "flat"):
            raise ValueError(f"projection must be 'pooled' or 'flat', not {self.projection!r}")
        if len(self.adam_betas) not in (0, 2) or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be [] or two numbers in [0, 1), not {list(self.adam_betas)}")


# -- losses (pure functions of discriminator scores, so they can be checked by hand) --------


def discriminator_loss(loss: str, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The discriminator's loss without any gradient penalty (see the module docstring)."""
    if loss == "non-saturating":
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if loss == "least-squares":
        return 0.5 * (real_scores - 1).pow(2).mean() + 0.5 * fake_scores.pow(2).mean()
    if loss == "wgan-gp":
        return fake_scores.mean() - real_scores.mean()
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {', '.join(LOSSES)}")


def generator_loss(loss: str, fake_scores: Tensor) -> Tensor:
    if loss == "non-saturating":
        return F.softplus(-fake_scores).mean()
    if loss == "least-squares":
        return 0.5 * (fake_scores - 1).pow(2).mean()
    if loss == "wgan-gp":
        return -fake_scores.mean()
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {', '.join(LOSSES)}")


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     eps: Tensor) -> Tensor:
    """E[(‖∇ₓ D(x̂)‖₂ − 1)²] at x̂ = ε·real + (1 − ε)·fake, without λ (Gulrajani 2017).

    `eps` is (N, 1, 1, 1) in [0, 1]. The graph is kept (create_graph) so the penalty trains D."""
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(real_scores: Tensor, real: Tensor) -> Tensor:
    """E[‖∇ₓ D(x)‖²] over real images, without γ/2 (Mescheder et al. 2018). `real` must be the
    leaf the scores were computed from; the graph is kept so the penalty trains D."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


# -- networks ---------------------------------------------------------------------------------


class ClassBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are chosen by the class: γ(y)·x̂ + β(y), with x̂ normalised
    by statistics shared across classes. γ starts at 1 and β at 0, as a plain BatchNorm's."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return (self.norm(x) * self.scale(labels)[:, :, None, None]
                + self.shift(labels)[:, :, None, None])


def generator_norm(channels: int, num_classes: int | None) -> nn.Module:
    """G's BatchNorm: class-conditional when the class reaches G that way, else plain (whose
    parameter names older checkpoints carry)."""
    return ClassBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)


def normalise(norm: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    return norm(x, labels) if isinstance(norm, ClassBatchNorm2d) else norm(x)


class GeneratorBlock(nn.Module):
    """Upsample (nearest) to an exact size, 3×3 conv, BatchNorm, ReLU: DCGAN's layer with a
    resize-convolution instead of a transposed one, which avoids checkerboard artefacts
    (Odena et al. 2016) and reaches odd sizes such as 7 → 14 → 28 exactly."""

    def __init__(self, c_in: int, c_out: int, out_size: int, norm_classes: int | None):
        super().__init__()
        self.out_size = out_size
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)  # BN supplies the bias
        self.norm = generator_norm(c_out, norm_classes)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = F.interpolate(x, size=(self.out_size, self.out_size), mode="nearest")
        return F.relu(normalise(self.norm, self.conv(x), labels))


class Generator(nn.Module):
    """(z, y) → image in [−1, 1], from a small (C, 4, 4)-ish map up the image's size pyramid to
    a full-resolution feature map, then a 3×3 conv to the image channels and tanh (DCGAN)."""

    def __init__(self, spec: ImageSpec, cfg: GANConfig):
        super().__init__()
        sizes = pyramid_sizes(spec.size)                  # e.g. 28 → [28, 14, 7, 4]
        widths = level_widths(len(sizes) - 1, cfg.base_channels)
        self.start_shape = (widths[-1], sizes[-1], sizes[-1])
        concat = bool(spec.num_classes) and cfg.conditioning == "concat"
        norm_classes = spec.num_classes if cfg.conditioning == "batchnorm" else None
        self.class_embedding = nn.Embedding(spec.num_classes, cfg.latent_dim) if concat else None
        in_dim = cfg.latent_dim * (2 if concat else 1)
        self.project = nn.Linear(in_dim, math.prod(self.start_shape), bias=False)
        self.project_norm = generator_norm(widths[-1], norm_classes)
        # Up to sizes[level] with width widths[level − 1], the encoder's width there. The last
        # block works at full resolution: without it the image is a linear function of
        # half-resolution features, and edges come out blurred and striped.
        self.blocks = nn.ModuleList([
            GeneratorBlock(widths[level], widths[max(level - 1, 0)], sizes[level], norm_classes)
            for level in range(len(widths) - 1, -1, -1)
        ])
        self.to_image = nn.Conv2d(widths[0], spec.channels, 3, padding=1)

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.class_embedding is not None:
            z = torch.cat([z, self.class_embedding(labels)], dim=1)
        h = self.project(z).view(-1, *self.start_shape)   # (B, C, s, s)
        h = F.relu(normalise(self.project_norm, h, labels))
        for block in self.blocks:
            h = block(h, labels)                          # … up to (B, base, H, W)
        return torch.tanh(self.to_image(h))               # (B, channels, H, W)


class Discriminator(nn.Module):
    """(x, y) → one unbounded score per image: 3×3 convs with LeakyReLU(0.2) and no BatchNorm,
    since the WGAN-GP penalty is per image and batch statistics would couple the images."""

    def __init__(self, spec: ImageSpec, cfg: GANConfig):
        super().__init__()
        sizes = pyramid_sizes(spec.size)
        widths = level_widths(len(sizes) - 1, cfg.base_channels)
        norm = spectral_norm if cfg.spectral_norm else _unchanged
        # Per level a strided conv then a 3×3 conv at the new size, as in the spectrally
        # normalised "standard CNN" of Miyato 2018: with every layer 1-Lipschitz, depth is what
        # lets D separate real from fake. The first layer is already strided (DCGAN), so
        # nothing wide runs at full resolution.
        layers: list[nn.Module] = []
        for c_in, c_out in zip([spec.channels, *widths[:-1]], widths, strict=True):
            layers += [norm(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
                       norm(nn.Conv2d(c_out, c_out, 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        feature_dim = widths[-1] * sizes[-1] ** 2
        self.head = norm(nn.Linear(feature_dim, 1))
        # Pooled (Miyato & Koyama's global sum pooling), the class term does not depend on where
        # a feature lies: one template per class, not one per class and position.
        self.pooled = cfg.projection == "pooled"
        projected_dim = widths[-1] if self.pooled else feature_dim
        self.class_embedding = (norm(nn.Embedding(spec.num_classes, projected_dim))
                                if spec.num_classes else None)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        maps = self.features(x)                           # (B, C, s, s)
        score = self.head(maps.flatten(1)).squeeze(1)     # (B,)
        if self.class_embedding is not None:              # projection: + ⟨embed(y), φ(x)⟩
            phi = maps.sum(dim=(2, 3)) if self.pooled else maps.flatten(1)
            score = score + (self.class_embedding(labels) * phi).sum(dim=1)
        return score


def _unchanged(value: Any) -> Any:
    return value


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for `module` inside the block (gradients still flow through it)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


# -- the family -------------------------------------------------------------------------------

# Steps between refreshes of the averaged generator's BatchNorm statistics once its weights move
# slowly; a forward pass at every step costs a good share of the step (docs/families/gan.md).
EMA_STATISTICS_EVERY = 8
# Every step before this: early on the average moves fast and its statistics start at BN's defaults.
EMA_STATISTICS_EVERY_STEP_UNTIL = 64


def ema_statistics_due(update: int) -> bool:
    return update < EMA_STATISTICS_EVERY_STEP_UNTIL or update % EMA_STATISTICS_EVERY == 0


class GAN(Family):
    name = "gan"
    title = "GAN"
    summary = "Generator vs discriminator; sharp samples in one pass, latent found by inversion."
    inpaint_method = ("Latent optimisation: find the z whose generated image best matches the known pixels "
                      "(several restarts), then take the unknown pixels from G(z).")
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.DECODE, Capability.ENCODE, Capability.INPAINT,
         Capability.CONDITIONAL}
    )
    Config = GANConfig
    plotted_metrics = ("d_loss", "g_loss", "d_real", "d_fake")  # both players, and D on real vs fake
    TINY: ClassVar[dict[str, Any]] = {"base_channels": 4, "latent_dim": 8, "inversion_steps": 10,
                                      "inversion_restarts": 2}
    # No width_knobs: on 64 px emoji a GAN at half the width made 2.5× the steps in 10 CPU-minutes
    # and scored worse (docs/families/gan.md), so it keeps its defaults at every size.

    def __init__(self, spec: ImageSpec, config: GANConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.generator = Generator(spec, config).to(self.device)
        self.discriminator = Discriminator(spec, config).to(self.device)
        self.generator_ema = ExponentialMovingAverage(self.generator, config.ema_decay,
                                                      config.ema_warmup)
        betas = self.adam_betas
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(),
                                            lr=config.lr_generator, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(),
                                            lr=config.lr_discriminator, betas=betas)

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "generator_ema": self.generator_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.optimizer_g, "discriminator": self.optimizer_d}

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def adam_betas(self) -> tuple[float, float]:
        if self.config.adam_betas:
            return tuple(self.config.adam_betas)  # type: ignore[return-value]
        # DCGAN's β₁ = 0.5; Gulrajani 2017 train the WGAN-GP critic, n_critic times per G step,
        # with no momentum (β₁ = 0, β₂ = 0.9), since its target moves with every G step.
        return (0.0, 0.9) if self.config.loss == "wgan-gp" else (0.5, 0.999)

    @property
    def critic_steps(self) -> int:
        if self.config.n_critic:
            return self.config.n_critic
        return 5 if self.config.loss == "wgan-gp" else 1

    def train_mode(self) -> None:
        super().train_mode()
        self.generator_ema.eval()  # never trained: always samples with BN running statistics

    def num_parameters(self) -> int:
        """Parameters of G and D; the EMA copy of G adds no capacity."""
        return sum(p.numel() for m in (self.generator, self.discriminator) for p in m.parameters())

    # -- training ---------------------------------------------------------------------------
    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        """`critic_steps` D updates, then one G update. Every D update sees the whole batch x
        against a fresh fake batch (fresh z, and fresh ε for the penalty); the G update then
        re-scores the last fake batch with the updated D, as the DCGAN reference does, which
        saves a generator pass. Fakes carry the batch's own labels, so classes follow the data.
        Logged D figures are means over the D updates of this step."""
        if self.spec.num_classes and labels is None:
            raise ValueError("a class-conditional GAN needs the batch's labels")
        labels = labels.to(self.device) if self.spec.num_classes else None
        real = to_symmetric(x.to(self.device))
        logs: dict[str, list[float]] = {}
        for step in range(self.critic_steps):
            # Only the last fake batch trains G, so only it needs a graph through G.
            z = self._draw_z(real.shape[0], generator)
            with torch.set_grad_enabled(step == self.critic_steps - 1):
                fake = self.generator(z, labels)
            for key, value in self._discriminator_step(real, fake.detach(), labels, generator).items():
                logs.setdefault(key, []).append(value)
        with _frozen(self.discriminator):  # G's loss needs ∂/∂x through D, not D's weight grads
            g_loss = generator_loss(self.config.loss, self.discriminator(fake, labels))
        self.optimizer_g.zero_grad(set_to_none=True)
        self.backward(g_loss, self.optimizer_g)
        self.optimizer_step(self.optimizer_g)
        if ema_statistics_due(int(self.generator_ema.updates)):
            self.generator_ema.refresh_statistics(z, labels)
        self.generator_ema.update(self.generator)
        means = {key: sum(values) / len(values) for key, values in logs.items()}
        return {"d_loss": means.pop("d_loss"), "g_loss": g_loss.item(), **means}

    def _discriminator_step(self, real: Tensor, fake: Tensor, labels: Tensor | None,
                            generator: torch.Generator) -> dict[str, float]:
        n = real.shape[0]
        both_labels = None if labels is None else torch.cat([labels, labels])
        penalise_real = self.config.r1_weight > 0
        if penalise_real:
            real = real.detach().requires_grad_(True)
        # One forward pass over real and fake together: D has no batch statistics, so this is
        # the same as two passes, and both are scored with the same spectral-norm estimate.
        real_scores, fake_scores = self.discriminator(torch.cat([real, fake]), both_labels).split(n)
        d_loss = discriminator_loss(self.config.loss, real_scores, fake_scores)
        metrics: dict[str, float] = {}
        if penalise_real:
            penalty = r1_penalty(real_scores, real)
            d_loss = d_loss + 0.5 * self.config.r1_weight * penalty
            metrics["r1"] = penalty.item()
        if self.config.loss == "wgan-gp":
            eps = self._draw(generator, (n, 1, 1, 1), uniform=True)
            penalty = gradient_penalty(lambda v: self.discriminator(v, labels), real, fake, eps)
            d_loss = d_loss + self.config.gp_weight * penalty
            metrics["gp"] = penalty.item()
            metrics["w_distance"] = (real_scores.mean() - fake_scores.mean()).item()
        self.optimizer_d.zero_grad(set_to_none=True)
        self.backward(d_loss, self.optimizer_d)
        self.optimizer_step(self.optimizer_d)
        # Scores as probabilities for the NS loss (σ of the logit); the LSGAN score is trained
        # towards 1 / 0 already and the WGAN critic is unbounded, so those are shown raw.
        as_shown = torch.sigmoid if self.config.loss == "non-saturating" else _unchanged
        return {"d_loss": d_loss.item(), "d_real": as_shown(real_scores.detach()).mean().item(),
                "d_fake": as_shown(fake_scores.detach()).mean().item(), **metrics}

    def _draw_z(self, n: int, generator: torch.Generator) -> Tensor:
        return self._draw(generator, (n, self.latent_dim))

    def _draw(self, generator: torch.Generator, shape: tuple[int, ...], uniform: bool = False) -> Tensor:
        """Noise from the caller's generator on its own device, then moved to the model's."""
        draw = torch.rand if uniform else torch.randn
        # Rows of the global batch's draw (the whole draw in a single process).
        return self.batch_shard.draw(shape[0], lambda n: draw(
            (n, *shape[1:]), generator=generator, device=generator.device)).to(self.device)

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """EMA generator at z ~ N(0, I) drawn on the CPU from `seed` (same seed, same images on
        every device). One pass, so there is no progress to report."""
        z = torch.randn((n, self.latent_dim), generator=torch.Generator().manual_seed(seed))
        return self.decode(z, labels)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = self._check_labels(labels, z.shape[0])
        return to_unit(self.generator_ema(z.to(self.device), labels)).cpu()

    # -- inversion ----------------------------------------------------------------------------
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The latent whose image best matches x (see `invert`)."""
        z, _error = self.invert(x, labels)
        return z

    def invert(self, x: Tensor, labels: Tensor | None = None, steps: int | None = None,
               restarts: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Latents z (N, latent_dim) whose EMA-generated images best match x in [0, 1], and the
        per-image mean squared error of that fit in [0, 1] pixel units (N,), both on the CPU.
        steps / restarts default to the config's inversion settings."""
        keep_all = torch.ones(x.shape[0], 1, *x.shape[2:], dtype=torch.bool)
        return self._fit_latents(x, keep_all, labels, steps, restarts, seed)

    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                progress: SampleProgress | None = None) -> Tensor:
        """Fit z to the known pixels only, then fill the unknown ones from G(z); the known
        pixels are copied from x unchanged. keep_mask: True = known, broadcastable to x.
        progress counts the fit's steps over all restarts."""
        keep = self._keep_mask(keep_mask, x)
        z, _error = self._fit_latents(x, keep, labels, None, None, seed, progress)
        filled = self.decode(z, labels).to(x.dtype)
        return torch.where(keep, x.cpu(), filled)

    def _fit_latents(self, x: Tensor, keep: Tensor, labels: Tensor | None, steps: int | None,
                     restarts: int | None, seed: int,
                     progress: SampleProgress | None = None) -> tuple[Tensor, Tensor]:
        """Minimise the masked MSE between G(z) and x over z, from `restarts` starts drawn in
        order from `seed`, keeping per image the best z seen at any step of any start (so
        more restarts can only lower the error). Starts run one after another, so the first
        start is exactly the single-start run."""
        steps = self.config.inversion_steps if steps is None else steps
        restarts = self.config.inversion_restarts if restarts is None else restarts
        if steps < 0 or restarts < 1:
            raise ValueError("inversion needs steps >= 0 and restarts >= 1")
        if tuple(x.shape[1:]) != self.spec.shape:
            raise ValueError(f"images of shape {tuple(x.shape[1:])} given to a model of {self.spec.shape}")
        n = x.shape[0]
        labels = self._check_labels(labels, n)
        target = x.to(self.device, torch.float32)
        known = torch.broadcast_to(keep.to(self.device), x.shape).float()
        known_count = known.flatten(1).sum(1).clamp_min(1.0)
        # Gaussian z concentrates near ‖z‖ = √d; projecting onto a ball a little wider (√d + 3,
        # beyond 4 std of the χ distribution) keeps z where G was trained, without biasing
        # the fit inside it as a ‖z‖² penalty would.
        max_norm = math.sqrt(self.latent_dim) + 3.0
        starts = torch.Generator().manual_seed(seed)
        best_z = torch.zeros(n, self.latent_dim, device=self.device)
        best_error = torch.full((n,), math.inf, device=self.device)

        def errors(z: Tensor) -> Tensor:
            image = (self.generator_ema(z, labels) + 1) * 0.5  # [0, 1], unclamped for gradients
            return (known * (image - target).pow(2)).flatten(1).sum(1) / known_count  # (N,)

        def keep_better(z: Tensor, error: Tensor) -> None:
            better = error < best_error
            best_error.copy_(torch.where(better, error, best_error))
            best_z.copy_(torch.where(better[:, None], z, best_z))

        with torch.enable_grad():
            for restart in range(restarts):
                z = torch.randn((n, self.latent_dim), generator=starts).to(self.device)
                z.requires_grad_(True)
                optimizer = torch.optim.Adam([z], lr=self.config.inversion_lr)
                for step in range(steps):
                    error = errors(z)
                    keep_better(z.detach(), error.detach())
                    optimizer.zero_grad(set_to_none=True)
                    error.sum().backward()  # a sum: each image's gradient ignores the others
                    for group in optimizer.param_groups:
                        group["lr"] = self.config.inversion_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                    optimizer.step()
                    with torch.no_grad():
                        z.mul_((max_norm / z.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))
                    if progress is not None:
                        progress(restart * steps + step + 1, restarts * steps, None)
                with torch.no_grad():
                    keep_better(z, errors(z))
        return best_z.cpu(), best_error.cpu()


FAMILY = GAN
