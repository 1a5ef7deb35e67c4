"""One yardstick for every 2-D family: KL(p_data ‖ p_model) on the grid, and the modes covered
for a mixture toy."""

from __future__ import annotations

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


def measure(family: PlaneFamily, grid: Grid, data: GridDensity, toy: Toy | None = None,
            samples: int = 2000, seed: int = 0) -> Measured:
    points = family.sample(samples, seed)
    log_q = family.log_density(grid.centres())
    # A family without a density (the GAN) is scored by a kernel estimate of its samples.
    model = kernel_density(grid, points) if log_q is None else normalise(grid, log_q, family.density_kind)
    coverage = (count_modes(points, toy.modes, toy.mode_scale)
                if toy is not None and toy.modes is not None else None)
    return Measured(kl_divergence(data, model), model, coverage, points)
