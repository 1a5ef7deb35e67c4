"""Flow matching on the straight path from noise to data (Lipman et al. 2023; Liu et al. 2023,
rectified flow): the processes, as functions of any velocity field.

With x₀ ~ N(0, I) (noise) and x₁ a data point, the path is x_t = (1 − t)·x₀ + t·x₁ for t ∈ [0, 1],
whose velocity is x₁ − x₀. A network v(x, t) regressed on that target (the conditional flow
matching loss E‖v(x_t, t) − (x₁ − x₀)‖²) learns its conditional mean E[x₁ − x₀ | x_t], the
marginal velocity field, whose ODE dx/dt = v(x, t) carries N(0, I) at t = 0 to the data at t = 1.
So:
  * sampling integrates the ODE forward from noise (`integrate`, Euler, midpoint or Heun);
  * encoding integrates it backward from an image, and decoding forward again: an exact
    latent up to the solver's error;
  * the likelihood follows from the instantaneous change of variables (Chen et al. 2018),
    d log p_t(x_t)/dt = −div v(x_t, t), integrated backward beside x (`log_likelihood`), the
    divergence exactly (one backward pass per dimension) or by Hutchinson's estimator.

Every process function takes the field as `velocity(x, t)` with t a (B,) float tensor, so the
tests can plug in the closed-form optimal field for Gaussian data in place of a network.
`FlowMatching`, the family, owns the network (the UNet shared with diffusion, families/unet.py),
its EMA and optimizer; images live in [−1, 1] inside the processes ([0, 1] across the contract).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .base import Capability, Family, ImageSpec, LogProbKind, SampleProgress, at_least, within
from .layers import ExponentialMovingAverage, dequantize, to_symmetric, to_unit
from .unet import UNet, drop_labels, guided

# velocity(x_t, t) → dx/dt, the shape of x_t; t is a (B,) float tensor in [0, 1].
VelocityFn = Callable[[Tensor, Tensor], Tensor]
# Called after each solver step with (steps done, steps in all, the current x).
StepCallback = Callable[[int, int, Tensor], None]

SOLVERS = ("euler", "midpoint", "heun")
TIME_SAMPLINGS = ("logit-normal", "uniform")


# -- training: the path, its target and the pairs -------------------------------------------


def path_point(noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 − t)·x₀ + t·x₁, t of shape (B,)."""
    t = t.view(-1, *([1] * (data.dim() - 1)))
    return (1 - t) * noise + t * data


def target_velocity(noise: Tensor, data: Tensor) -> Tensor:
    """d x_t / dt along the straight path: x₁ − x₀, the same at every t."""
    return data - noise


def sample_times(n: int, kind: str, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """n training times in (0, 1): uniform, or logit-normal σ(N(0, 1)) (Esser et al. 2024),
    which spends the training on the middle of the path, where the target is least certain."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if kind == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))
    raise ValueError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, not {kind!r}")


def flow_matching_loss(velocity: VelocityFn, noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """The conditional flow matching loss: mean over the batch of ‖v(x_t, t) − (x₁ − x₀)‖²
    summed over each image's dimensions and divided by their number (a per-pixel MSE)."""
    error = velocity(path_point(noise, data, t), t) - target_velocity(noise, data)
    return error.pow(2).mean()


def optimal_assignment(cost: np.ndarray) -> np.ndarray:
    """The permutation p minimising Σᵢ cost[i, p[i]] over an (n, n) cost matrix, exactly:
    the Hungarian method with potentials (Kuhn 1955; Jonker & Volgenant's O(n³) form)."""
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"the cost matrix must be square, not {cost.shape}")
    u, v = np.zeros(n + 1), np.zeros(n + 1)          # potentials of rows and columns
    match = np.zeros(n + 1, dtype=np.int64)          # match[column] = row (1-based; 0: free)
    way = np.zeros(n + 1, dtype=np.int64)
    for row in range(1, n + 1):
        match[0], column = row, 0
        reach = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while match[column]:                         # grow an alternating tree until a free column
            used[column] = True
            r = match[column]
            free = ~used[1:]
            reduced = cost[r - 1] - u[r] - v[1:]
            better = free & (reduced < reach[1:])
            reach[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.where(free, reach[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[match[used]] += delta
            v[used] -= delta
            reach[1:][free] -= delta
            column = nxt
        while column:                                # flip the path back to the root
            previous = way[column]
            match[column] = match[previous]
            column = previous
    assignment = np.zeros(n, dtype=np.int64)
    assignment[match[1:] - 1] = np.arange(n)
    return assignment


def pair_by_transport(noise: Tensor, data: Tensor) -> Tensor:
    """The noise reordered so that pairing noise[i] with data[i] minimises the summed squared
    distance over the batch (minibatch optimal transport; Tong et al. 2024, Pooladian et al.
    2023): straighter paths, which a solver then follows in fewer steps."""
    cost = torch.cdist(data.flatten(1).double(), noise.flatten(1).double()).pow(2)
    return noise[torch.from_numpy(optimal_assignment(cost.cpu().numpy())).to(noise.device)]


# -- the ODE -----------------------------------------------------------------------------------


def integrate(velocity: VelocityFn, x: Tensor, t_from: float, t_to: float, steps: int,
              solver: Literal["euler", "midpoint", "heun"] = "heun", *,
              on_step: StepCallback | None = None) -> Tensor:
    """x at t_to, from x at t_from, along dx/dt = velocity(x, t) in `steps` equal steps
    (backward when t_to < t_from). Network evaluations: steps × (1 Euler, 2 midpoint or Heun)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    return integrate_over(velocity, x, uniform_times(t_from, t_to, steps), solver, on_step=on_step)


def uniform_times(t_from: float, t_to: float, steps: int) -> list[float]:
    """steps + 1 equally spaced times from t_from to t_to."""
    return [t_from + (t_to - t_from) * i / steps for i in range(steps + 1)]


def integrate_over(velocity: VelocityFn, x: Tensor, times: Sequence[float],
                   solver: Literal["euler", "midpoint", "heun"] = "heun", *,
                   on_step: StepCallback | None = None) -> Tensor:
    """x at times[-1], from x at times[0], one solver step between each pair of neighbouring
    times (so a grid may be finer where the field changes fast)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    if len(times) < 2:
        raise ValueError(f"a time grid needs at least two times, not {len(times)}")

    def field(state: Tensor, t: float) -> Tensor:
        return velocity(state, torch.full((state.shape[0],), t, dtype=state.dtype, device=state.device))

    steps = len(times) - 1
    for i, (t, t_next) in enumerate(itertools.pairwise(times)):
        h = t_next - t
        if solver == "euler":
            x = x + h * field(x, t)
        elif solver == "midpoint":
            x = x + h * field(x + 0.5 * h * field(x, t), t + 0.5 * h)
        else:  # Heun: the trapezoid of the slopes at both ends of an Euler step
            slope = field(x, t)
            x = x + 0.5 * h * (slope + field(x + h * slope, t_next))
        if on_step is not None:
            on_step(i + 1, steps, x)
    return x


# -- the likelihood ------------------------------------------------------------------------------


def exact_divergence(velocity: VelocityFn, x: Tensor, t: Tensor) -> Tensor:
    """div v(x, t) = Σ_d ∂v_d/∂x_d per sample, by one backward pass per dimension (small images)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t).flatten(1)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(v.shape[1]):
            (grad,) = torch.autograd.grad(v[:, d].sum(), x, retain_graph=d + 1 < v.shape[1])
            total = total + grad.flatten(1)[:, d]
    return total


def hutchinson_divergence(velocity: VelocityFn, x: Tensor, t: Tensor, probes: int,
                          generator: torch.Generator) -> Tensor:
    """(B, probes) unbiased estimates εᵀ (∂v/∂x) ε of div v with Rademacher ε (Hutchinson 1989;
    FFJORD, Grathwohl et al. 2019): one vector-Jacobian product per probe."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        estimates = []
        for k in range(probes):
            eps = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
            (vjp,) = torch.autograd.grad(v, x, grad_outputs=eps, retain_graph=k + 1 < probes)
            estimates.append((vjp * eps).flatten(1).sum(1))
    return torch.stack(estimates, dim=1)


def standard_normal_log_density(x: Tensor) -> Tensor:
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def log_likelihood(velocity: VelocityFn, data: Tensor, times: Sequence[float],
                   divergence: Callable[[Tensor, Tensor], Tensor], columns: int = 1,
                   solver: Literal["euler", "midpoint", "heun"] = "heun") -> tuple[Tensor, Tensor]:
    """((B, columns) log p_t(x) in nats at t = times[0], x₀): the ODE integrated backward from
    `data` at times[0] to times[-1] = 0 beside ∫ div v(x_t, t) dt, then
    log p_t(x) = log N(x₀; 0, I) − ∫₀ᵗ div v dt.

    `divergence(x, t)` → (B, columns): one column for exact_divergence; for Hutchinson's
    estimator one per probe, each integrated on its own along the one path, so that their mean
    is the estimate and their spread gives its standard error."""
    if times[-1] != 0.0:
        raise ValueError(f"the likelihood's ODE must end at t = 0 (noise), not {times[-1]}")
    batch, dims = data.shape[0], data[0].numel()

    def augmented(state: Tensor, t: Tensor) -> Tensor:
        x = state[:, :dims].view_as(data)
        return torch.cat([velocity(x, t).flatten(1), divergence(x, t)], dim=1)

    start = torch.cat([data.flatten(1), data.new_zeros(batch, columns)], dim=1)
    end = integrate_over(augmented, start, times, solver)
    noise = end[:, :dims].view_as(data)
    # Integrated from t to 0, the last columns hold ∫ₜ⁰ div dt = −∫₀ᵗ div dt.
    return standard_normal_log_density(noise)[:, None] + end[:, dims:], noise


# -- the family ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowMatchingConfig:
    base_channels: int = 32           # UNet width at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per level; the last repeats
    blocks_per_level: int = 1         # residual blocks per UNet level
    attention: bool = True            # self-attention at the 4–7 px bottleneck
    dropout: float = 0.0              # in residual blocks
    time_sampling: Literal["logit-normal", "uniform"] = "logit-normal"  # training times: σ(N(0, 1)) (Esser et al. 2024) | uniform
    transport_pairing: bool = False   # pair noise and images by minibatch optimal transport (straighter paths)
    lr: float = 1e-3                  # Adam learning rate (after warm-up)
    warmup_steps: int = 200           # linear learning-rate warm-up
    grad_clip: float = 1.0            # max gradient norm
    ema_decay: float = 0.999          # EMA of the weights used for sampling
    p_uncond: float = 0.1             # label dropout for classifier-free guidance (conditional models)
    likelihood_steps: int = 20        # Heun steps of the likelihood's backward ODE
    likelihood_probes: int = 4        # Hutchinson probes of the divergence (images of more than 64 numbers)

    CONDITIONAL_ONLY: ClassVar[tuple[str, ...]] = ("p_uncond",)  # forms hide these for other runs

    def __post_init__(self) -> None:
        at_least(self, 1, "base_channels", "blocks_per_level", "likelihood_steps", "likelihood_probes")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be a list of whole numbers ≥ 1, not {list(self.channel_mults)}")
        at_least(self, 0, "lr", "grad_clip", "warmup_steps")
        within(self, 0, 1, "ema_decay", "p_uncond", "dropout")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)}, not {self.time_sampling!r}")


@dataclass(frozen=True)
class FlowMatchingSampleOptions:
    # Euler: Heun's last slope is taken at t = 1, where a field of data with a discrete support is
    # singular; on the shipped model Heun's samples were far worse (docs/families/flow-matching.md).
    solver: Literal["euler", "midpoint", "heun"] = "euler"  # ODE solver: Euler (1 network pass a step), midpoint or Heun (2)
    steps: int = 20           # solver steps from noise to image
    guidance: float = 2.0     # classifier-free guidance: 1 plain conditional, 0 unconditional (conditional models only)

    CONDITIONAL_ONLY: ClassVar[tuple[str, ...]] = ("guidance",)

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}")
        if self.steps < 1 or self.guidance < 0:
            raise ValueError("steps must be ≥ 1 and guidance ≥ 0")


@dataclass(frozen=True)
class InpaintOptions:
    steps: int = 50           # solver steps from noise to image
    resamples: int = 2        # extra passes over each step, re-noised back to its start (RePaint's resampling)
    solver: Literal["euler", "midpoint", "heun"] = "heun"  # ODE solver of each step
    guidance: float = 2.0     # classifier-free guidance scale for conditional models

    def __post_init__(self) -> None:
        if self.steps < 1 or self.resamples < 0 or self.guidance < 0:
            raise ValueError("steps must be ≥ 1, resamples ≥ 0 and guidance ≥ 0")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}")


def renoise(x_later: Tensor, t_later: float, t: float, generator: torch.Generator) -> Tensor:
    """A draw of x_t given x_s (s = t_later > t) under the straight path: with x_s = (1 − s)·x₀ +
    s·x₁, the point (t/s)·x_s plus fresh noise of std √((1 − t)² − (t(1 − s)/s)²) has exactly the
    path's x_t distribution for the same x₁ (the path's own forward kernel)."""
    ratio = t / t_later
    std = math.sqrt(max((1 - t) ** 2 - (ratio * (1 - t_later)) ** 2, 0.0))
    fresh = torch.randn(x_later.shape, generator=generator).to(x_later.device, x_later.dtype)
    return ratio * x_later + std * fresh


def inpaint_along_path(velocity: VelocityFn, known: Tensor, keep: Tensor, generator: torch.Generator,
                       options: InpaintOptions, on_step: StepCallback | None = None) -> Tensor:
    """Fill the pixels where `keep` is False (RePaint, Lugmayr et al. 2022, on the straight
    path): before every solver step the kept pixels are set to their path value (1 − t)·x₀ +
    t·x_known for one fixed x₀, so the field sees them at the right noise level; each step is
    done `resamples` more times after re-noising its end back to its start, so the fill has
    time to agree with them."""
    noise = torch.randn(known.shape, generator=generator).to(known.device, known.dtype)
    x, h = noise, 1.0 / options.steps
    for i in range(options.steps):
        t, s = i * h, (i + 1) * h
        for r in range(options.resamples + 1):
            x = torch.where(keep, (1 - t) * noise + t * known, x)
            x = integrate(velocity, x, t, s, 1, options.solver)
            if r < options.resamples:
                x = renoise(x, s, t, generator)
        if on_step is not None:
            on_step(i + 1, options.steps, x)
    return torch.where(keep, known, x)


# Images of at most this many numbers get the exact divergence (one backward pass per number);
# larger ones Hutchinson's estimate.
EXACT_DIVERGENCE_DIMS = 64
# The quick likelihood of live plots: fewer steps, and two probes, the fewest that give a spread.
QUICK_LIKELIHOOD = {"steps": 10, "probes": 2}
_LOG_BIN = math.log(2.0 / 256.0)  # the width of a pixel's bin of [0, 256) in [−1, 1]

# Solver steps of encode and decode unless options say otherwise: a latent round trip needs more
# than a sample does.
LATENT_STEPS = 25


class VelocityUNet(UNet):
    """v_θ(x_t, t, y): the shared UNet at continuous time t ∈ [0, 1] (seen on the UNet's 0..1000
    scale). Its output layer starts at zero, so a fresh network is the field v = 0."""

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        return super().forward(x, t * 1000.0, labels)


class FlowMatching(Family):
    """Conditional flow matching on the straight path from N(0, I) to the images (rectified
    flow), sampled by an ODE solver from an EMA of the weights. The latent is x₀, the noise an
    image comes from (C·H·W numbers, the image's shape flattened), reached from an image by
    integrating the ODE backward and mapped back by integrating it forward."""

    name = "flow-matching"
    title = "Flow matching"
    summary = "Learns a velocity field from noise to images (rectified flow); few-step ODE sampling, exact latents."
    capabilities = frozenset({Capability.SAMPLE, Capability.DECODE, Capability.ENCODE, Capability.LOG_PROB,
                              Capability.INPAINT, Capability.CONDITIONAL})
    log_prob_kind = LogProbKind.EXACT  # the change of variables, exact up to the solver (or estimated)
    inpaint_method = ("RePaint on the straight path: the known pixels are set to their place on the path before "
                      "every ODE step, and each step is redone after re-noising, so the fill agrees with them.")
    Config = FlowMatchingConfig
    SampleOptions = FlowMatchingSampleOptions
    TINY: ClassVar[dict[str, Any]] = {"base_channels": 8, "channel_mults": (1, 2)}
    width_knobs: ClassVar[tuple[str, ...]] = ("base_channels",)

    def __init__(self, spec: ImageSpec, config: FlowMatchingConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.network = VelocityUNet(spec, config).to(self.device)
        self.ema = ExponentialMovingAverage(self.network, config.ema_decay).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr)
        self.null_label = spec.num_classes  # the extra embedding row: "no label"

    def networks(self) -> dict[str, nn.Module]:
        return {"network": self.network, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    @property
    def latent_dim(self) -> int:
        return self.spec.dims  # x₀ has the image's shape

    # -- training ---------------------------------------------------------------------------
    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        """The conditional flow matching loss at one drawn time per image, the noise paired to
        the images by minibatch optimal transport when `transport_pairing` is on. The images are
        dequantized, (k + u)/256, so that the flow's density is one of the 8-bit data's bins."""
        batch = x.shape[0]
        shard = self.batch_shard  # rows of the global batch's draws (all of them when single)
        jitter = shard.draw(batch, lambda n: torch.rand((n, *x.shape[1:]), generator=generator,
                                                         device=generator.device)).to(self.device)
        data = to_symmetric(dequantize(x.to(self.device), jitter))
        t = shard.draw(batch, lambda n: sample_times(n, self.config.time_sampling, generator,
                                                     generator.device)).to(self.device, data.dtype)
        noise = shard.draw(batch, lambda n: torch.randn((n, *data.shape[1:]), generator=generator,
                                                        device=generator.device)).to(self.device, data.dtype)
        if self.config.transport_pairing:  # within this process's rows under torchrun
            noise = pair_by_transport(noise, data)
        y = drop_labels(labels, self.spec.num_classes, self.config.p_uncond, shard, generator, self.device)
        loss = flow_matching_loss(lambda v, s: self.network(v, s, y), noise, data, t)
        # The EMA's update count is the step count, so warm-up resumes exactly from a checkpoint.
        step = int(self.ema.updates)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * self.lr_scale * min(1.0, (step + 1) / max(1, self.config.warmup_steps))
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
        self.optimizer_step(self.optimizer)
        self.ema.update(self.network)
        return {"loss": loss.item(), "grad_norm": float(grad_norm)}

    # -- the field the process functions follow ------------------------------------------------
    def velocity_fn(self, labels: Tensor | None, guidance: float = 1.0,
                    network: nn.Module | None = None) -> VelocityFn:
        """v(x_t, t) of the EMA network (or `network`), with classifier-free guidance `guidance`
        when the model is conditional (unet.guided)."""
        return guided(network or self.ema, labels, guidance, self.null_label)

    # -- capabilities -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """x₀ ~ N(0, I) from `seed` on the CPU, carried to t = 1 by the solver; progress gets the
        images along the path after every step."""
        options = options or self.SampleOptions()
        labels = self._check_labels(labels, n)
        noise = torch.randn((n, *self.spec.shape), generator=torch.Generator().manual_seed(seed)).to(self.device)
        callback = None if progress is None else (lambda i, total, x: progress(i, total, to_unit(x).cpu()))
        x = integrate(self.velocity_fn(labels, options.guidance), noise, 0.0, 1.0, options.steps, options.solver,
                      on_step=callback)
        return to_unit(x).cpu()

    @torch.no_grad()
    def encode(self, x: Tensor, labels: Tensor | None = None, *, options: Any = None) -> Tensor:
        """x₀ of the ODE integrated backward from x, flattened to (N, C·H·W), in options.steps
        steps (default LATENT_STEPS). Conditional models follow the guided field, as `decode` does."""
        options = options or self.SampleOptions(solver="heun", steps=LATENT_STEPS)
        labels = self._check_labels(labels, x.shape[0])
        noise = integrate(self.velocity_fn(labels, options.guidance), to_symmetric(x.to(self.device)),
                          1.0, 0.0, options.steps, options.solver)
        return noise.flatten(1).cpu()

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None, *, options: Any = None) -> Tensor:
        """The ODE integrated forward from x₀ = z.view(C, H, W), in options.steps steps (default
        LATENT_STEPS)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be (N, {self.latent_dim}), not {tuple(z.shape)}")
        options = options or self.SampleOptions(solver="heun", steps=LATENT_STEPS)
        labels = self._check_labels(labels, z.shape[0])
        noise = z.to(self.device, torch.float32).view(-1, *self.spec.shape)
        x = integrate(self.velocity_fn(labels, options.guidance), noise, 0.0, 1.0, options.steps, options.solver)
        return to_unit(x).cpu()

    @torch.no_grad()
    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                options: InpaintOptions | None = None, progress: SampleProgress | None = None) -> Tensor:
        """inpaint_along_path; the kept pixels come back unchanged, bit for bit. progress gets
        the images along the path after every step."""
        options = options or InpaintOptions()
        labels = self._check_labels(labels, x.shape[0])
        keep = self._keep_mask(keep_mask, x)
        callback = None if progress is None else (lambda i, total, v: progress(i, total, to_unit(v).cpu()))
        filled = inpaint_along_path(self.velocity_fn(labels, options.guidance), to_symmetric(x.to(self.device)),
                                    keep.to(self.device), torch.Generator().manual_seed(seed), options, callback)
        return torch.where(keep, x.cpu(), to_unit(filled).cpu())

    def log_prob(self, x: Tensor, labels: Tensor | None = None, *, seed: int = 0,
                 steps: int | None = None, probes: int | None = None) -> Tensor:
        """log p(k + u) in nats per image (the density on [0, 256)^D) for one noise pattern u
        from `seed`, by the change of variables along the unguided ODE (log_likelihood): exact
        up to the solver's error for images of at most EXACT_DIVERGENCE_DIMS numbers, else the
        mean of `probes` Hutchinson estimates (unbiased)."""
        return self._log_prob_columns(x, labels, seed, steps, probes).mean(1)

    def _log_prob_columns(self, x: Tensor, labels: Tensor | None, seed: int, steps: int | None,
                          probes: int | None) -> Tensor:
        """(N, columns): one exact column, or one Hutchinson estimate per probe."""
        labels = self._check_labels(labels, x.shape[0])
        generator = torch.Generator().manual_seed(seed)
        pattern = torch.rand(self.spec.shape, generator=generator)
        data = to_symmetric(dequantize(x.to(self.device, torch.float32), pattern.to(self.device)))
        velocity = self.velocity_fn(labels, 1.0)  # guidance does not define a normalised density
        if self.exact_likelihood:
            columns = 1

            def divergence(v: Tensor, t: Tensor) -> Tensor:
                return exact_divergence(velocity, v, t)[:, None]
        else:
            columns = probes or self.config.likelihood_probes
            probe_noise = torch.Generator(device=self.device).manual_seed(seed + 1)

            def divergence(v: Tensor, t: Tensor) -> Tensor:
                return hutchinson_divergence(velocity, v, t, columns, probe_noise)

        with torch.no_grad():
            log_pz, _noise = log_likelihood(velocity, data, uniform_times(1.0, 0.0, steps or self.config.likelihood_steps),
                                            divergence, columns)
        return (log_pz + self.spec.dims * _LOG_BIN).cpu()

    @property
    def exact_likelihood(self) -> bool:
        """Whether the divergence is computed exactly (small images) rather than estimated."""
        return self.spec.dims <= EXACT_DIVERGENCE_DIMS

    def likelihood_bounds(self, x: Tensor, labels: Tensor | None = None, *,
                          quick: bool = False) -> dict[str, Tensor]:
        """`cnf`, the likelihood with the exact divergence, or `cnf_est`, Hutchinson's estimate as
        one column per probe, so that its standard error can be reported (quick: two probes and
        fewer steps, for live plots)."""
        options = QUICK_LIKELIHOOD if quick else {}
        if self.exact_likelihood:
            return {"cnf": self.log_prob(x, labels, **options)}
        return {"cnf_est": self._log_prob_columns(x, labels, 0, options.get("steps"), options.get("probes"))}


FAMILY = FlowMatching
