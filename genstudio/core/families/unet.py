"""The UNet the diffusion and flow-matching families share: residual blocks with a time (and
class) embedding, self-attention at the bottleneck, skips across each level (Ronneberger et al.
2015; the layout of Ho et al. 2020); and classifier-free guidance over it (Ho & Salimans 2022):
one network trained with some labels replaced by a "no label" class, and sampled with the two
outputs mixed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import BatchShard, ImageSpec


def unet_levels(size: int) -> int:
    """Halvings from the image size down to a 4–7 px bottleneck: 8 → 1, 16 → 2, 28 → 2, 32 → 3."""
    return max(1, int(math.floor(math.log2(size / 4))))


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer position encoding of (B,) float timesteps → (B, dim) (Ho et al. §4)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(embedding, (0, dim - 2 * half))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(next(g for g in (8, 4, 2, 1) if channels % g == 0), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero-initialised output layers: every residual branch starts as the identity, which
    keeps a deep UNet stable from the first step (as Ho et al.'s code does)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, the time/class embedding added in between, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.dropout = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of the bottleneck (a few dozen of them)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, c, h * w).transpose(2, 3).unbind(1)  # (B, HW, C)
        attended = F.scaled_dot_product_attention(q, k, v)                               # (B, HW, C)
        return x + self.out(attended.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """F(x, s, y): a UNet (Ronneberger et al. 2015) as in Ho et al. 2020, small enough for a CPU,
    shared by the diffusion and flow-matching families. s is a (B,) float time on the scale of
    Ho et al.'s 1,000 timesteps (each family maps its own time onto it), y the class or None.
    Levels come from the image size (`unet_levels`); the input is zero-padded to a multiple of
    2^levels so odd sizes (28, 30, …) work, and the output is cropped back. The output layer
    starts at zero.

    `arch` is the family's config: base_channels, channel_mults, blocks_per_level, attention,
    dropout."""

    def __init__(self, spec: ImageSpec, arch: Any):
        super().__init__()
        self.levels = unet_levels(spec.size)
        step = 2**self.levels
        self.size, self.padded = spec.size, math.ceil(spec.size / step) * step
        base = arch.base_channels
        widths = [base * arch.channel_mults[min(i, len(arch.channel_mults) - 1)] for i in range(self.levels + 1)]
        emb_dim, self.base = 4 * base, base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One extra row: index num_classes is the "no label" class of classifier-free guidance.
        self.class_embedding = nn.Embedding(spec.num_classes + 1, emb_dim) if spec.num_classes else None
        self.stem = nn.Conv2d(spec.channels, widths[0], 3, padding=1)
        blocks = arch.blocks_per_level
        self.down_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(widths[i], widths[i], emb_dim, arch.dropout) for _ in range(blocks))
            for i in range(self.levels))
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(self.levels))
        bottom = widths[-1]
        self.mid1 = ResBlock(bottom, bottom, emb_dim, arch.dropout)
        self.mid_attention = SelfAttention(bottom) if arch.attention else nn.Identity()
        self.mid2 = ResBlock(bottom, bottom, emb_dim, arch.dropout)
        self.upsamples = nn.ModuleList(
            nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(self.levels))
        self.up_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(2 * widths[i], widths[i], emb_dim, arch.dropout) for _ in range(blocks))
            for i in range(self.levels))
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU(),
                                 zero_init(nn.Conv2d(widths[0], spec.channels, 3, padding=1)))

    def forward(self, x: Tensor, time: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(sinusoidal_embedding(time, self.base))  # (B, 4·base)
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError("a class-conditional network needs labels (num_classes: no label)")
            emb = emb + self.class_embedding(labels)
        pad = self.padded - self.size
        h = self.stem(F.pad(x, (0, pad, 0, pad)))
        skips = []
        for blocks, downsample in zip(self.down_blocks, self.downsamples, strict=True):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = downsample(h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        for i in reversed(range(self.levels)):
            h = self.upsamples[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            for block in self.up_blocks[i]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)[:, :, :self.size, :self.size]


# -- classifier-free guidance --------------------------------------------------------------------


def drop_labels(labels: Tensor | None, num_classes: int, p_uncond: float, shard: BatchShard,
                generator: torch.Generator, device: torch.device) -> Tensor | None:
    """The batch's labels with a p_uncond fraction replaced by the null class (index num_classes),
    so one network learns both f(x_t, y) and f(x_t) (Ho & Salimans 2022, Algorithm 1). None for
    an unconditional model."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("a class-conditional model needs labels to train")
    labels = labels.to(device, torch.long)
    drop = shard.draw(len(labels), lambda n: torch.rand(n, generator=generator, device=generator.device)).to(device)
    return torch.where(drop < p_uncond, torch.full_like(labels, num_classes), labels)


def guided(network: nn.Module, labels: Tensor | None, guidance: float,
           null_label: int) -> Callable[[Tensor, Tensor], Tensor]:
    """f(x_t, t) of `network`, guided when there are labels: f̃ = f(x_t) + w (f(x_t, y) − f(x_t))
    (Ho & Salimans 2022 eq. 6 with w = 1 + their w), so w = 1 is the conditional network and
    w = 0 the unconditional one. A batch of x that repeats the labels' batch (several times of
    each image at once) repeats the labels to match."""
    if labels is None:
        return lambda x, t: network(x, t, None)

    def mixed(x: Tensor, t: Tensor) -> Tensor:
        y = labels.repeat(x.shape[0] // labels.shape[0])
        if guidance == 1.0:
            return network(x, t, y)
        conditional, unconditional = network(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)])
        ).chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    return mixed
