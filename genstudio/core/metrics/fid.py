"""Fréchet distance between Gaussians fitted to features (FID; Heusel et al. 2017, NeurIPS).

    d² = ‖μ1 − μ2‖² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^{1/2})

The usual implementation takes ``scipy.linalg.sqrtm(Σ1 @ Σ2)``, which fails or returns complex
junk when the covariances are singular (fewer samples than feature dimensions, e.g. 50 images of
64-d features). We need only the trace, and tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(Σ1 Σ2)). With
S = Σ1^{1/2}, the product Σ1 Σ2 = S (S Σ2) has the same eigenvalues as (S Σ2) S = S Σ2 S, which is
symmetric positive semi-definite, so two symmetric eigendecompositions give the trace stably with
real arithmetic only.

From features there is a shortcut: with centred, scaled data F (Σ = FᵀF), the square roots of the
eigenvalues of Σ1Σ2 = F1ᵀF1F2ᵀF2 are the singular values of F1F2ᵀ, so the trace is the nuclear
norm ‖F1 F2ᵀ‖_*. That is an (N1, N2) SVD instead of two (D, D) eigendecompositions, so
``fid_from_features`` uses it when both sets have fewer samples than dimensions (1000 images of
2048-d Inception features: ~1 s instead of ~10 s on two cores), and it needs no clipping at all.
"""

from __future__ import annotations

import numpy as np

from genstudio.core.metrics.distances import as_features

# Eigenvalues below eps · D · λ_max are round-off, not signal: eigh returns a true zero as about
# ±eps·λ_max, and the square root would inflate that to ~1e-8·sqrt(λ_max) in every such direction.
_EIGEN_FLOOR = np.finfo(np.float64).eps
# More negative than this (relative to λ_max, per dimension) is not round-off: Σ is not PSD.
_NEGATIVE_TOLERANCE = 1e-9


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean (D,) and unbiased covariance (D, D) of (N, D) features, N ≥ 2.

    Same as ``np.mean(x, 0), np.cov(x, rowvar=False)`` but always 2-D, computed in float64.
    """
    x = as_features(features, min_rows=2)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _clean_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off-sized ones set to exactly 0; fail if indefinite."""
    largest = float(np.abs(eigenvalues).max(initial=0.0))
    if eigenvalues.min(initial=0.0) < -_NEGATIVE_TOLERANCE * len(eigenvalues) * largest:
        raise ValueError("covariance matrices must be positive semi-definite")
    return np.where(eigenvalues > _EIGEN_FLOOR * len(eigenvalues) * largest, eigenvalues, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(_clean_eigenvalues(eigenvalues))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((Σ1 Σ2)^{1/2}) for symmetric PSD Σ1, Σ2, via the symmetric form Σ1^{1/2} Σ2 Σ1^{1/2}."""
    root = _psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetric up to round-off
    return float(np.sqrt(_clean_eigenvalues(eigenvalues)).sum())


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{name}: need μ (D,) and Σ (D, D), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}: μ and Σ must be finite")
    # eigh reads one triangle only, so an asymmetric Σ (a caller's bug) would pass silently.
    if not np.allclose(sigma, sigma.T, rtol=0, atol=1e-9 * float(np.abs(sigma).max())):
        raise ValueError(f"{name}: Σ is not symmetric")
    return mu, (sigma + sigma.T) / 2


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2); ≥ 0.

    Works for singular covariances. Σ1 and Σ2 must be symmetric positive semi-definite.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first Gaussian")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second Gaussian")
    if len(mu1) != len(mu2):
        raise ValueError(f"dimensions differ: {len(mu1)} vs {len(mu2)}")
    shift = mu1 - mu2
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    distance = float(shift @ shift) + traces - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # The true value is ≥ 0 for PSD Σ; for (near-)identical Gaussians the subtraction cancels
    # down to round-off of the traces, which can land a hair below 0. That is 0, not a result.
    return max(distance, 0.0)


def _fid_in_sample_space(real: np.ndarray, fake: np.ndarray) -> float:
    """The same distance via centred factors F (FᵀF = Σ): tr sqrt(Σ1Σ2) = ‖F1 F2ᵀ‖_*."""
    f1 = (real - real.mean(axis=0)) / np.sqrt(len(real) - 1)  # (N1, D)
    f2 = (fake - fake.mean(axis=0)) / np.sqrt(len(fake) - 1)  # (N2, D)
    shift = real.mean(axis=0) - fake.mean(axis=0)
    root_trace = np.linalg.svd(f1 @ f2.T, compute_uv=False).sum()
    distance = float(shift @ shift + np.einsum("ij,ij->", f1, f1) + np.einsum("ij,ij->", f2, f2))
    return max(distance - 2.0 * float(root_trace), 0.0)  # clipped for the same reason as above


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two (N, D) feature sets (e.g. Inception pool features of real and generated)."""
    real, fake = as_features(real, "real", 2), as_features(fake, "fake", 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if max(len(real), len(fake)) < real.shape[1]:
        return _fid_in_sample_space(real, fake)
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))
