"""k-NN manifold metrics: precision/recall and density/coverage of generated features.

Each set's manifold is approximated by the union of balls B(x_i, r_k(x_i)), where r_k is the
distance from x_i to its k-th nearest neighbour in its own set (itself excluded).

- Precision/recall (Kynkäänniemi, Karras, Laine, Lehtinen & Aila 2019, "Improved Precision and
  Recall Metric for Assessing Generative Models"): precision = fraction of fake samples inside the
  real manifold (fidelity), recall = fraction of real samples inside the fake manifold (diversity).
  Balls are closed (d ≤ r), as in the authors' code.
- Density/coverage (Naeem, Oh, Uh, Choi & Yoo 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models"), with real balls only, so outliers among the fakes cannot inflate them:
      density  = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_k(X_i))]
      coverage = 1/N Σ_i 1[∃ j: Y_j ∈ B(X_i, r_k(X_i))]
  Balls are open (d < r), as in the authors' ``prdc`` code: then the k-th neighbour lies on the
  boundary and is not counted, so a copy of the real set has density exactly 1 (each ball holds
  its centre and k − 1 neighbours), the value the paper gives for matching distributions.

One pass over real × fake distance blocks serves both numbers of each pair.
"""

from __future__ import annotations

import numpy as np

from genstudio.core.metrics.distances import (
    DEFAULT_BLOCK_BYTES,
    as_features,
    iter_distance_blocks,
    knn_radii,
)


def _real_and_fake(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    real, fake = as_features(real, "real"), as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    return real, fake


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, max_block_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[float, float]:
    """(precision, recall) of (M, D) fake against (N, D) real features; needs N, M > k."""
    real, fake = _real_and_fake(real, fake, k)
    real_radii = knn_radii(real, k, max_block_bytes)
    fake_radii = knn_radii(fake, k, max_block_bytes)
    fake_inside = np.zeros(len(fake), dtype=bool)  # fake_j in some real ball
    real_inside = np.zeros(len(real), dtype=bool)  # real_i in some fake ball
    for start, block in iter_distance_blocks(real, fake, max_block_bytes):  # (rows of real, M)
        rows = slice(start, start + len(block))
        fake_inside |= (block <= real_radii[rows, None]).any(axis=0)
        real_inside[rows] = (block <= fake_radii[None, :]).any(axis=1)
    return float(fake_inside.mean()), float(real_inside.mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, max_block_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[float, float]:
    """(density, coverage) of (M, D) fake against (N, D) real features; needs N > k."""
    real, fake = _real_and_fake(real, fake, k)
    real_radii = knn_radii(real, k, max_block_bytes)
    hits = 0  # number of (real ball, fake sample) pairs with the sample inside the ball
    covered = np.zeros(len(real), dtype=bool)
    for start, block in iter_distance_blocks(real, fake, max_block_bytes):  # (rows of real, M)
        rows = slice(start, start + len(block))
        inside = block < real_radii[rows, None]
        hits += int(inside.sum())
        covered[rows] = inside.any(axis=1)
    return hits / (k * len(fake)), float(covered.mean())
