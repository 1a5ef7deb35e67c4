"""One yardstick for every 2-D family: KL(p_data ‖ p_model) on the grid, and the modes covered
for a mixture toy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .families.base import PlaneFamily
from .grid import (
    Grid,
    GridDensity,
    ModeCoverage,
    count_modes,
    kernel_density,
    kl_divergence,
    normalise,
    precision_recall,
)
from .toys import Toy

TOY_DENSITY_SAMPLES = 1_000_000  # a toy without a closed form is scored against this many of its samples


def data_density(grid: Grid, data: Toy | np.ndarray, seed: int = 0) -> GridDensity:
    """The data's density on the grid: a toy's closed form where it has one; else a kernel
    estimate, from a million of the toy's samples at the grid's own resolution, or from the
    points a person drew at Scott's bandwidth."""
    if isinstance(data, Toy):
        if data.log_density is not None:
            return normalise(grid, data.log_density(grid.centres()), "exact")
        return kernel_density(grid, data.sample(TOY_DENSITY_SAMPLES, np.random.default_rng(seed)), grid.cell)
    return kernel_density(grid, np.asarray(data, dtype=np.float64))


@dataclass(frozen=True)
class Measured:
    kl: float                     # KL(p_data ‖ p_model) in nats on the grid
    model: GridDensity            # the model's density there (its kind says how it was got)
    coverage: ModeCoverage | None  # for a mixture toy
    samples: np.ndarray           # (n, 2) the samples the coverage counted
    precision: float | None       # share of the samples near the data (k-NN balls, equal counts)
    recall: float | None          # share of the data near the samples
    sample_ms: float              # milliseconds to draw the n samples (wall clock)

    @property
    def caption(self) -> str:
        """"KL 0.123 nats, 8/8 modes", as every panel and figure says it."""
        modes = "" if self.coverage is None else f", {self.coverage.covered}/{self.coverage.modes} modes"
        return f"KL {self.kl:.3f} nats{modes}"


class MeasureCancelled(Exception):
    """should_stop() said yes between two chunks of a measurement."""


def log_density_on_grid(family: PlaneFamily, grid: Grid, chunk: int | None = None,
                        should_stop: Callable[[], bool] = lambda: False) -> np.ndarray | None:
    """The family's log-density at the grid's centres, `chunk` points at a time (all at once if
    None), asking should_stop() between chunks: a density by the ODE on a fine grid takes seconds."""
    centres = grid.centres()
    parts = []
    for start in range(0, len(centres), chunk or len(centres)):
        if should_stop():
            raise MeasureCancelled
        part = family.log_density(centres[start:start + (chunk or len(centres))])
        if part is None:
            return None
        parts.append(part)
    return np.concatenate(parts)


def measure(family: PlaneFamily, grid: Grid, data: GridDensity, toy: Toy | None = None,
            samples: int = 2000, seed: int = 0, chunk: int | None = None,
            should_stop: Callable[[], bool] = lambda: False, data_points: np.ndarray | None = None) -> Measured:
    """The family's KL, density, coverage and, given the data's points, precision and recall
    against as many of them as there are samples; raises MeasureCancelled if should_stop() says
    so between chunks of its density."""
    start = time.perf_counter()
    points = family.sample(samples, seed)
    sample_ms = 1000 * (time.perf_counter() - start)
    log_q = log_density_on_grid(family, grid, chunk, should_stop)
    # A family without a density (the GAN) is scored by a kernel estimate of its samples.
    model = kernel_density(grid, points) if log_q is None else normalise(grid, log_q, family.density_kind)
    coverage = (count_modes(points, toy.modes, toy.mode_scale)
                if toy is not None and toy.modes is not None else None)
    precision = recall = None
    if data_points is not None:
        real = data_points[np.random.default_rng(seed).permutation(len(data_points))[:samples]]
        precision, recall = precision_recall(real, points[:len(real)])
    return Measured(kl_divergence(data, model), model, coverage, points, precision, recall, sample_ms)
