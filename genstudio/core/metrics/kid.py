"""Kernel Inception Distance (Bińkowski, Sutherland, Arbel & Gretton 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared maximum mean discrepancy with the cubic polynomial
kernel k(x, y) = (x·y / D + 1)³, for sets X (m) and Y (n):

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn)

Unlike FID it is unbiased, so it can be compared across sample sizes, and may be slightly
negative when the two distributions are the same. As in the paper's code it is averaged over
random subsets of equal size, each drawn without replacement, and reported with its spread.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genstudio.core.metrics.distances import as_features

DEFAULT_SUBSET_SIZE = 1000
# Below this many kernel entries (128 MiB in float64 over the three matrices) the full kernel
# matrices are computed once and each subset gathers from them: 100 subsets then cost three
# matrix products instead of three hundred.
_KERNEL_CACHE_ELEMENTS = 16 * 2**20

KernelBlocks = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x_i, y_j) = (x_i·y_j / D + 1)³ for all pairs; (m, n)."""
    gram = x @ y.T
    gram /= x.shape[1]
    gram += 1.0
    return gram**3


def _mmd2_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² from the three kernel matrices (diagonals of k_xx, k_yy left out)."""
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased polynomial-kernel MMD² between whole sets x (m, D) and y (n, D), m, n ≥ 2."""
    x = as_features(x, "x", min_rows=2)
    y = as_features(y, "y", min_rows=2)
    return _mmd2_from_kernels(
        polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    )


def _kernel_blocks(real: np.ndarray, fake: np.ndarray) -> KernelBlocks:
    """A function giving (K_rr, K_ff, K_rf) for given real and fake subset indices."""
    n, m = len(real), len(fake)
    if n * n + m * m + n * m <= _KERNEL_CACHE_ELEMENTS:
        k_rr, k_ff = polynomial_kernel(real, real), polynomial_kernel(fake, fake)
        k_rf = polynomial_kernel(real, fake)
        return lambda r, f: (k_rr[np.ix_(r, r)], k_ff[np.ix_(f, f)], k_rf[np.ix_(r, f)])

    def compute(r: np.ndarray, f: np.ndarray):
        x, y = real[r], fake[f]
        return polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)

    return compute


def _check_kid_inputs(real, fake, subset_size: int | None, subsets: int):
    for name, array in (("real", real), ("fake", fake)):
        if np.ndim(array) == 2 and len(array) < 2:
            raise ValueError(f"KID needs at least 2 {name} images, got {len(array)}")
    real, fake = as_features(real, "real", 2), as_features(fake, "fake", 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    largest = min(len(real), len(fake))
    size = min(DEFAULT_SUBSET_SIZE, largest) if subset_size is None else subset_size
    if not 2 <= size <= largest:
        raise ValueError(f"subset_size must be in [2, {largest}] for these sets, got {size}")
    if subsets < 1:
        raise ValueError(f"subsets must be ≥ 1, got {subsets}")
    return real, fake, size


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of (N, D) real vs (M, D) fake features: (mean, std) of MMD²_u over random subsets.

    ``subset_size`` defaults to min(1000, N, M) so a few hundred images still work; each subset
    is drawn without replacement from each set independently, with ``np.random.default_rng(seed)``.
    The std is over subsets (ddof=0, as torch-fidelity and the paper's code report it), so it
    measures subset-to-subset spread, not the error of the mean. Values are MMD², often quoted ×10³.
    """
    real, fake, size = _check_kid_inputs(real, fake, subset_size, subsets)
    rng = np.random.default_rng(seed)
    kernels = _kernel_blocks(real, fake)
    estimates = np.empty(subsets)
    for s in range(subsets):
        real_index = rng.choice(len(real), size, replace=False)
        fake_index = rng.choice(len(fake), size, replace=False)
        estimates[s] = _mmd2_from_kernels(*kernels(real_index, fake_index))
    return float(estimates.mean()), float(estimates.std())
