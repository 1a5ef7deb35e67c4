"""Denoising diffusion (DDPM, Ho et al. 2020) with DDIM sampling and inversion (Song et al.
2021), cosine or linear noise schedules (Nichol & Dhariwal 2021), classifier-free guidance
(Ho & Salimans 2022) and RePaint inpainting (Lugmayr et al. 2022).

The file keeps three things apart (as lucidrains' `Unet` / `GaussianDiffusion` do):
  * `NoiseSchedule`: the closed forms of the forward process q — ᾱ_t, q(x_t | x_0) and the
    posterior q(x_{t-1} | x_t, x_0);
  * the process functions (`ddpm_sample`, `ddim_sample`, `ddim_invert`, `repaint`,
    `variational_bound`), which take any ε-predictor `eps_fn(x_t, t)`, so tests can plug in
    the analytically optimal predictor for Gaussian data in place of the network;
  * `EpsilonUNet`, the ε-network (the shared UNet of families/unet.py, preconditioned), and `Diffusion`, the family that owns network, EMA and optimizer.

Conventions: timesteps are 0-based, index t ∈ {0..T−1} is the paper's step t+1; index −1 is
the data x_0 (ᾱ = 1). Images live in [−1, 1] inside the process ([0, 1] across the contract).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
    within,
)
from .layers import (
    MIN_LOG_SCALE,
    ExponentialMovingAverage,
    discretized_logistic_log_prob,
    to_symmetric,
    to_unit,
)
from .unet import UNet, drop_labels, guided, zero_init

# eps_fn(x_t, t) → predicted ε, the same shape as x_t; t is a (B,) long tensor of indices.
EpsFn = Callable[[Tensor, Tensor], Tensor]
# Called with the current x_0 prediction in [−1, 1] after each reverse step.
StepCallback = Callable[[int, int, Tensor], None]

_MAX_BETA = 0.999  # Nichol & Dhariwal 2021: keeps α_t > 0 so the reverse step never divides by 0


# -- the forward process ----------------------------------------------------------------------


class NoiseSchedule:
    """β_1..β_T and every closed form derived from them (float64 tables, Ho et al. 2020 §2):

        q(x_t | x_0)          = N(√ᾱ_t x_0, (1 − ᾱ_t) I),            ᾱ_t = ∏_{s≤t} (1 − β_s)
        q(x_{t−1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, β̃_t I),       β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
        c0_t = β_t √ᾱ_{t−1} / (1 − ᾱ_t),   ct_t = (1 − ᾱ_{t−1}) √α_t / (1 − ᾱ_t)
    """

    def __init__(self, betas: Tensor):
        betas = betas.double()
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with values in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self._alpha_bars_from_data = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        self.posterior_mean_coef_x0 = betas * self.alpha_bars_prev.sqrt() / (1.0 - self.alpha_bars)
        self.posterior_mean_coef_xt = (1.0 - self.alpha_bars_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bars)

    @property
    def num_steps(self) -> int:
        return self.betas.numel()

    @classmethod
    def linear(cls, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. 2020: β linear from 1e-4 to 0.02 for T = 1000. For other T both ends are
        scaled by 1000/T (as Nichol & Dhariwal do), so the chain destroys the same amount of
        signal whatever its length; β is capped below 1."""
        scale = 1000.0 / num_steps
        betas = torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64)
        return cls(betas.clamp(max=_MAX_BETA))

    @classmethod
    def cosine(cls, num_steps: int, offset: float = 0.008) -> NoiseSchedule:
        """Nichol & Dhariwal 2021 eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2).
        It destroys information more evenly than the linear schedule, which matters most for
        small images; the small offset s keeps β_1 from being vanishingly small."""
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
        alpha_bars = f / f[0]
        betas = 1.0 - alpha_bars[1:] / alpha_bars[:-1]
        return cls(betas.clamp(max=_MAX_BETA))

    @classmethod
    def named(cls, kind: str, num_steps: int) -> NoiseSchedule:
        if kind == "linear":
            return cls.linear(num_steps)
        if kind == "cosine":
            return cls.cosine(num_steps)
        raise ValueError(f"unknown noise schedule {kind!r}; choose linear or cosine")

    # -- lookups at a batch of timesteps, shaped to broadcast against x ------------------------
    def at(self, table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """table[t] as (B, 1, 1, …) in like's dtype and device. For ᾱ, t = −1 reads 1: the data."""
        if table is self.alpha_bars:
            values = self._alpha_bars_from_data[t.cpu() + 1]
        else:
            values = table[t.cpu()]
        return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw from q(x_t | x_0) (Ho et al. eq. 4)."""
        alpha_bar = self.at(self.alpha_bars, t, x0)
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t−1} | x_t, x_0) (Ho et al. eqs. 6–7)."""
        mean = self.at(self.posterior_mean_coef_x0, t, xt) * x0 + self.at(self.posterior_mean_coef_xt, t, xt) * xt
        return mean, self.at(self.posterior_variance, t, xt).expand_as(xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert eq. 4 for x_0 given the noise: x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
        alpha_bar = self.at(self.alpha_bars, t, xt)
        return (xt - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    def eps_from_x0(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        alpha_bar = self.at(self.alpha_bars, t, xt)
        return (xt - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()

    def reverse_variance(self, kind: str) -> Tensor:
        """σ_t² of the fixed-variance reverse process p(x_{t−1} | x_t) (Ho et al. §3.2): β̃_t
        ("posterior", exact when x_0 is a point) or β_t ("beta", exact when x_0 ~ N(0, I)).
        At t = 0 both use β̃ of the next step, since β̃_0 = 0 (Nichol & Dhariwal's clipping)."""
        if kind == "posterior":
            variance = self.posterior_variance.clone()
        elif kind == "beta":
            variance = self.betas.clone()
        else:
            raise ValueError(f"unknown reverse variance {kind!r}; choose posterior or beta")
        if self.num_steps > 1:
            variance[0] = self.posterior_variance[1]
        return variance


def _full(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long)


def ddim_timesteps(num_steps: int, steps: int) -> list[int]:
    """`steps` timesteps a stride T/steps apart from 0 up, largest first: [980, 960, …, 0] for
    T = 1000 and 50 steps (the spacing of Song et al.'s code). It starts one stride below
    T − 1 on purpose: the cosine schedule's last steps reach ᾱ ≈ 1e-9, and a deterministic
    step from there would multiply the network's ε error by √(ᾱ_prev / ᾱ_T) ≈ 700, while
    x_T ~ N(0, I) is already an accurate start at t = 980 (ᾱ ≈ 1e-3)."""
    steps = max(1, min(steps, num_steps))
    return [i * num_steps // steps for i in range(steps)][::-1]


# -- reverse steps ------------------------------------------------------------------------------


def ddim_step(schedule: NoiseSchedule, x: Tensor, eps: Tensor, t: int, t_prev: int, eta: float,
              noise: Tensor | None, clip: bool) -> tuple[Tensor, Tensor]:
    """One DDIM update x_t → x_{t_prev} (Song et al. 2021 eq. 12); t_prev = −1 means x_0.

    η = 0 is the deterministic ODE; η = 1 is ancestral DDPM sampling on the sub-sequence.
    Returns (x_{t_prev}, x_0 prediction)."""
    tt, tp = _full(t, x), _full(t_prev, x)
    x0 = schedule.predict_x0(x, tt, eps)
    if clip:
        # Keep the ε consistent with the clipped x_0 so the step stays on the same line.
        x0 = x0.clamp(-1.0, 1.0)
        eps = schedule.eps_from_x0(x, tt, x0)
    alpha_bar = schedule.at(schedule.alpha_bars, tt, x)
    alpha_bar_prev = schedule.at(schedule.alpha_bars, tp, x)
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    x_prev = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).clamp_min(0).sqrt() * eps
    if noise is not None and eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def ddpm_step(schedule: NoiseSchedule, x: Tensor, eps: Tensor, t: int, variance: Tensor,
              noise: Tensor, clip: bool) -> tuple[Tensor, Tensor]:
    """Ancestral step x_t → x_{t−1} ~ p(x_{t−1} | x_t) = N(μ̃(x̂_0, x_t), σ_t²) (Ho et al.
    Algorithm 2, written through the x_0 prediction so it can be clipped)."""
    tt = _full(t, x)
    x0 = schedule.predict_x0(x, tt, eps)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    mean, _ = schedule.q_posterior(x0, x, tt)
    if t == 0:
        return mean, x0  # the last step returns the mean: no noise on the final image
    return mean + schedule.at(variance, tt, x).sqrt() * noise, x0


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Noise drawn on the generator's device (the CPU for sampling) so results do not depend
    on the model's device, then moved next to x."""
    return torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def ddpm_sample(schedule: NoiseSchedule, eps_fn: EpsFn, x_T: Tensor, generator: torch.Generator,
                *, variance: str = "posterior", clip: bool = True,
                callback: StepCallback | None = None) -> Tensor:
    """Ancestral sampling through all T steps (Ho et al. Algorithm 2)."""
    sigma2 = schedule.reverse_variance(variance)
    x, total = x_T, schedule.num_steps
    for i, t in enumerate(range(total - 1, -1, -1)):
        eps = eps_fn(x, _full(t, x).to(x.device))
        x, x0 = ddpm_step(schedule, x, eps, t, sigma2, _randn_like(x, generator), clip)
        if callback is not None:
            callback(i + 1, total, x0)
    return x


def ddim_sample(schedule: NoiseSchedule, eps_fn: EpsFn, x_T: Tensor, steps: int, *,
                eta: float = 0.0, generator: torch.Generator | None = None, clip: bool = True,
                callback: StepCallback | None = None) -> Tensor:
    """DDIM on `steps` evenly spaced timesteps (Song et al. 2021); deterministic for η = 0."""
    if eta > 0 and generator is None:
        raise ValueError("stochastic DDIM (eta > 0) needs a generator")
    timesteps = ddim_timesteps(schedule.num_steps, steps)
    x = x_T
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        noise = _randn_like(x, generator) if eta > 0 else None
        x, x0 = ddim_step(schedule, x, eps_fn(x, _full(t, x).to(x.device)), t, t_prev, eta, noise, clip)
        if callback is not None:
            callback(i + 1, len(timesteps), x0)
    return x


def dpm_solver_pp_sample(schedule: NoiseSchedule, eps_fn: EpsFn, x_T: Tensor, steps: int, *,
                         stochastic: bool = False, generator: torch.Generator | None = None,
                         clip: bool = True, callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): the probability-flow
    ODE that DDIM also solves, by a second-order multistep method in the half-log-SNR
    λ = log(α/σ) on the x_0 prediction, with α = √ᾱ and σ = √(1 − ᾱ). Each network evaluation
    is one step, on timesteps evenly spaced in λ (log_snr_timesteps: on DDIM's, even in t, the
    step ratios near t = 0 reach 5 and the extrapolation overshoots); the first step is first
    order (a DDIM step), and so is the last, to the data (σ = 0), where it returns the last x_0
    prediction ("lower order final"). Deterministic.

    stochastic: the SDE variant of the same solver (SDE-DPM-Solver++(2M), η = 1), which
    forgets part of x at each step and draws fresh noise from `generator` in its place, so a
    model's errors are not carried along the whole path: a step of h in λ is
    x' = (σ'/σ) e^{−h} x + α' (1 − e^{−2h}) D + σ' √(1 − e^{−2h}) z."""
    if stochastic and generator is None:
        raise ValueError("the stochastic DPM-Solver++ needs a generator")
    eta = 1.0 if stochastic else 0.0
    timesteps = log_snr_timesteps(schedule, steps)
    x, previous_x0, previous_h = x_T, None, None
    for i, t in enumerate(timesteps):
        tt = _full(t, x)
        x0 = schedule.predict_x0(x, tt, eps_fn(x, tt.to(x.device)))
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        if i + 1 == len(timesteps):
            x = x0  # to σ = 0: the data
        else:
            t_next = _full(timesteps[i + 1], x)
            alpha_bar, alpha_bar_next = schedule.at(schedule.alpha_bars, tt, x), schedule.at(schedule.alpha_bars, t_next, x)
            h = _half_log_snr(alpha_bar_next) - _half_log_snr(alpha_bar)
            # The multistep estimate of x_0 over the step: x_0 extrapolated from the last two.
            direction = x0 if previous_x0 is None else x0 + (x0 - previous_x0) * (h / (2 * previous_h))
            sigma_ratio = ((1 - alpha_bar_next) / (1 - alpha_bar)).sqrt()
            x = (sigma_ratio * torch.exp(-eta * h) * x
                 - alpha_bar_next.sqrt() * torch.expm1(-(1 + eta) * h) * direction)
            if stochastic:
                x = x + (1 - alpha_bar_next).sqrt() * (-torch.expm1(-2 * h)).sqrt() * _randn_like(x, generator)
            previous_x0, previous_h = x0, h
        if callback is not None:
            callback(i + 1, len(timesteps), x0)
    return x


def log_snr_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """`steps` distinct timesteps, largest first and ending at 0 (one step: the start), as evenly spaced in the half
    log-SNR λ as whole timesteps allow, from where DDIM-50 starts (t = 49T/50: ᾱ ≈ 1e-3 on the
    cosine schedule, where x_T ~ N(0, I) is accurate and before its steep last steps)."""
    total = schedule.num_steps
    steps = max(1, min(steps, total))
    start = max(steps - 1, total * 49 // 50)
    lam = _half_log_snr(schedule.alpha_bars.double()[: start + 1])  # increasing as t falls
    targets = torch.linspace(lam[start].item(), lam[0].item(), steps, dtype=torch.float64)
    timesteps: list[int] = []
    for i, target in enumerate(targets):
        nearest = int(torch.argmin((lam - target).abs()))
        highest = timesteps[-1] - 1 if timesteps else start  # strictly decreasing
        timesteps.append(max(steps - 1 - i, min(nearest, highest)))  # room left for the rest
    return timesteps


def _half_log_snr(alpha_bar: Tensor) -> Tensor:
    """λ = log(α/σ) = ½ log(ᾱ / (1 − ᾱ))."""
    return 0.5 * (alpha_bar.log() - torch.log1p(-alpha_bar))


def ddim_invert(schedule: NoiseSchedule, eps_fn: EpsFn, x0: Tensor, steps: int,
                refinements: int = 2) -> Tensor:
    """DDIM inversion x_0 → x_T: the η = 0 ODE of `ddim_sample` run backwards (Song et al. §4.3).

    A decode step x_t → x_prev uses ε(x_t, t); undoing it needs ε at the still unknown x_t.
    The first guess takes ε(x_prev, t) (the usual inversion, whose error grows with the step
    size); each refinement re-evaluates ε at the current guess of x_t, a fixed-point
    iteration that converges to the exact inverse of the decode step, so decode(encode(x))
    returns x closely even with few steps. No clipping: the map must stay invertible."""
    timesteps = ddim_timesteps(schedule.num_steps, steps)[::-1]  # ascending: 0 … T−1
    x, t_prev = x0, -1
    for t in timesteps:
        tt = _full(t, x)
        alpha_bar = schedule.at(schedule.alpha_bars, tt, x)
        guess = x
        for _ in range(refinements + 1):
            eps = eps_fn(guess, tt.to(x.device))
            implied_x0 = schedule.predict_x0(x, _full(t_prev, x), eps)  # from x_prev and ε
            guess = alpha_bar.sqrt() * implied_x0 + (1 - alpha_bar).sqrt() * eps
        x, t_prev = guess, t
    return x


# -- RePaint -------------------------------------------------------------------------------------


def repaint_positions(steps: int, jump_length: int, resamples: int) -> list[int]:
    """The walk over positions S..0 of the (respaced) chain that RePaint takes (Lugmayr et al.
    2022, §4.2): go down one position at a time, and after every `jump_length` positions jump
    back up by `jump_length` and redo them, `resamples` extra times, so the generated region
    gets several chances to harmonise with the known one. S = `steps`; position 0 is x_0."""
    jumps_left = {p: resamples for p in range(steps - jump_length, 0, -jump_length)}
    position, walk = steps, [steps]
    while position > 0:
        position -= 1
        walk.append(position)
        if jumps_left.get(position, 0) > 0:
            jumps_left[position] -= 1
            position += jump_length
            walk.append(position)
    return walk


def repaint(schedule: NoiseSchedule, eps_fn: EpsFn, x0_known: Tensor, keep_mask: Tensor,
            generator: torch.Generator, *, steps: int, jump_length: int, resamples: int,
            clip: bool = True, callback: StepCallback | None = None) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) on a respaced chain of `steps` timesteps.

    Each reverse step draws the unknown region from p(x_{t−1} | x_t) (ancestral DDIM, η = 1)
    and the known region from q(x_{t−1} | x_0) of the given image; a jump back draws
    x_{t+j} ~ q(x_{t+j} | x_t) in one go (the forward chain composes in closed form)."""
    # Timestep at each position: position 0 is the data (−1), position S the top of the grid.
    times = [-1, *ddim_timesteps(schedule.num_steps, steps)[::-1]]
    walk = repaint_positions(len(times) - 1, jump_length, resamples)
    keep = keep_mask.to(x0_known.device, torch.bool).expand_as(x0_known)
    x = _randn_like(x0_known, generator)
    for index, (here, there) in enumerate(zip(walk, walk[1:], strict=False)):
        t, t_next = times[here], times[there]
        if there < here:  # a reverse step, then paste in the known region at t_next
            eps = eps_fn(x, _full(t, x).to(x.device))
            x, x0_pred = ddim_step(schedule, x, eps, t, t_next, 1.0, _randn_like(x, generator), clip)
            if t_next >= 0:
                known = schedule.q_sample(x0_known, _full(t_next, x), _randn_like(x, generator))
            else:
                known = x0_known
            x = torch.where(keep, known, x)
            if callback is not None:  # the current guess at the finished image
                callback(index + 1, len(walk) - 1, torch.where(keep, x0_known, x0_pred))
        else:  # jump back up: q(x_{t_next} | x_t) = N(√(ᾱ_next/ᾱ_t) x_t, 1 − ᾱ_next/ᾱ_t)
            ratio = schedule.at(schedule.alpha_bars, _full(t_next, x), x) / schedule.at(
                schedule.alpha_bars, _full(t, x), x)
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * _randn_like(x, generator)
    return x


# -- the variational bound -----------------------------------------------------------------------


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) elementwise, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log P(pixel) under N(mean, std²) integrated over the pixel's bin (Ho et al. eq. 13):
    x ∈ [−1, 1] on the grid 2k/255 − 1, bins of width 2/255, the two end bins to ±∞."""
    half_bin = 1.0 / 255.0
    upper = (x - mean + half_bin) / std
    lower = (x - mean - half_bin) / std
    log_cdf_upper = torch.special.log_ndtr(upper)     # log P(bin) of the lowest bin
    log_sf_lower = torch.special.log_ndtr(-lower)     # log P(bin) of the highest bin
    # Middle bins: Φ(u) − Φ(l) = Φ(−l) − Φ(−u); take the side away from the far tail so the
    # difference of two numbers near 1 does not cancel.
    upper_tail = lower > 0
    mass = torch.where(upper_tail, torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
                       torch.special.ndtr(upper) - torch.special.ndtr(lower))
    # When the mass underflows, the density at the centre times the bin width is exact enough.
    centre = (x - mean) / std
    log_density = -0.5 * centre**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    log_mid = torch.where(mass > 1e-12, torch.log(mass.clamp_min(1e-300)), log_density + math.log(2 * half_bin))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))


def variational_bound(schedule: NoiseSchedule, eps_fn: EpsFn, x0: Tensor, generator: torch.Generator,
                      *, variance: str = "posterior", clip: bool = True, terms: int = 0,
                      batch_limit: int = 256,
                      decoder_log_prob: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """The negative VLB of Ho et al. 2020 eq. 5, per image, in nats (float64):

        L_T = KL(q(x_T | x_0) ‖ N(0, I))                                   "prior"
        Σ_{t≥2} L_{t−1} = Σ KL(q(x_{t−1} | x_t, x_0) ‖ p(x_{t−1} | x_t))    "diffusion"
        L_0 = −log p(x_0 | x_1) over the 256 bins                          "decoder"

    p(x_0 | x_1) is Ho et al.'s discretized Gaussian around the model's mean with the fixed
    variance, or decoder_log_prob(x_0, x_1), the elementwise log-probability of a learned one.

    Each term uses one draw x_t ~ q(x_t | x_0) from `generator`. terms = 0 sums all T terms
    exactly; terms = k evaluates the decoder exactly plus one timestep drawn in each of k
    equal strata of the rest, weighted by the stratum size: an unbiased estimate of the same
    sum, T/k times cheaper, though not itself a bound. The network runs on batches of (t,
    image) pairs of up to `batch_limit` images."""
    batch, T = x0.shape[0], schedule.num_steps
    timesteps, weights = _bound_timesteps(T, terms, generator)
    sigma2 = schedule.reverse_variance(variance)
    x0_64 = x0.double()
    prior_mean = schedule.alpha_bars[-1].sqrt().item() * x0_64
    prior = gaussian_kl(prior_mean, torch.full_like(x0_64, 1 - schedule.alpha_bars[-1].item()),
                        torch.zeros_like(x0_64), torch.ones_like(x0_64)).flatten(1).sum(1)
    diffusion = torch.zeros(batch, dtype=torch.float64, device=x0.device)
    decoder = torch.zeros_like(diffusion)
    per_chunk = max(1, batch_limit // batch)
    for start in range(0, len(timesteps), per_chunk):
        chunk = timesteps[start:start + per_chunk]
        t = chunk.repeat_interleave(batch)                           # (K·B,)
        x0_rep = x0.repeat(len(chunk), *([1] * (x0.dim() - 1)))      # (K·B, C, H, W)
        noise = _randn_like(x0_rep, generator)
        xt = schedule.q_sample(x0_rep, t, noise)
        eps = eps_fn(xt, t.to(xt.device)).double()
        x0_hat = schedule.predict_x0(xt.double(), t, eps)
        if clip:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        model_mean, _ = schedule.q_posterior(x0_hat, xt.double(), t)
        model_var = schedule.at(sigma2, t, model_mean)
        true_mean, true_var = schedule.q_posterior(x0_rep.double(), xt.double(), t)
        kl = gaussian_kl(true_mean, true_var, model_mean, model_var.expand_as(model_mean))
        nll = -discretized_gaussian_log_prob(x0_rep.double(), model_mean, model_var.sqrt().expand_as(model_mean))
        is_decoder = (t == 0).to(model_mean.device).view(-1, *([1] * (x0.dim() - 1)))
        term = torch.where(is_decoder, nll, kl).flatten(1).sum(1).view(len(chunk), batch)
        if decoder_log_prob is not None and start == 0:  # the first row block is t = 0 (see _bound_timesteps)
            term[0] = -decoder_log_prob(x0_rep[:batch], xt[:batch]).double().flatten(1).sum(1)
        weight = weights[start:start + per_chunk].to(term.device, term.dtype).view(-1, 1)
        first = (chunk == 0).to(term.device).view(-1, 1)
        decoder += (term * weight * first).sum(0)
        diffusion += (term * weight * ~first).sum(0)
    return {"prior": prior, "diffusion": diffusion, "decoder": decoder,
            "total": prior + diffusion + decoder}


def _bound_timesteps(T: int, terms: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Timesteps to evaluate, the first always 0 (the decoder), and the weight of each (see
    `variational_bound`)."""
    if terms <= 0 or terms >= T - 1:
        return torch.arange(T), torch.ones(T, dtype=torch.float64)
    edges = torch.linspace(1, T, terms + 1).round().long()  # strata of 1..T−1
    sizes = edges[1:] - edges[:-1]
    offsets = (torch.rand(terms, generator=generator, device=generator.device).cpu() * sizes).long()
    picked = edges[:-1] + offsets
    return torch.cat([torch.zeros(1, dtype=torch.long), picked]), torch.cat(
        [torch.ones(1, dtype=torch.float64), sizes.double()])


# -- the learned decoder p(x_0 | x_1) ------------------------------------------------------------

# Hidden channels of the learned decoder: it runs at full resolution, so it stays small beside
# the UNet.
DECODER_WIDTH = 16
# Its learning rate relative to the UNet's: it learns one noise level, and on the built-in
# shapes and tins it learnt faster at 8× than at 2× (docs/families/diffusion.md).
DECODER_LR_FACTOR = 8.0
# It trains on every DECODER_STRIDE-th image of a batch (rows 0, 4, …): a few images hold
# thousands of subpixels to learn from, and a pass over every image slowed a CPU step markedly.
DECODER_STRIDE = 4
# A logistic's scale per unit of standard deviation (√3/π), for the decoder's starting scale.
LOGISTIC_SCALE_PER_STD = math.sqrt(3) / math.pi


class PixelDecoder(nn.Module):
    """The chain's last step p(x_0 | x_1), learned: a discretized logistic over the 256 values
    of each subpixel, located at x_1/√ᾱ_1 moved by a small network and with a scale it sets per
    subpixel. The fixed decoder, a Gaussian as wide as the last step's noise (0.6 of a pixel
    level with the cosine schedule), pays at least 0.74 bits per subpixel however flat the
    image; the UNet, which would have to take that noise out, sees t = 1 on one draw in T. The
    network sees x_1 and its high-pass residual (x_1 less its 3×3 mean) in units of the noise:
    on a flat region the residual is the noise itself, which it can then take out."""

    def __init__(self, channels: int, alpha_bar_1: float):
        super().__init__()
        self.signal, self.noise = math.sqrt(alpha_bar_1), math.sqrt(1.0 - alpha_bar_1)
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, DECODER_WIDTH, 3, padding=1), nn.SiLU(),
            nn.Conv2d(DECODER_WIDTH, DECODER_WIDTH, 3, padding=1), nn.SiLU(),
            zero_init(nn.Conv2d(DECODER_WIDTH, 2 * channels, 3, padding=1)))

    def forward(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """The logistic's location and log-scale per subpixel. Untrained: x_1/√ᾱ_1, and the
        scale of a logistic with the noise's standard deviation."""
        blur = F.avg_pool2d(F.pad(x1, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        shift, log_scale = self.net(torch.cat([x1, (x1 - blur) / self.noise], dim=1)).chunk(2, dim=1)
        return (x1 / self.signal - self.noise * shift,
                (math.log(LOGISTIC_SCALE_PER_STD * self.noise) + log_scale).clamp_min(MIN_LOG_SCALE))

    def log_prob(self, x0: Tensor, x1: Tensor) -> Tensor:
        """log p(x_0 | x_1) per subpixel, in nats; x_0 on the grid 2k/255 − 1."""
        return discretized_logistic_log_prob(x0, *self(x1))


# -- the ε-network ------------------------------------------------------------------------------


class EpsilonUNet(UNet):
    """ε_θ(x_t, t, y) at integer timestep t: the shared UNet F (families/unet.py) with its
    output preconditioned (Karras et al. 2022, written for ε): ε_θ = c_skip·x_t + c_out·F(x_t, t, y), where c_skip·x_t is the optimal predictor for data of mean 0 and std
    σ_data, and c_out the std of what it leaves unexplained. Near pure noise the signal in x_t
    is ~√ᾱ_t ≈ 0.03 while a plain network's ε error is a few percent too (5–8 % rms after 2000
    steps on the shapes data), so DDIM's η = 0 ODE carried that error into the images as
    speckle; here it is scaled down by c_out ≈ √ᾱ_t σ_data. At low noise c_out → 1 and F is the
    ordinary ε-network. The loss is still L_simple on ε_θ; a fresh network (zero output layer)
    is the optimal predictor for N(0, σ_data²) data."""

    def __init__(self, spec: ImageSpec, cfg: DiffusionConfig, alpha_bars: Tensor):
        super().__init__(spec, cfg)
        self.sigma_data = cfg.sigma_data
        # Derived from the config, so not checkpointed (persistent=False).
        self.register_buffer("alpha_bars", alpha_bars.float(), persistent=False)
        self.time_scale = 1000.0 / cfg.timesteps  # embeddings see 0..1000 whatever T is

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        residual = super().forward(x, t * self.time_scale, labels)
        if self.sigma_data <= 0:
            return residual
        alpha_bar = self.alpha_bars[t].view(-1, 1, 1, 1)
        signal, noise = alpha_bar * self.sigma_data**2, 1.0 - alpha_bar  # variances in x_t
        c_skip = noise.sqrt() / (signal + noise)
        c_out = (signal / (signal + noise)).sqrt()
        return c_skip * x + c_out * residual


# -- the family ----------------------------------------------------------------------------------


# Terms of the stratified bound estimate used for live plots during training (quick=True).
QUICK_BOUND_TERMS = 50
# DDIM steps of encode and decode unless options say otherwise: a latent round trip needs more
# than a sample does.
LATENT_STEPS = 50


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000             # T, length of the noising chain (Ho et al.: 1000)
    schedule: Literal["cosine", "linear"] = "cosine"  # "cosine" (Nichol & Dhariwal; better for small images) or "linear" (Ho et al.)
    base_channels: int = 32           # UNet width at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per level; the last repeats
    blocks_per_level: int = 1         # residual blocks per UNet level (Ho et al.: 2)
    attention: bool = True            # self-attention at the 4–7 px bottleneck
    sigma_data: float = 0.5           # data std assumed by the output preconditioning; 0: plain ε-network
    dropout: float = 0.0              # in residual blocks; 0.1 helps on small datasets trained long
    lr: float = 1e-3                  # Adam learning rate (after warm-up)
    warmup_steps: int = 200           # linear learning-rate warm-up
    grad_clip: float = 1.0            # max gradient norm (Ho et al.: 1)
    ema_decay: float = 0.999          # EMA of the weights used for sampling
    p_uncond: float = 0.1             # label dropout for classifier-free guidance (conditional models)
    reverse_variance: Literal["posterior", "beta"] = "posterior"  # σ_t² of p(x_{t−1}|x_t): "posterior" β̃_t or "beta" β_t
    bound_terms: int = 0              # log_prob: 0 sums all T terms (the bound); k: unbiased k-term estimate, T/k× faster
    min_snr_gamma: float = 0.0        # loss weight min(SNR_t, γ)/SNR_t per timestep (Hang et al. 2023: 5); 0: uniform, Ho et al.'s L_simple
    decoder: Literal["learned", "fixed"] = "learned"  # p(x_0 | x_1) of the bound: a small network trained on L_0 alone, or Ho et al.'s fixed Gaussian

    # Runs saved before the learned decoder existed have the fixed one.
    EARLIER_VALUES: ClassVar[dict[str, Any]] = {"decoder": "fixed"}
    CONDITIONAL_ONLY: ClassVar[tuple[str, ...]] = ("p_uncond",)  # forms hide these for other runs

    def __post_init__(self) -> None:
        at_least(self, 2, "timesteps")
        at_least(self, 0, "min_snr_gamma")
        at_least(self, 1, "base_channels", "blocks_per_level")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be a list of whole numbers ≥ 1, not {list(self.channel_mults)}")
        at_least(self, 0, "lr", "sigma_data", "grad_clip")
        if self.decoder not in ("learned", "fixed"):
            raise ValueError(f"decoder must be learned or fixed, not {self.decoder!r}")
        within(self, 0, 1, "ema_decay")
        for name in ("dropout", "p_uncond"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 0 and below 1, not {getattr(self, name):g}")


@dataclass(frozen=True)
class DiffusionSampleOptions:
    sampler: Literal["ddim", "dpm++2m", "dpm++2m-sde", "ddpm"] = "dpm++2m-sde"  # "ddim" (Song et al.), "dpm++2m" (Lu et al., 2nd order: fewer steps), its stochastic "dpm++2m-sde", or "ddpm" (ancestral, all T steps)
    steps: int = 25           # network evaluations of DDIM or DPM-Solver++ (at most T); DDPM always takes T
    eta: float = 0.0          # DDIM noise: 0 deterministic, 1 ancestral on the sub-sequence
    guidance: float = 2.0     # classifier-free guidance: 1 plain conditional, 0 unconditional (conditional models only)
    clip: bool = True         # clip each x_0 prediction to the pixel range (cleaner samples)

    CONDITIONAL_ONLY: ClassVar[tuple[str, ...]] = ("guidance",)

    def __post_init__(self) -> None:
        if self.sampler not in ("ddim", "dpm++2m", "dpm++2m-sde", "ddpm"):
            raise ValueError(f"sampler must be ddim, dpm++2m, dpm++2m-sde or ddpm, not {self.sampler!r}")
        if self.steps < 1 or self.eta < 0 or self.guidance < 0:
            raise ValueError("steps must be ≥ 1, eta ≥ 0 and guidance ≥ 0")


@dataclass(frozen=True)
class InpaintOptions:
    """RePaint's knobs. The defaults cost ~210 network passes (4× a DDIM-50 sample); without
    resampling (resamples = 0) the fill often ignores the known region's colours, and jumps
    of 10 harmonised visibly better than jumps of 5 on the shapes data."""

    steps: int = 50           # timesteps of the respaced chain RePaint walks down
    jump_length: int = 10     # positions RePaint goes back up each time it resamples (paper: 10)
    resamples: int = 4        # extra passes over each stretch (paper: 9, with T = 250 steps)
    guidance: float = 2.0     # classifier-free guidance scale for conditional models

    def __post_init__(self) -> None:
        if self.steps < 1 or self.jump_length < 1 or self.resamples < 0 or self.guidance < 0:
            raise ValueError("steps and jump_length must be ≥ 1, resamples and guidance ≥ 0")


class Diffusion(Family):
    """DDPM trained on the simple ε-loss (Ho et al. 2020 eq. 14), sampled with DDIM or DDPM
    from an EMA of the weights. The latent is x_T (C·H·W numbers, the image's own shape
    flattened), reached from an image by DDIM inversion and mapped back by the DDIM ODE."""

    name = "diffusion"
    title = "Diffusion"
    summary = "Learns to undo gradual noising (DDPM); slow but sharp sampling, DDIM latents, a likelihood bound."
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.DECODE, Capability.ENCODE, Capability.LOG_PROB,
         Capability.INPAINT, Capability.CONDITIONAL}
    )
    log_prob_kind = LogProbKind.BOUND
    inpaint_method = ("RePaint (Lugmayr et al. 2022): denoise the whole image, re-noise the known pixels "
                      "to each step's level, and resample back and forth so the fill agrees with them.")
    Config = DiffusionConfig
    SampleOptions = DiffusionSampleOptions
    TINY: ClassVar[dict[str, Any]] = {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 20}
    width_knobs: ClassVar[tuple[str, ...]] = ("base_channels",)

    def __init__(self, spec: ImageSpec, config: DiffusionConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.schedule = NoiseSchedule.named(config.schedule, config.timesteps)
        self.schedule.reverse_variance(config.reverse_variance)  # fail now on an unknown kind
        self.unet = EpsilonUNet(spec, config, self.schedule.alpha_bars).to(self.device)
        # Sampling uses an average of the weights (Ho et al. §4, decay 0.9999), warmed up for short runs.
        self.ema = ExponentialMovingAverage(self.unet, config.ema_decay).to(self.device)
        groups = [{"params": list(self.unet.parameters())}]
        self.lr_factors = [1.0]  # per parameter group, times config.lr
        self.decoder = None
        if config.decoder == "learned":
            self.decoder = PixelDecoder(spec.channels, self.schedule.alpha_bars[0].item()).to(self.device)
            groups.append({"params": list(self.decoder.parameters())})
            self.lr_factors.append(DECODER_LR_FACTOR)
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)
        self.null_label = spec.num_classes  # the extra embedding row: "no label"

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"unet": self.unet, "ema": self.ema}
        return nets if self.decoder is None else {**nets, "decoder": self.decoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    @property
    def latent_dim(self) -> int:
        return self.spec.dims  # x_T has the image's shape

    # -- training ---------------------------------------------------------------------------
    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        """L_simple = E‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² with t uniform (Ho et al. Alg. 1),
        each timestep's term weighted by min(SNR_t, γ)/SNR_t when min_snr_gamma = γ > 0 (Hang
        et al. 2023: the noisy timesteps, where the x_0 error is large, are not outweighed).
        The learned decoder trains on L_0 = −log p(x_0 | x_1) alone, on every DECODER_STRIDE-th
        image, x_1 made from the same noise draw; the two losses share no parameters, so the
        UNet learns as without it."""
        x0 = to_symmetric(x.to(self.device))
        batch = x0.shape[0]
        shard = self.batch_shard  # rows of the global batch's draws (all of them when single)
        t = shard.draw(batch, lambda n: torch.randint(0, self.config.timesteps, (n,), generator=generator,
                                                      device=generator.device)).to(self.device)
        noise = shard.draw(batch, lambda n: torch.randn((n, *x0.shape[1:]), generator=generator,
                                                        device=generator.device)).to(x0.device, x0.dtype)
        y = drop_labels(labels, self.spec.num_classes, self.config.p_uncond, shard, generator, self.device)
        predicted = self.unet(self.schedule.q_sample(x0, t, noise), t, y)
        if self.config.min_snr_gamma > 0:
            per_image = (predicted - noise).pow(2).flatten(1).mean(1)
            loss = (per_image * self._min_snr_weights(t)).mean()
        else:
            loss = F.mse_loss(predicted, noise)
        metrics: dict[str, float] = {}
        objective = loss
        if self.decoder is not None:
            # Strided rows: under torchrun each process's rows are the global batch's when its
            # share is a multiple of the stride, as for every other figure here.
            x0_d, noise_d = x0[::DECODER_STRIDE], noise[::DECODER_STRIDE]
            x1 = self.schedule.q_sample(x0_d, torch.zeros(len(x0_d), dtype=torch.long, device=x0.device), noise_d)
            decoder_nll = -self.decoder.log_prob(x0_d, x1).mean()
            objective = loss + decoder_nll
            metrics["decoder_bpd"] = decoder_nll.item() / math.log(2)
        # The EMA's update count is the step count, so warm-up resumes exactly from a checkpoint.
        step = int(self.ema.updates)
        for group, factor in zip(self.optimizer.param_groups, self.lr_factors, strict=True):
            group["lr"] = (self.config.lr * factor * self.lr_scale
                           * min(1.0, (step + 1) / max(1, self.config.warmup_steps)))
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(objective, self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.unet.parameters(), self.config.grad_clip)
        if self.decoder is not None:
            nn.utils.clip_grad_norm_(self.decoder.parameters(), self.config.grad_clip)
        self.optimizer_step(self.optimizer)
        self.ema.update(self.unet)
        return {"loss": loss.item(), "grad_norm": float(grad_norm), **metrics}

    def _min_snr_weights(self, t: Tensor) -> Tensor:
        """Min-SNR-γ's weight of each drawn timestep's ε error, min(SNR_t, γ)/SNR_t with
        SNR_t = ᾱ_t/(1 − ᾱ_t): 1 where the noise dominates, below 1 on the nearly clean steps."""
        alpha_bar = self.schedule.alpha_bars.to(t.device)[t]
        snr = alpha_bar / (1 - alpha_bar)
        return snr.clamp(max=self.config.min_snr_gamma) / snr

    # -- the ε-predictor the process functions call ------------------------------------------
    def eps_fn(self, labels: Tensor | None, guidance: float = 1.0, network: nn.Module | None = None) -> EpsFn:
        """ε(x_t, t) of the EMA network (or `network`), with classifier-free guidance `guidance`
        when the model is conditional (unet.guided)."""
        return guided(network or self.ema, labels, guidance, self.null_label)

    # -- capabilities -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """x_T ~ N(0, I) from `seed` on the CPU, then the stochastic DPM-Solver++(2M) (default), its
        ODE form, DDIM or DDPM down to x_0.
        progress gets the current x_0 prediction after every step."""
        options = options or self.SampleOptions()
        labels = self._check_labels(labels, n)
        generator = torch.Generator().manual_seed(seed)
        x_T = torch.randn((n, *self.spec.shape), generator=generator).to(self.device)
        eps_fn = self.eps_fn(labels, options.guidance)
        callback = None if progress is None else (lambda i, total, x0: progress(i, total, to_unit(x0).cpu()))
        if options.sampler == "ddpm":
            x = ddpm_sample(self.schedule, eps_fn, x_T, generator, variance=self.config.reverse_variance,
                            clip=options.clip, callback=callback)
        elif options.sampler in ("dpm++2m", "dpm++2m-sde"):
            x = dpm_solver_pp_sample(self.schedule, eps_fn, x_T, options.steps, stochastic=options.sampler.endswith("sde"),
                                     generator=generator, clip=options.clip, callback=callback)
        else:
            x = ddim_sample(self.schedule, eps_fn, x_T, options.steps, eta=options.eta,
                            generator=generator, clip=options.clip, callback=callback)
        return to_unit(x).cpu()

    @torch.no_grad()
    def encode(self, x: Tensor, labels: Tensor | None = None, *, options: Any = None) -> Tensor:
        """x_T of the deterministic DDIM ODE (η = 0) run from x, flattened to (N, C·H·W), in
        options.steps steps (default LATENT_STEPS). Conditional models follow the guided ε
        (options.guidance), as `decode` does."""
        options = options or self.SampleOptions(steps=LATENT_STEPS)
        labels = self._check_labels(labels, x.shape[0])
        x_T = ddim_invert(self.schedule, self.eps_fn(labels, options.guidance),
                          to_symmetric(x.to(self.device)), options.steps)
        return x_T.flatten(1).cpu()

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None, *, options: Any = None) -> Tensor:
        """The DDIM ODE (η = 0, unclipped, so it inverts `encode`) from x_T = z.view(C, H, W), in
        options.steps steps (default LATENT_STEPS)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be (N, {self.latent_dim}), not {tuple(z.shape)}")
        options = options or self.SampleOptions(steps=LATENT_STEPS)
        labels = self._check_labels(labels, z.shape[0])
        x_T = z.to(self.device, torch.float32).view(-1, *self.spec.shape)
        x = ddim_sample(self.schedule, self.eps_fn(labels, options.guidance), x_T, options.steps,
                        eta=0.0, clip=False)
        return to_unit(x).cpu()

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None, *, seed: int = 0,
                 terms: int | None = None) -> Tensor:
        """The variational lower bound on log p(x) in nats per image (Ho et al. eq. 5), with
        all T terms (terms=None and bound_terms = 0) or a stratified estimate. The noise of
        each term comes from `seed`, so the figure is reproducible. A conditional model is
        scored as p(x | y), unguided: guidance does not define a normalised distribution."""
        labels = self._check_labels(labels, x.shape[0])
        terms = self.config.bound_terms if terms is None else terms
        bound = variational_bound(
            self.schedule, self.eps_fn(labels, 1.0), to_symmetric(x.to(self.device)),
            torch.Generator().manual_seed(seed), variance=self.config.reverse_variance,
            terms=terms, batch_limit=max(1, 2**16 // self.spec.size**2),
            decoder_log_prob=None if self.decoder is None else self.decoder.log_prob)
        return (-bound["total"]).float().cpu()

    def likelihood_bounds(self, x: Tensor, labels: Tensor | None = None, *,
                          quick: bool = False) -> dict[str, Tensor]:
        """The bound over all T terms; quick: an unbiased stratified estimate of it from
        QUICK_BOUND_TERMS terms (T/k times cheaper), named vlb_est because one draw of an
        estimate is not itself a bound."""
        if quick and self.config.timesteps > QUICK_BOUND_TERMS and (
                self.config.bound_terms == 0 or self.config.bound_terms > QUICK_BOUND_TERMS):
            return {"vlb_est": self.log_prob(x, labels, terms=min(QUICK_BOUND_TERMS, self.config.timesteps))}
        return {"vlb": self.log_prob(x, labels)}

    @torch.no_grad()
    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                options: InpaintOptions | None = None, progress: SampleProgress | None = None) -> Tensor:
        """RePaint: fill the pixels where keep_mask is False; the kept ones are returned
        unchanged, bit for bit. progress gets the current x_0 guess after every reverse step."""
        options = options or InpaintOptions()
        labels = self._check_labels(labels, x.shape[0])
        keep = self._keep_mask(keep_mask, x)
        callback = None if progress is None else (lambda i, total, x0: progress(i, total, to_unit(x0).cpu()))
        filled = repaint(self.schedule, self.eps_fn(labels, options.guidance), to_symmetric(x.to(self.device)),
                         keep.to(self.device), torch.Generator().manual_seed(seed), steps=options.steps,
                         jump_length=options.jump_length, resamples=options.resamples, callback=callback)
        return torch.where(keep, x.cpu(), to_unit(filled).cpu())


FAMILY = Diffusion
