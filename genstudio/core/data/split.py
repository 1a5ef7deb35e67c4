"""A held-out split that every run on the same data shares.

Figures on held-out images are what make runs and families comparable, so the split must not
depend on the run: it is a fixed permutation of the dataset's order (seeded by a constant, not
the run's seed). A tenth of the images is held out, at most MAX_HELD_OUT; datasets smaller than
MIN_IMAGES_FOR_SPLIT hold out nothing (their figures are then labelled as training figures)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HELD_OUT_FRACTION = 0.1
MAX_HELD_OUT = 2000
MIN_IMAGES_FOR_SPLIT = 20
_SPLIT_SEED = 20261122  # fixed forever: changing it changes every run's test set


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # int64 indices into the dataset, ascending
    test: np.ndarray   # int64 indices, ascending; empty for tiny datasets

    @property
    def has_test(self) -> bool:
        return len(self.test) > 0


def held_out_split(n: int, fraction: float = HELD_OUT_FRACTION) -> Split:
    """Deterministic train/test indices for a dataset of n images."""
    if n < MIN_IMAGES_FOR_SPLIT or fraction <= 0:
        return Split(np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64))
    n_test = min(MAX_HELD_OUT, max(1, int(round(n * fraction))))
    order = np.random.default_rng(_SPLIT_SEED).permutation(n)
    return Split(np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64))
