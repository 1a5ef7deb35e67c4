"""Normalizing flow: the multi-scale architecture of RealNVP (Dinh et al. 2017) with the flow
steps of Glow (Kingma & Dhariwal 2018).

An image is dequantized, mapped to logit space, and pushed through L levels of
    squeeze (C, H, W → 4C, H/2, W/2) → K × [actnorm → invertible 1×1 conv → affine coupling]
    → split (all but the last level)
  * actnorm: a per-channel affine map whose bias and scale are set from the first training
    batch so that its output has zero mean and unit variance per channel (Glow §3.1);
  * invertible 1×1 conv: a learned channel mixing W = P L (U + diag(s)), LU-decomposed so
    that log|det W| = Σ log|s| costs nothing (Glow §3.2), started at a random rotation;
  * affine coupling: half the channels pass unchanged and predict a shift and a scale for the
    other half (RealNVP). The log-scale is soft-clamped, tanh(h), so no coupling can expand
    or contract by more than a factor e (stable in training, as Glow's sigmoid(h + 2), and in
    the inverse, which sampling runs); the networks' last layers start at zero, so every
    coupling starts as the identity;
  * split: half the channels are factored out (RealNVP) with Glow's learned conditional
    Gaussian prior N(μ(h), σ(h)²) given the kept half h. The last level's prior is a standard
    Gaussian, or for a class-conditional model a learned per-class Gaussian (zero-initialised).

The latent z (C·H·W numbers) is every factored-out half and the top level, each standardised by
its prior: ε = (z − μ) / σ. So z ~ N(0, I) under the model, sampling at temperature T decodes
T·N(0, I), and `encode` / `decode` are exact inverses.

Likelihood, in nats per image of the 8-bit data (the density on [0, 256)^D, see base.py):
    y = (k + u) / 256 ∈ [0, 1)                        dequantization, u ∈ [0, 1)^D
    v = logit(α + (1 − 2α) y)                        RealNVP's preprocessing (α = logit_alpha)
    log p(k + u) = log N(ε(v); 0, I) + log|det ∂ε/∂v| + log|det ∂v/∂y| − D log 256
Training draws u uniformly (uniform dequantization, Theis et al. 2016), so the expected log p is
a lower bound on the discrete log-likelihood. `log_prob` is deterministic: it averages
log p(k + u) over `eval_dequant_draws` fixed noise patterns u, drawn from
torch.Generator().manual_seed(seed) as torch.rand((draws, C, H, W)) and shared by every image,
so an image's figure does not depend on its batch. Variational dequantization (Flow++) is not
built. `encode` uses the bin centres u = ½.

Inpainting is a conditional mode search: the unknown pixels' logits v are moved by gradient
ascent on the flow's density of v, log N(ε(v); 0, I) + log|det ∂ε/∂v|, with the known pixels
clamped, starting from the smooth (harmonic) fill of the hole plus seeded N(0, 0.5²) noise on
its logits, so different seeds settle in different candidates. Two choices here were measured on
Fashion-MNIST (12 test images, centre hole; RMSE on the hole, mean-colour fill 0.374):
  * the density of v, not of the pixels y: log p(y) adds log|det ∂v/∂y| = Σ −log p(1 − p),
    which grows without bound towards black and white, and ascent on it filled holes with flat
    black (RMSE 0.389, worse than mean colour; 0.317 on v from the same start);
  * the smooth start, not a sample of the model: from a sample the ascent keeps the sample's
    unrelated shapes (0.317); from the smooth fill it sharpens a guess that already meets the
    hole's edge (0.191; the smooth fill alone 0.238). Start noise of std 2 instead of 1 made
    candidates five times as different from each other and the fill worse (0.224). On the
    built-in shapes a weak flow (603 steps; 10 held-out images) kept much of std 1's noise as
    speckle: random masks 0.210, worse than mean colour's 0.197; std 0.5 gave 0.170 (centre
    holes 0.261 → 0.212), so the start noise is 0.5.
(Langevin-style noise during the ascent, even decaying from a std of 0.3 in logit units, pushed
the fill off the data into regions where the flow's density and gradients explode.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    Capability,
    Family,
    ImageSpec,
    LogProbKind,
    SampleProgress,
    at_least,
    positive,
    smooth_fill,
    within,
)
from .layers import dequantize

_LOG_256 = math.log(256.0)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# Bound of each coupling's log-scale. The inverse of a coupling that contracts hard expands as
# hard, and sampling chains K such inverses: on 16 px shapes after 600 steps, Glow's
# sigmoid(h + 2) (no lower bound) overflowed 6 of 64 samples to NaN and a bound of 2 left
# about 1 in 6 as saturated noise; a bound of 1 gave clean samples at the same bits/dim.
_MAX_LOG_SCALE = 1.0
_INPAINT_LR = 0.1           # Adam's step on the unknown pixels' logits v
_INPAINT_START_NOISE = 0.5  # std of the seeded noise on the smooth fill's logits (see the module docstring)


@dataclass(frozen=True)
class FlowConfig:
    max_levels: int = 3          # squeeze/split levels at most; fewer when the side is not divisible by 2^levels (28 px: 2)
    steps_per_level: int = 8     # K flow steps (actnorm → 1×1 conv → coupling) per level
    hidden_channels: int = 64    # width of each coupling network
    logit_alpha: float = 0.05    # preprocessing v = logit(α + (1 − 2α) y); keeps the logit away from ±∞
    lr: float = 1e-3             # Adam learning rate (after warm-up)
    warmup_steps: int = 100      # linear learning-rate warm-up: early Glow steps are easily unstable
    grad_clip: float = 50.0      # max gradient norm of the bits/dim loss (0: off)
    eval_dequant_draws: int = 1  # fixed dequantization noise patterns log_prob averages over
    inpaint_steps: int = 300     # Adam steps on the unknown pixels when inpainting

    def __post_init__(self) -> None:
        at_least(self, 1, "max_levels", "steps_per_level", "hidden_channels", "eval_dequant_draws")
        positive(self, "logit_alpha")
        within(self, 0, 0.49, "logit_alpha")
        at_least(self, 0, "lr", "grad_clip")


@dataclass(frozen=True)
class FlowSampleOptions:
    temperature: float = 0.9     # std of the latent: 1 the model's own distribution, lower = cleaner, 0 = the latent's mode

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be ≥ 0")


def levels_for_size(size: int, max_levels: int) -> int:
    """The number of squeeze levels: as many as the side allows (each halves it), at most
    max_levels. 32 → 3 (32 → 16 → 8 → 4), 28 → 2 (28 → 14 → 7), 30 → 1."""
    if size % 2:
        raise ValueError(f"a normalizing flow needs an even image side (it squeezes 2×2 pixels into "
                         f"channels); {size} px is odd")
    if max_levels < 1:
        raise ValueError("max_levels must be at least 1")
    levels = 0
    while levels < max_levels and size % 2 ** (levels + 1) == 0:
        levels += 1
    return levels


# -- preprocessing: 8-bit pixels ↔ logit space --------------------------------------------------


def to_logit(y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """v = logit(α + (1 − 2α) y) and log|det ∂v/∂y| per image."""
    p = alpha + (1 - 2 * alpha) * y
    log_p, log_1mp = torch.log(p), torch.log1p(-p)
    log_det = (math.log(1 - 2 * alpha) - log_p - log_1mp).flatten(1).sum(1)
    return log_p - log_1mp, log_det


def from_logit(v: Tensor, alpha: float) -> Tensor:
    return (torch.sigmoid(v) - alpha) / (1 - 2 * alpha)


def to_pixels(y: Tensor) -> Tensor:
    """y ∈ [0, 1) → [0, 1] image with bin k's centre (k + ½)/256 at k/255, clamped."""
    return ((y * 256.0 - 0.5) / 255.0).clamp(0.0, 1.0)


def std_normal_log_density(eps: Tensor) -> Tensor:
    """log N(ε; 0, I) per row of a (B, D) tensor."""
    return -(0.5 * eps.pow(2) + _HALF_LOG_2PI).sum(1)


# -- layers: forward(x) → (y, log|det ∂y/∂x| per image), inverse(y) → x ----------------------------


def _zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3×3 conv that starts at zero, so the layer it feeds starts as the identity."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Squeeze(nn.Module):
    """Each 2×2 block of pixels becomes 4 channels: (B, C, H, W) → (B, 4C, H/2, W/2); a
    permutation, so its log-det is 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, H/2, W/2)
        return x.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        y = y.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)      # (B, C, H/2, 2, W/2, 2)
        return y.reshape(b, c4 // 4, 2 * h, 2 * w)


class ActNorm(nn.Module):
    """y = (x + b) · exp(s) per channel. b and s are set from the first batch it sees after
    `initialise_on_next_batch` is raised; `initialised` is a buffer so checkpoints keep it."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialised", torch.tensor(False))
        self.initialise_on_next_batch = False

    @torch.no_grad()
    def _initialise(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialised.fill_(True)
        self.initialise_on_next_batch = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.initialise_on_next_batch:
            self._initialise(x)
        log_det = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * torch.exp(self.log_scale), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(nn.Module):
    """A learned channel mixing W = P L (U + diag(sign · exp(log_s))) (Glow §3.2): P is a fixed
    permutation, L unit lower-triangular, U strictly upper-triangular, so log|det W| = Σ log_s.
    Starts at a random rotation (from the global RNG, which create_family seeds)."""

    def __init__(self, channels: int):
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels))
        permutation, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("strictly_lower", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        eye = torch.eye(self.log_s.numel(), device=self.log_s.device, dtype=self.log_s.dtype)
        lower = self.lower * self.strictly_lower + eye
        upper = self.upper * self.strictly_lower.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        log_det = x.shape[2] * x.shape[3] * self.log_s.sum()
        return F.conv2d(x, w[:, :, None, None]), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class AffineCoupling(nn.Module):
    """The first half of the channels, x_a, passes unchanged and sets a shift t and a
    log-scale s for the second: y_b = x_b · exp(s(x_a)) + t(x_a), s = tanh(h) ∈ (−1, 1)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.half, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            _zero_conv(hidden, 2 * (channels - self.half)),
        )

    def _shift_and_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_a)
        shift, raw_scale = h[:, 0::2], h[:, 1::2]
        return shift, _MAX_LOG_SCALE * torch.tanh(raw_scale / _MAX_LOG_SCALE)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, :self.half], x[:, self.half:]
        shift, log_scale = self._shift_and_log_scale(x_a)
        y_b = x_b * torch.exp(log_scale) + shift
        return torch.cat([x_a, y_b], dim=1), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[:, :self.half], y[:, self.half:]
        shift, log_scale = self._shift_and_log_scale(y_a)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], dim=1)


class FlowStep(nn.Module):
    """One Glow step: actnorm → invertible 1×1 conv → affine coupling."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvertibleConv1x1(channels),
                                     AffineCoupling(channels, hidden)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class SplitPrior(nn.Module):
    """Glow's prior for a factored-out half z: N(μ(h), σ(h)²) given the kept half h, from a
    zero-initialised conv (so it starts as N(0, I)). forward standardises z to ε = (z − μ)/σ,
    log-det −Σ log σ; inverse maps ε back."""

    def __init__(self, kept: int, factored: int):
        super().__init__()
        self.net = _zero_conv(kept, 2 * factored)

    def forward(self, h: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(h).chunk(2, dim=1)
        return (z - mean) * torch.exp(-log_std), -log_std.flatten(1).sum(1)

    def inverse(self, h: Tensor, eps: Tensor) -> Tensor:
        mean, log_std = self.net(h).chunk(2, dim=1)
        return eps * torch.exp(log_std) + mean


class FlowNet(nn.Module):
    """The bijection v (B, C, H, W) ↔ ε (B, C·H·W) and its log|det ∂ε/∂v|. ε lists each
    level's factored-out half (finest first), then the top level, each flattened."""

    def __init__(self, spec: ImageSpec, cfg: FlowConfig):
        super().__init__()
        levels = levels_for_size(spec.size, cfg.max_levels)
        self.squeeze = Squeeze()
        self.levels = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        self.factored_shapes: list[tuple[int, int, int]] = []
        channels, size = spec.channels, spec.size
        for level in range(levels):
            channels, size = channels * 4, size // 2
            self.levels.append(nn.ModuleList([FlowStep(channels, cfg.hidden_channels)
                                              for _ in range(cfg.steps_per_level)]))
            if level < levels - 1:
                self.split_priors.append(SplitPrior(channels // 2, channels - channels // 2))
                self.factored_shapes.append((channels - channels // 2, size, size))
                channels //= 2
        self.top_shape = (channels, size, size)
        top_dims = channels * size * size
        # Class-conditional models: a per-class Gaussian on the top level, starting at N(0, I).
        self.class_prior = nn.Embedding(spec.num_classes, 2 * top_dims) if spec.num_classes else None
        if self.class_prior is not None:
            nn.init.zeros_(self.class_prior.weight)
        # Optimisation steps taken, for the learning-rate warm-up (a buffer: resumes exactly).
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    def _top_prior(self, labels: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.class_prior is None:
            zeros = like.new_zeros(())
            return zeros, zeros
        if labels is None:
            raise ValueError("a class-conditional flow needs labels")
        mean, log_std = self.class_prior(labels).view(-1, 2 * self.top_shape[0], *self.top_shape[1:]).chunk(2, 1)
        return mean, log_std

    def forward(self, v: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, log_det = v, v.new_zeros(v.shape[0])
        latents = []
        for level, steps in enumerate(self.levels):
            h, _ = self.squeeze(h)
            for step in steps:
                h, step_log_det = step(h)
                log_det = log_det + step_log_det
            if level < len(self.split_priors):
                kept, factored = h.chunk(2, dim=1)
                eps, prior_log_det = self.split_priors[level](kept, factored)
                latents.append(eps.flatten(1))
                log_det, h = log_det + prior_log_det, kept
        mean, log_std = self._top_prior(labels, h)
        latents.append(((h - mean) * torch.exp(-log_std)).flatten(1))
        log_det = log_det - log_std.expand_as(h).flatten(1).sum(1)
        return torch.cat(latents, dim=1), log_det

    def inverse(self, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        sizes = [math.prod(s) for s in self.factored_shapes]
        pieces = eps.split([*sizes, eps.shape[1] - sum(sizes)], dim=1)
        top = pieces[-1].view(-1, *self.top_shape)
        mean, log_std = self._top_prior(labels, top)
        h = top * torch.exp(log_std) + mean
        for level in range(len(self.levels) - 1, -1, -1):
            if level < len(self.split_priors):
                factored = self.split_priors[level].inverse(h, pieces[level].view(-1, *self.factored_shapes[level]))
                h = torch.cat([h, factored], dim=1)
            for step in reversed(self.levels[level]):
                h = step.inverse(h)
            h = self.squeeze.inverse(h)
        return h

    def log_density(self, v: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(v) in logit space: log N(ε; 0, I) + log|det ∂ε/∂v|."""
        eps, log_det = self(v, labels)
        return std_normal_log_density(eps) + log_det

    @torch.no_grad()
    def initialise(self, v: Tensor, labels: Tensor | None = None) -> None:
        """Data-dependent actnorm initialisation from the batch v (Glow §3.1)."""
        for module in self.modules():
            if isinstance(module, ActNorm):
                module.initialise_on_next_batch = True
        self(v, labels)

    @property
    def initialised(self) -> bool:
        return all(bool(m.initialised) for m in self.modules() if isinstance(m, ActNorm))


# -- the family ----------------------------------------------------------------------------------


class Flow(Family):
    """Glow-style flow trained by maximum likelihood on uniformly dequantized pixels; exact
    log-likelihood, exact encoder and decoder, sampling at a temperature."""

    name = "flow"
    title = "Normalizing flow"
    summary = "Invertible network (Glow): exact likelihood, exact latents, one-pass sampling."
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.DECODE, Capability.ENCODE, Capability.LOG_PROB,
         Capability.INPAINT, Capability.CONDITIONAL}
    )
    log_prob_kind = LogProbKind.EXACT
    inpaint_method = ("Likelihood ascent: the unknown pixels start from a smooth fill of the hole with seeded "
                      "noise and climb the flow's exact density of their logits, the known pixels held fixed.")
    Config = FlowConfig
    SampleOptions = FlowSampleOptions
    plotted_metrics = ("bpd",)
    mixed_precision = False  # log-determinants and the logit transform need float32
    TINY: ClassVar[dict[str, Any]] = {"max_levels": 2, "steps_per_level": 2, "hidden_channels": 8,
                                      "inpaint_steps": 20}
    width_knobs: ClassVar[tuple[str, ...]] = ("hidden_channels",)

    def __init__(self, spec: ImageSpec, config: FlowConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        if not 0.0 < config.logit_alpha < 0.5:
            raise ValueError("logit_alpha must be in (0, 0.5)")
        if config.steps_per_level < 1 or config.hidden_channels < 1 or config.eval_dequant_draws < 1:
            raise ValueError("steps_per_level, hidden_channels and eval_dequant_draws must be ≥ 1")
        self.flow = FlowNet(spec, config).to(self.device)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=config.lr)

    def networks(self) -> dict[str, nn.Module]:
        return {"flow": self.flow}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    @property
    def latent_dim(self) -> int:
        return self.spec.dims

    # -- the mathematics ------------------------------------------------------------------------
    def log_prob_of_dequantized(self, y: Tensor, labels: Tensor | None) -> Tensor:
        """log p(256·y) in nats per image for y ∈ [0, 1)^D: the density on [0, 256)^D."""
        v, preprocessing_log_det = to_logit(y, self.config.logit_alpha)
        return self.flow.log_density(v, labels) + preprocessing_log_det - self.spec.dims * _LOG_256

    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        x = x.to(self.device)
        if self.spec.num_classes and labels is None:
            raise ValueError("a class-conditional model needs labels to train")
        labels = labels.to(self.device, torch.long) if self.spec.num_classes else None
        noise = self.batch_shard.draw(x.shape[0], lambda n: torch.rand(
            (n, *x.shape[1:]), generator=generator, device=generator.device)).to(self.device)
        y = dequantize(x, noise)
        if not self.flow.initialised:
            # From the global batch under torchrun, so every process starts from the same actnorm.
            shard = self.batch_shard
            self.flow.initialise(to_logit(shard.gather(y), self.config.logit_alpha)[0],
                                 None if labels is None else shard.gather(labels))
        bpd = -self.log_prob_of_dequantized(y, labels).mean() / (self.spec.dims * math.log(2.0))
        step = int(self.flow.steps_taken)
        for group in self.optimizer.param_groups:
            group["lr"] = (self.config.lr * self.lr_scale
                           * min(1.0, (step + 1) / max(1, self.config.warmup_steps)))
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(bpd, self.optimizer)
        limit = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.flow.parameters(), limit))
        self.optimizer_step(self.optimizer)
        self.flow.steps_taken += 1
        return {"bpd": bpd.item(), "grad_norm": grad_norm}

    # -- capabilities ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """decode(T·ε), ε ~ N(0, I) drawn on the CPU from `seed`; T = 0 gives the image of the
        latent's mode. One pass, so there is no progress to report."""
        options = options or FlowSampleOptions()
        eps = torch.randn((n, self.latent_dim), generator=torch.Generator().manual_seed(seed))
        return self.decode(eps * options.temperature, labels)

    @torch.no_grad()
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """ε of the bin centres (k + ½)/256 of x = k/255; decode returns x exactly."""
        labels = self._check_labels(labels, x.shape[0])
        y = dequantize(x.to(self.device, torch.float32), torch.tensor(0.5, device=self.device))
        eps, _ = self.flow(to_logit(y, self.config.logit_alpha)[0], labels)
        return eps.cpu()

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be (N, {self.latent_dim}), not {tuple(z.shape)}")
        labels = self._check_labels(labels, z.shape[0])
        v = self.flow.inverse(z.to(self.device, torch.float32), labels)
        # A latent far outside the training distribution can overflow the inverse couplings.
        y = torch.nan_to_num(from_logit(v, self.config.logit_alpha), nan=0.5)
        return to_pixels(y).cpu()

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None, *, seed: int = 0,
                 draws: int | None = None) -> Tensor:
        """Exact log p(x + u) in nats per image, averaged over `draws` fixed noise patterns u
        (default eval_dequant_draws) drawn from `seed` (see the module docstring)."""
        draws = draws or self.config.eval_dequant_draws
        labels = self._check_labels(labels, x.shape[0])
        x = x.to(self.device, torch.float32)
        patterns = torch.rand((draws, *self.spec.shape), generator=torch.Generator().manual_seed(seed))
        total = torch.zeros(x.shape[0], device=self.device)
        for noise in patterns.to(self.device):
            total += self.log_prob_of_dequantized(dequantize(x, noise), labels)
        return (total / draws).cpu()

    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                progress: SampleProgress | None = None) -> Tensor:
        """Fill the pixels where keep_mask is False by ascending the flow's density of their
        logits from a seeded, noisy smooth fill (see the module docstring); the kept pixels are
        returned unchanged, bit for bit. progress counts the ascent's steps."""
        keep = self._keep_mask(keep_mask, x)
        labels = self._check_labels(labels, x.shape[0])
        filled = self._ascend_log_density(x.to(self.device, torch.float32), keep.to(self.device), labels, seed,
                                          progress)
        return torch.where(keep, x.cpu(), filled.cpu().to(x.dtype))

    def _ascend_log_density(self, x: Tensor, keep: Tensor, labels: Tensor | None, seed: int,
                            progress: SampleProgress | None = None) -> Tensor:
        """Adam (cosine-decayed step) on the unknown logits v to maximise the flow's log density
        of v, from logit(smooth fill) + N(0, _INPAINT_START_NOISE²) drawn on the CPU from
        `seed`. Returns the image in [0, 1]."""
        steps = self.config.inpaint_steps
        alpha = self.config.logit_alpha
        centre = torch.tensor(0.5, device=x.device)
        known_v = to_logit(dequantize(x, centre), alpha)[0]
        start_v = to_logit(dequantize(smooth_fill(x, keep), centre), alpha)[0]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
        free = (start_v + _INPAINT_START_NOISE * noise).requires_grad_(True)
        # β2 = 0.99 (not 0.999): the gradients shrink as the fill settles, and a long memory of
        # the early large ones would stall the last steps.
        optimizer = torch.optim.Adam([free], lr=_INPAINT_LR, betas=(0.9, 0.99))
        # The best iterate of each image is kept: a weakly trained flow can overflow to a
        # non-finite density mid-ascent, and that image then resumes from its best point (which
        # the result is) instead of ending as NaN — once filled as flat grey.
        best = free.detach().clone()
        best_density = torch.full((x.shape[0],), -math.inf, device=x.device)
        with torch.enable_grad():
            for step in range(steps + 1):  # the last pass only scores the final iterate
                v = torch.where(keep, known_v, free)
                density = self.flow.log_density(v, labels)  # (N,)
                finite = torch.isfinite(density)
                with torch.no_grad():
                    better = finite & (density > best_density)
                    best[better] = free.detach()[better]
                    best_density = torch.where(better, density.detach(), best_density)
                    free[~finite] = best[~finite]
                if step == steps:
                    break
                # Cosine decay, so the last steps settle on the optimum instead of circling it.
                optimizer.param_groups[0]["lr"] = _INPAINT_LR * 0.5 * (1 + math.cos(math.pi * step / steps))
                objective = torch.where(finite, density, torch.zeros_like(density)).sum() / self.spec.dims
                # The gradient for the pixels only: the network's own .grad stays untouched.
                free.grad = torch.nan_to_num(torch.autograd.grad(-objective, free)[0], nan=0.0, posinf=0.0,
                                             neginf=0.0)
                optimizer.step()
                if progress is not None:
                    progress(step + 1, steps, None)
        v = torch.where(keep, known_v, best)
        return to_pixels(torch.nan_to_num(from_logit(v, alpha), nan=0.5))


FAMILY = Flow
