"""Building blocks shared by more than one family: a convolutional trunk sized from the image
size, the discretized logistic likelihood over 8-bit pixel values, and an exponential moving
average of a network's weights."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pyramid_sizes(size: int, smallest: int = 4) -> list[int]:
    """Spatial sizes of a stride-2 pyramid: 28 → [28, 14, 7, 4], 32 → [32, 16, 8, 4].

    Each stride-2, padding-1, 3×3 convolution maps s → ceil(s / 2), so odd sizes work too; the
    decoder upsamples back through the same list, so it reproduces the exact input size."""
    sizes = [size]
    while sizes[-1] > smallest:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def level_widths(levels: int, base: int, cap: int = 256) -> list[int]:
    """Channel width at each pyramid level after the input: base, 2·base, 4·base, … (capped)."""
    return [min(base * 2**i, cap) for i in range(levels)]


class DownBlock(nn.Module):
    """Halve the resolution: strided 3×3 conv, then a 3×3 conv at the new resolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(c_out, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.silu(self.down(x))
        return F.silu(x + self.conv(x))


class UpBlock(nn.Module):
    """Upsample (nearest) to an exact size, then two 3×3 convs: no checkerboard artefacts."""

    def __init__(self, c_in: int, c_out: int, out_size: int):
        super().__init__()
        self.out_size = out_size
        self.up = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv = nn.Conv2d(c_out, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(self.out_size, self.out_size), mode="nearest")
        x = F.silu(self.up(x))
        return F.silu(x + self.conv(x))


# -- discretized logistic likelihood --------------------------------------------------------
# Pixel values k ∈ {0..255} are mapped to x = 2k/255 − 1 ∈ [−1, 1]; bin k covers
# [x − 1/255, x + 1/255], with the two end bins stretched to ±∞ so the 256 bin probabilities
# sum to one (Salimans et al. 2017, PixelCNN++). The log-probability of 8-bit data under this
# model equals the log-density of the uniformly dequantized data on [0, 256)^D.

_HALF_BIN = 1.0 / 255.0
# The narrowest logistic, on the [−1, 1] scale: e^−7 is about an eighth of a bin, so 97% of its
# mass is in one bin; the floor keeps the log-scale's gradient alive (Salimans et al. 2017).
MIN_LOG_SCALE = -7.0


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log P(pixel) for x in [−1, 1] (exact multiples of 2/255 after shifting)."""
    centered = x - mean
    inv_scale = torch.exp(-log_scale)
    plus_in = inv_scale * (centered + _HALF_BIN)
    min_in = inv_scale * (centered - _HALF_BIN)
    log_cdf_plus = F.logsigmoid(plus_in)            # log P(bin) of the lowest bin, k = 0
    log_one_minus_cdf_min = F.logsigmoid(-min_in)   # log P(bin) of the highest bin, k = 255
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    # When the bin mass underflows, use the density at the bin centre times the bin width.
    mid_in = inv_scale * centered
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)
    log_mid = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp_min(1e-12)),
        log_pdf_mid + math.log(2 * _HALF_BIN),
    )
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid)
    )


def dequantize(x01: Tensor, noise: Tensor) -> Tensor:
    """y = (k + u) / 256 for pixels x = k / 255 and noise u in [0, 1)."""
    return (torch.round(x01 * 255.0) + noise) / 256.0


def to_symmetric(x01: Tensor) -> Tensor:
    """[0, 1] → [−1, 1]."""
    return x01 * 2.0 - 1.0


def to_unit(x_sym: Tensor) -> Tensor:
    """[−1, 1] → [0, 1], clamped."""
    return ((x_sym + 1.0) * 0.5).clamp(0.0, 1.0)


class ExponentialMovingAverage(nn.Module):
    """A copy of a network whose weights trail the live ones: w̄ ← β w̄ + (1 − β) w.

    With warmup the decay at update t (from 0) is β_t = min(decay, (1 + t)/(10 + t)), so until
    it reaches `decay` the average spans about the last ninth of training (1/(1 − β_t) ≈ t/9),
    and early samples are not dominated by the random initial weights. The update count is a
    buffer, so it is checkpointed with the weights and a resumed run continues the same schedule.

    BatchNorm running statistics are not weights to average, nor the live network's to copy:
    those belong to other weights, and made the averaged generator's samples worse.
    refresh_statistics runs the average on a batch of inputs in train mode, so its statistics
    are its own weights' (BigGAN's "standing statistics", Brock et al. 2019 §3.1, kept up
    during training rather than computed afterwards)."""

    def __init__(self, live: nn.Module, decay: float, warmup: bool = True):
        super().__init__()
        self.average = copy.deepcopy(live).requires_grad_(False).eval()
        self.decay = decay
        self.warmup = warmup
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_pre_hook(_earlier_average_keys)

    def decay_at(self, update: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + update) / (10 + update))

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        beta = self.decay_at(int(self.updates))
        for average, current in zip(self.average.parameters(), live.parameters(), strict=True):
            average.lerp_(current, 1.0 - beta)  # exact at β = 0 and β = 1
        self.updates += 1

    @torch.no_grad()
    def refresh_statistics(self, *inputs: Any) -> None:
        """One forward pass in train mode: the BatchNorm running statistics take a step
        (their momentum) towards the batch statistics of the averaged weights."""
        self.average.train()
        self.average(*inputs)
        self.average.eval()

    def forward(self, *args: Any) -> Tensor:
        return self.average(*args)


def _earlier_average_keys(module, state_dict, prefix, *_rest) -> None:
    """Runs saved before the families shared this class kept a diffusion model's average under
    "model." (a GAN's was always "average."): read them under the current name."""
    old = prefix + "model."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "average." + key[len(old):]] = state_dict.pop(key)
