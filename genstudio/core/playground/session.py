"""Training a 2-D family for a budget of seconds, measuring it on the way: the loop the CLI runs
for each family and the tab runs on its worker threads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .families.base import PlaneFamily
from .grid import Grid, GridDensity
from .toys import Toy
from .yardstick import Measured, measure

MEASURE_AT_MOST_EVERY = 3.0


@dataclass(frozen=True)
class FitRecord:
    seconds: float          # training time spent so far (measuring not counted)
    step: int
    kl: float               # KL(p_data ‖ p_model) in nats on the grid
    covered: int | None     # modes covered, for a mixture toy


@dataclass
class Fitted:
    family: PlaneFamily
    steps: int = 0
    train_seconds: float = 0.0
    history: list[FitRecord] = field(default_factory=list)
    last: Measured | None = None


def fit(family: PlaneFamily, points: np.ndarray, seconds: float, grid: Grid, target: GridDensity,
        toy: Toy | None = None, seed: int = 0, measure_every: float | None = None,
        max_steps: int | None = None, should_stop: Callable[[], bool] = lambda: False,
        on_measured: Callable[[FitRecord], None] | None = None) -> Fitted:
    """Train on batches drawn from `points` until `seconds` of training are spent (or
    max_steps are taken, or should_stop), measuring the yardstick at the start, every `measure_every` seconds of
    training (default: a tenth of the budget, but no more often than every
    MEASURE_AT_MOST_EVERY seconds: a density by the ODE takes seconds) and at the end."""
    measure_every = measure_every or max(seconds / 10, MEASURE_AT_MOST_EVERY)
    data = torch.as_tensor(points, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    result = Fitted(family)

    def record() -> None:
        result.last = measure(family, grid, target, toy, seed=seed, data_points=points)
        coverage = result.last.coverage
        entry = FitRecord(result.train_seconds, result.steps, result.last.kl,
                          None if coverage is None else coverage.covered)
        result.history.append(entry)
        if on_measured is not None:
            on_measured(entry)

    record()
    next_measure = measure_every
    while (result.train_seconds < seconds and (max_steps is None or result.steps < max_steps)
           and not should_stop()):
        start = time.perf_counter()
        rows = torch.randint(0, len(data), (family.config.batch,), generator=generator)
        family.train_step(data[rows], generator)
        result.steps += 1
        result.train_seconds += time.perf_counter() - start
        if result.train_seconds >= next_measure:
            record()
            next_measure += measure_every
    if result.history[-1].step != result.steps:
        record()
    return result
