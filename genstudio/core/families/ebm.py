"""Energy-based model trained by contrastive divergence with Langevin negatives and a replay
buffer (Du & Mordatch 2019, "Implicit Generation and Generalization in Energy-Based Models").

A convolutional network f maps an image x ∈ [−1, 1]^D to K numbers. The model is the Gibbs
density p(x) ∝ exp(−E(x)); it is never normalised, so it has no likelihood in bits/dim, only
energies: a higher energy means a less typical image.

  * Unconditional (K = 1): E(x) = −f(x).
  * Class-conditional (JEM, Grathwohl et al. 2020): f gives K logits, E(x, y) = −f(x)[y] and
    E(x) = −logsumexp_y f(x)[y]. Training maximises log p(x, y) = log p(x) + log p(y | x): the
    contrastive divergence below on E(x) plus the cross-entropy of the classifier softmax f.

Training step (Du & Mordatch):
    x− ← K steps of stochastic gradient Langevin dynamics (SGLD) on E, each chain started from
        the replay buffer (probability 1 − reinit_rate) or from uniform noise;
    L  = mean E(x+) − mean E(x−) + α (mean E(x+)² + mean E(x−)²);
    the new x− go into the buffer (first in, first out), so chains persist across steps.
The positives get a little Gaussian noise, which smooths the data distribution so the energy
needs no infinitely sharp wells at the 8-bit grid points.

The sampler is plain SGLD, x ← x − λ ∇E(x) + σ ξ with ξ ~ N(0, I) (`sgld`, written for any
energy callable so tests can run it on a Gaussian whose answer is known). With σ = √(2λ) it is
the unadjusted Langevin algorithm, whose samples follow exp(−E) up to an O(λ) bias. Image EBMs,
Du & Mordatch's included, take a large λ and a small σ: that is Langevin on the colder density
exp(−E/T) with T = σ² / (2λ), which converges in tens of steps instead of thousands.

Inpainting runs the same SGLD with the known pixels clamped at every step. Its chains start
from the smooth (harmonic) fill of the hole plus seeded uniform noise of ±0.3 (in [−1, 1]
units), not from uniform noise over the whole range: a chain of tens of steps from noise never
reached agreement with the hole's edges (Fashion-MNIST, 24 test images, 10-minute model; RMSE on
the hole: from noise 0.390, worse than mean-colour fill's 0.393 on random masks; from the
smooth start 0.253 centre, 0.214 random). The noise is what makes seeds give different
candidates; more of it (±0.6) made the fill worse (0.279).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from .base import (
    BatchShard,
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
from .layers import level_widths, pyramid_sizes, to_symmetric, to_unit

# energy_fn(x) → one energy per row of x, shape (B,).
EnergyFn = Callable[[Tensor], Tensor]
# Called with (step, total_steps, current x) after each SGLD step.
StepCallback = Callable[[int, int, Tensor], None]

_INPAINT_START_NOISE = 0.3  # half-width of the uniform noise on the smooth start, [−1, 1] units


# -- Langevin dynamics ----------------------------------------------------------------------------


def energy_gradient(energy_fn: EnergyFn, x: Tensor) -> Tensor:
    """∇_x E(x) for each row of x; works inside torch.no_grad() (sampling is called there)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)
    return grad


def _noise_rows(x: Tensor, generator: torch.Generator, shard: BatchShard | None) -> Tensor:
    """_randn_like(x), or under torchrun this process's rows of the global batch's draw."""
    if shard is None or shard.world_size == 1:
        return _randn_like(x, generator)
    return shard.draw(x.shape[0], lambda n: torch.randn((n, *x.shape[1:]), generator=generator,
                                                        device=generator.device)).to(x.device, x.dtype)


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Noise drawn on the generator's device (the CPU when sampling, so samples do not depend on
    the model's device), then moved next to x."""
    return torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def sgld(energy_fn: EnergyFn, x: Tensor, generator: torch.Generator, *, steps: int, step_size: float,
         noise: float, grad_clip: float = 0.0, bounds: tuple[float, float] | None = None,
         keep_mask: Tensor | None = None, callback: StepCallback | None = None,
         shard: BatchShard | None = None) -> Tensor:
    """`steps` updates x ← x − step_size·∇E(x) + noise·ξ, ξ ~ N(0, I) from `generator`.

    grad_clip > 0 clips each coordinate of ∇E first (image-EBM code commonly does: it stops a
    young, steep energy from throwing the chains out of range); bounds clamps x after each step
    to the data range. Where keep_mask is True the coordinates are held at their starting
    values exactly, so the chain samples the conditional of the free ones given the kept ones.
    Under torchrun, `shard` says which rows of the global batch's noise x gets.
    Returns the final x, detached."""
    keep = None if keep_mask is None else keep_mask.to(x.device, torch.bool).expand_as(x)
    known = x.detach().clone()
    x = known.clone()
    for step in range(steps):
        grad = energy_gradient(energy_fn, x)
        if grad_clip > 0:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = x - step_size * grad + noise * _noise_rows(x, generator, shard)
        if bounds is not None:
            x = x.clamp(*bounds)
        if keep is not None:
            x = torch.where(keep, known, x)
        if callback is not None:
            callback(step + 1, steps, x)
    return x


# -- the loss ---------------------------------------------------------------------------------------


def contrastive_divergence_loss(e_pos: Tensor, e_neg: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """(loss, regulariser): Du & Mordatch's contrastive divergence plus their energy regulariser,
    mean E(x+) − mean E(x−) + α (mean E(x+)² + mean E(x−)²).

    The first part's gradient is the maximum-likelihood gradient with the model expectation
    replaced by the negatives; it lowers the energy of data and raises that of samples. The
    regulariser keeps energies near 0, without which both can drift off together."""
    regulariser = alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    return e_pos.mean() - e_neg.mean() + regulariser, regulariser


# -- the replay buffer -------------------------------------------------------------------------------


class ReplayBuffer(nn.Module):
    """Past negatives, first in first out (a ring buffer, as in Du & Mordatch's code), as module
    buffers so that checkpoints carry them and a resumed run draws exactly the same chains.

    Stored in half precision: its spacing (≤ 0.001 on [−1, 1]) is far below the SGLD noise,
    and it halves the checkpoint (capacity·C·H·W·2 bytes: 12 MB for 2000 RGB images of 32 px)."""

    def __init__(self, capacity: int, shape: tuple[int, ...]):
        super().__init__()
        self.capacity = capacity
        self.register_buffer("images", torch.zeros((capacity, *shape), dtype=torch.float16))
        self.register_buffer("added", torch.zeros((), dtype=torch.long))  # images ever added

    @property
    def filled(self) -> int:
        return min(int(self.added), self.capacity)

    def starts(self, n: int, reinit_rate: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Chain starts for n negatives and which of them came from the buffer: each from a
        uniformly chosen stored image with probability 1 − reinit_rate, else from uniform noise
        on [−1, 1] (always, while the buffer is empty). The same random numbers are drawn
        whatever the fill, so the generator advances the same way every step."""
        device = self.images.device
        noise = torch.rand((n, *self.images.shape[1:]), generator=generator, device=generator.device) * 2 - 1
        coin = torch.rand(n, generator=generator, device=generator.device)
        slots = torch.randint(0, max(self.filled, 1), (n,), generator=generator, device=generator.device)
        noise, from_buffer = noise.to(device), (coin >= reinit_rate).to(device)
        if self.filled == 0:
            return noise, torch.zeros_like(from_buffer)
        stored = self.images[slots.to(device)].float()
        return torch.where(from_buffer.view(-1, 1, 1, 1), stored, noise), from_buffer

    @torch.no_grad()
    def add(self, images: Tensor) -> None:
        """Write images over the oldest entries (only the newest `capacity` when more come)."""
        if self.capacity == 0:
            return
        images = images[-self.capacity:]
        slots = (int(self.added) + torch.arange(images.shape[0], device=self.images.device)) % self.capacity
        self.images[slots] = images.to(self.images.dtype)
        self.added += images.shape[0]

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n stored images chosen uniformly (with replacement) from `generator`."""
        if self.filled == 0:
            raise ValueError("the replay buffer is empty (the model has not been trained); start from noise")
        slots = torch.randint(0, self.filled, (n,), generator=generator, device=generator.device)
        return self.images[slots.to(self.images.device)].float()


# -- the energy network ----------------------------------------------------------------------------------


class EnergyNet(nn.Module):
    """x ∈ [−1, 1] → K outputs f(x). SiLU (Swish) rather than ReLU: SGLD follows ∇_x E, and a
    smooth activation gives a smooth gradient field instead of a piecewise constant one.
    Convs halve the size down to ≤ 4 px; the small map is flattened rather than pooled, so the
    energy can depend on where things are."""

    def __init__(self, spec: ImageSpec, cfg: EBMConfig):
        super().__init__()
        sizes = pyramid_sizes(spec.size)
        widths = level_widths(len(sizes) - 1, cfg.width)
        norm = spectral_norm if cfg.spectral_norm else (lambda layer: layer)
        layers: list[nn.Module] = [norm(nn.Conv2d(spec.channels, cfg.width, 3, padding=1)), nn.SiLU()]
        for c_in, c_out in zip([cfg.width, *widths[:-1]], widths, strict=True):
            layers += [norm(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            norm(nn.Linear(widths[-1] * sizes[-1] ** 2, widths[-1])), nn.SiLU(),
            norm(nn.Linear(widths[-1], max(1, spec.num_classes))),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))  # (B, K)


# -- the family ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EBMConfig:
    width: int = 16               # conv channels at full resolution; doubles at each halving (cap 256)
    spectral_norm: bool = False   # spectrally normalise every layer (Du & Mordatch): smoother energy, slower to learn
    sgld_steps: int = 60          # Langevin steps that make each batch of negatives (the main cost of a step)
    step_size: float = 10.0       # SGLD step λ on −∇E(x), pixels in [−1, 1]
    noise: float = 0.005          # SGLD noise σ per step; √(2λ) is exact Langevin, less samples a colder exp(−E/T), T = σ²/2λ
    sgld_grad_clip: float = 0.03  # clip each pixel's ∇E per SGLD step (0: off); stops steep early energies scattering chains
    buffer_size: int = 2000       # replay buffer of past negatives; checkpointed (2 bytes a value: 12 MB at 32 px RGB)
    reinit_rate: float = 0.05     # chance that a chain restarts from uniform noise instead of the buffer
    alpha: float = 0.1            # weight of the regulariser α(E(x+)² + E(x−)²), keeps energies near 0
    data_noise: float = 0.005     # std of the Gaussian noise added to the positives
    lr: float = 1e-3              # Adam learning rate (β1 = 0: the negatives change every step)
    grad_clip: float = 0.1        # max gradient norm of the weights (0: off); EBM training diverges easily

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "sgld_steps")
        positive(self, "step_size")
        at_least(self, 0, "lr", "noise", "sgld_grad_clip", "alpha", "data_noise", "grad_clip")
        within(self, 0, 1, "reinit_rate")


@dataclass(frozen=True)
class EBMSampleOptions:
    start: Literal["auto", "noise", "buffer"] = "auto"  # "buffer": continue the training's persistent chains (replay buffer); "noise": fresh chains; "auto": buffer once trained
    steps: int = 200          # SGLD steps
    step_size: float = 0.0    # SGLD step λ; 0: the training value
    noise: float = -1.0       # SGLD noise σ per step; negative: the training value (0: pure gradient descent)

    def __post_init__(self) -> None:
        if self.start not in ("auto", "noise", "buffer"):
            raise ValueError(f"start must be auto, noise or buffer, not {self.start!r}")
        if self.steps < 1 or self.step_size < 0:
            raise ValueError("steps must be ≥ 1 and step_size ≥ 0")


class EBM(Family):
    """An energy network, its Adam optimizer and the replay buffer of persistent SGLD chains."""

    name = "ebm"
    title = "Energy-based model"
    summary = "Learns an energy, low on data; samples by Langevin dynamics; energies rank outliers."
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.LOG_PROB, Capability.INPAINT, Capability.CONDITIONAL}
    )
    log_prob_kind = LogProbKind.UNNORMALIZED
    why_no_latent = ("it only scores images (an energy per image) and finds samples by Langevin "
                     "dynamics in pixel space; there is no latent to decode.")
    inpaint_method = ("Langevin dynamics (SGLD) on the learned energy from a smooth fill of the hole with "
                      "seeded noise, the known pixels held fixed at every step, so the fill settles into "
                      "what fits around them.")
    Config = EBMConfig
    SampleOptions = EBMSampleOptions
    plotted_metrics = ("e_pos", "e_neg", "loss")
    TINY: ClassVar[dict[str, Any]] = {"width": 4, "sgld_steps": 5, "buffer_size": 64}
    width_knobs: ClassVar[tuple[str, ...]] = ("width",)

    def __init__(self, spec: ImageSpec, config: EBMConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.net = EnergyNet(spec, config).to(self.device)
        self.buffer = ReplayBuffer(config.buffer_size, spec.shape).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=(0.0, 0.999))

    def networks(self) -> dict[str, nn.Module]:
        return {"energy": self.net, "replay_buffer": self.buffer}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def step_state_modules(self) -> list[nn.Module]:
        return [self.net]  # the replay buffer is written after the optimizer step

    # -- the energy ---------------------------------------------------------------------------
    def energy(self, x_sym: Tensor, labels: Tensor | None = None) -> Tensor:
        """E(x) (labels None) or E(x, y) of images in [−1, 1], shape (B,)."""
        logits = self.net(x_sym)
        if labels is None:
            return -torch.logsumexp(logits, dim=1)  # K = 1: simply −f(x)
        return -logits.gather(1, labels.view(-1, 1)).squeeze(1)

    def _sgld(self, x: Tensor, generator: torch.Generator, labels: Tensor | None, *, steps: int,
              step_size: float, noise: float, keep_mask: Tensor | None = None,
              callback: StepCallback | None = None, shard: BatchShard | None = None) -> Tensor:
        return sgld(lambda v: self.energy(v, labels), x, generator, steps=steps, step_size=step_size,
                    noise=noise, grad_clip=self.config.sgld_grad_clip, bounds=(-1.0, 1.0),
                    keep_mask=keep_mask, callback=callback, shard=shard)

    # -- training -------------------------------------------------------------------------------
    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        cfg = self.config
        x_pos = to_symmetric(x.to(self.device))
        shard, n = self.batch_shard, x_pos.shape[0]
        x_pos = (x_pos + cfg.data_noise * _noise_rows(x_pos, generator, shard)).clamp(-1.0, 1.0)
        # Under torchrun every process draws the global batch's starts and keeps its rows, and
        # adds every process's negatives to its buffer, so the buffers stay identical.
        start, from_buffer = self.buffer.starts(n * shard.world_size, cfg.reinit_rate, generator)
        if shard.world_size > 1:
            rows = slice(shard.rank * n, (shard.rank + 1) * n)
            start, from_buffer = start[rows], from_buffer[rows]
        # Negatives from the model's marginal p(x); with labels the classifier term below
        # completes log p(x, y) (JEM).
        x_neg = self._sgld(start, generator, None, steps=cfg.sgld_steps, step_size=cfg.step_size,
                           noise=cfg.noise, shard=shard)
        logits = self.net(torch.cat([x_pos, x_neg]))          # (2B, K): one pass for both
        energies = -torch.logsumexp(logits, dim=1)
        e_pos, e_neg = energies.chunk(2)
        loss, regulariser = contrastive_divergence_loss(e_pos, e_neg, cfg.alpha)
        metrics: dict[str, float] = {}
        if self.spec.num_classes and labels is not None:
            logits_pos = logits[: x_pos.shape[0]]
            cross_entropy = F.cross_entropy(logits_pos, labels.to(self.device, torch.long))
            loss = loss + cross_entropy
            accuracy = (logits_pos.argmax(1) == labels.to(self.device)).float().mean()
            metrics |= {"cross_entropy": cross_entropy.item(), "accuracy": accuracy.item()}
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, self.optimizer)
        limit = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.net.parameters(), limit))
        self.optimizer_step(self.optimizer)
        # Written after the optimizer step, so that a step abandoned part-way (Pause, Stop) has
        # not touched the buffer (step_state_modules leaves it out; core/runtime/step_runtime.py).
        self.buffer.add(shard.gather(x_neg))
        return {
            "loss": loss.item(),
            "e_pos": e_pos.mean().item(),
            "e_neg": e_neg.mean().item(),
            "regulariser": regulariser.item(),
            "grad_norm": grad_norm,
            "from_buffer": from_buffer.float().mean().item(),
            **metrics,
        }

    # -- capabilities -------------------------------------------------------------------------
    def _resolved(self, options: EBMSampleOptions | None) -> EBMSampleOptions:
        options = options or self.SampleOptions()
        return EBMSampleOptions(options.start, options.steps, options.step_size or self.config.step_size,
                                self.config.noise if options.noise < 0 else options.noise)

    def sampling_defaults(self) -> EBMSampleOptions:
        return self._resolved(None)

    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """SGLD from images of the replay buffer or from uniform noise, chosen on the CPU from
        `seed`; conditional models follow E(x, y). progress gets the chain after each step.

        The buffer holds the persistent chains of training, each continued over many training
        steps (hundreds to thousands of SGLD steps), so it gives the most varied and cleanest
        samples; fresh chains from noise find fewer of the modes (in short training runs they
        show fewer colours and shapes than the buffer)."""
        options = self._resolved(options)
        labels = self._check_labels(labels, n)
        generator = torch.Generator().manual_seed(seed)
        if options.start == "buffer" or (options.start == "auto" and self.buffer.filled > 0):
            start = self.buffer.draw(n, generator)
        else:
            start = (torch.rand((n, *self.spec.shape), generator=generator) * 2 - 1).to(self.device)
        callback = None if progress is None else (lambda i, total, x: progress(i, total, to_unit(x).cpu()))
        x = self._sgld(start, generator, labels, steps=options.steps, step_size=options.step_size,
                       noise=options.noise, callback=callback)
        return to_unit(x).cpu()

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """−E(x) (or −E(x, y) given labels): log p(x) up to the unknown constant log Z, in nats.
        Not a likelihood and not comparable across models, but within one model it ranks
        images: the lower it is, the less typical the image (an outlier score)."""
        if labels is not None:
            labels = self._check_labels(labels, x.shape[0])
        return -self.energy(to_symmetric(x.to(self.device)), labels).cpu()

    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                options: EBMSampleOptions | None = None, progress: SampleProgress | None = None) -> Tensor:
        """SGLD from the smooth fill plus seeded noise in the pixels to fill (see the module
        docstring), the kept pixels clamped to x at every step (they are returned unchanged, bit
        for bit). progress gets the chain after each step."""
        options = self._resolved(options)
        labels = self._check_labels(labels, x.shape[0])
        keep = self._keep_mask(keep_mask, x)
        generator = torch.Generator().manual_seed(seed)
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * _INPAINT_START_NOISE
        x = x.cpu()
        guess = (to_symmetric(smooth_fill(x.float(), keep)) + noise).clamp(-1, 1)
        start = torch.where(keep, to_symmetric(x), guess.to(x.dtype)).to(self.device)
        filled = self._sgld(start, generator, labels, steps=options.steps,
                            step_size=options.step_size, noise=options.noise, keep_mask=keep,
                            callback=None if progress is None else
                            (lambda i, total, chain: progress(i, total, to_unit(chain).cpu())))
        return torch.where(keep, x, to_unit(filled).cpu())


FAMILY = EBM
