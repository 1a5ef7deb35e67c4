"""Reference models every comparison is read against.

PixelCategorical: each sub-pixel independent, with its own 256-way categorical fitted by
counting (add-α smoothing). Its likelihood is analytic — on the data it was fitted to, its
bits/dim is the average (smoothed) per-sub-pixel entropy — and its samples have exactly the
training marginals but no structure, so it anchors both the likelihood column (a model that
cannot beat it learned no dependencies between pixels) and the sample-quality columns
(BENCHMARKS.md lists it as "per-pixel independent sampling").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = 256


@dataclass(frozen=True)
class PixelCategorical:
    log_probs: np.ndarray   # float64 (D, 256): log P(sub-pixel d takes value v)
    shape: tuple[int, int, int]  # (H, W, C) of the images it was fitted to

    @classmethod
    def fit(cls, images: np.ndarray, alpha: float = 1.0, chunk: int = 1024) -> PixelCategorical:
        """Fit to (N, H, W, C) uint8 images; alpha pseudo-counts per value (alpha > 0 keeps
        unseen values possible, so held-out likelihoods stay finite). Counted `chunk` images
        at a time: the int64 bin indices of a whole 63,000-image training split at 28 px were
        800 MB, more than everything else training holds."""
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
            raise ValueError("fit needs a non-empty (N, H, W, C) uint8 array")
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        n = len(images)
        dims = math.prod(images.shape[1:])
        offsets = (np.arange(dims) * LEVELS)[None, :]              # value v of dim d → d·256 + v
        counts = np.zeros(dims * LEVELS, np.int64)
        for start in range(0, n, chunk):
            index = images[start:start + chunk].reshape(-1, dims).astype(np.int64) + offsets
            counts += np.bincount(index.ravel(), minlength=dims * LEVELS)
        counts = counts.reshape(dims, LEVELS)
        log_probs = np.log(counts + alpha) - math.log(n + alpha * LEVELS)
        return cls(log_probs, tuple(images.shape[1:]))

    @property
    def dims(self) -> int:
        return self.log_probs.shape[0]

    def log_prob(self, images: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """log P(image) in nats for (N, H, W, C) uint8 images: the sum over sub-pixels."""
        self._check(images)
        flat = images.reshape(len(images), -1)
        rows = np.arange(self.dims)
        out = np.empty(len(images))
        for start in range(0, len(images), chunk):
            block = flat[start:start + chunk].astype(np.int64)
            out[start:start + chunk] = self.log_probs[rows[None, :], block].sum(axis=1)
        return out

    def bits_per_dim(self, images: np.ndarray) -> float:
        return float(-self.log_prob(images).mean() / (self.dims * math.log(2.0)))

    def sample(self, n: int, seed: int = 0, chunk: int = 64) -> np.ndarray:
        """n images with each sub-pixel drawn independently from its categorical (uint8)."""
        rng = np.random.default_rng(seed)
        cdf = np.cumsum(np.exp(self.log_probs), axis=1)
        cdf /= cdf[:, -1:]                                        # guard against round-off
        out = np.empty((n, self.dims), dtype=np.uint8)
        for start in range(0, n, chunk):
            u = rng.random((min(chunk, n - start), self.dims, 1))
            out[start:start + chunk] = np.minimum((u > cdf[None]).sum(axis=2), LEVELS - 1)
        return out.reshape(n, *self.shape)

    def _check(self, images: np.ndarray) -> None:
        if images.dtype != np.uint8 or tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"expected uint8 images of shape (N, {', '.join(map(str, self.shape))}), "
                             f"got {images.dtype} {images.shape}")


def uniform_bits_per_dim() -> float:
    """A model that spreads mass evenly over 256 values: log2(256) = 8 bits per sub-pixel."""
    return math.log2(LEVELS)
