"""The playground's live loop: several 2-D families training in turn on one thread, each
played, paused, stepped or reset on request, each sending a fresh view (its samples, its
density on the grid, its yardstick) several times a second. Qt-free: the tab's worker calls
`LivePlayground.run` on its thread and relays each FamilyView as a signal; the panels draw them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .extras import ExtraView, extra_view
from .families import create_plane_family
from .families.base import PlaneFamily
from .grid import Grid, GridDensity, ModeCoverage
from .scenario import Scenario
from .session import FitRecord
from .toys import TOYS
from .yardstick import data_density, measure

VIEW_SAMPLES = 500          # samples drawn over each panel
LIVE_GRID = Grid(resolution=64)  # coarser than the CLI's: a density every second must stay cheap


@dataclass(frozen=True)
class FamilyView:
    """One family as its panel draws it, at one moment (a copy: safe to hand to another thread)."""

    name: str
    title: str
    steps: int
    train_seconds: float
    running: bool
    samples: np.ndarray                 # (VIEW_SAMPLES, 2), the family's live_samples
    density: GridDensity | None         # the latest measured one
    kl: float | None                    # KL(p_data ‖ p_model) of that density
    coverage: ModeCoverage | None
    history: tuple[FitRecord, ...]
    figures: dict[str, float]           # the last training step's (loss, …)
    extra: ExtraView | None             # the family's own view, made with the density


class PlaygroundControl:
    """Requests from another thread (the GUI's), read by the loop between slices."""

    def __init__(self, running: set[str] | None = None):
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = set(running or ())
        self._steps: Counter[str] = Counter()
        self._resets: set[str] = set()
        self._stopped = False
        self.field_time = 0.5   # t of the velocity and score fields in the families' own views

    def play(self, name: str) -> None:
        with self._lock:
            self._running.add(name)
        self._wake.set()

    def pause(self, name: str) -> None:
        with self._lock:
            self._running.discard(name)

    def step(self, name: str, steps: int = 1) -> None:
        with self._lock:
            self._steps[name] += steps
        self._wake.set()

    def reset(self, name: str) -> None:
        with self._lock:
            self._resets.add(name)
        self._wake.set()

    def set_field_time(self, t: float) -> None:
        self.field_time = min(max(t, 0.0), 1.0)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def take(self) -> tuple[set[str], Counter[str], set[str]]:
        """(running, steps asked for, resets asked for) now; the requests are consumed."""
        with self._lock:
            steps, resets = self._steps, self._resets
            self._steps, self._resets = Counter(), set()
            return set(self._running), steps, resets

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()


@dataclass
class _Trained:
    family: PlaneFamily
    generator: torch.Generator
    steps: int = 0
    train_seconds: float = 0.0
    history: list[FitRecord] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    density: GridDensity | None = None
    kl: float | None = None
    coverage: ModeCoverage | None = None
    extra: ExtraView | None = None
    measured_at: float = -1.0      # train_seconds of the last measurement
    viewed_at: float = 0.0         # wall clock of the last view sent


class LivePlayground:
    def __init__(self, scenario: Scenario, names: list[str], grid: Grid = LIVE_GRID):
        self.scenario, self.grid = scenario, grid
        self.toy = TOYS.get(scenario.toy) if scenario.toy else None
        self.points_array = scenario.data()
        self.points = torch.as_tensor(self.points_array, dtype=torch.float32)
        self.target = data_density(grid, self.toy if self.toy is not None else self.points_array, scenario.seed)
        self.trained = {name: self._fresh(name) for name in names}

    def _fresh(self, name: str) -> _Trained:
        seed = self.scenario.seed
        family = create_plane_family(name, self.scenario.families.get(name), seed)
        return _Trained(family, torch.Generator().manual_seed(seed))

    def train(self, name: str, seconds: float = 0.0, steps: int = 0) -> None:
        """Train `name` for at least `steps` steps, and on until `seconds` are spent."""
        trained, spent, taken = self.trained[name], 0.0, 0
        while taken < steps or spent < seconds:
            start = time.perf_counter()
            rows = torch.randint(0, len(self.points), (trained.family.config.batch,), generator=trained.generator)
            trained.figures = trained.family.train_step(self.points[rows], trained.generator)
            spent += time.perf_counter() - start
            taken += 1
        trained.steps += taken
        trained.train_seconds += spent

    def measure(self, name: str, field_time: float = 0.5) -> None:
        trained = self.trained[name]
        measured = measure(trained.family, self.grid, self.target, self.toy, samples=VIEW_SAMPLES,
                           seed=self.scenario.seed)
        trained.density, trained.kl, trained.coverage = measured.model, measured.kl, measured.coverage
        trained.extra = extra_view(trained.family, self.grid, self.points_array, field_time)
        trained.measured_at = trained.train_seconds
        trained.history.append(FitRecord(trained.train_seconds, trained.steps, measured.kl,
                                         None if measured.coverage is None else measured.coverage.covered))

    def view(self, name: str, running: bool) -> FamilyView:
        trained = self.trained[name]
        family = trained.family
        return FamilyView(name, family.title, trained.steps, trained.train_seconds, running,
                          family.live_samples(VIEW_SAMPLES, self.scenario.seed), trained.density, trained.kl,
                          trained.coverage, tuple(trained.history), dict(trained.figures), trained.extra)

    def run(self, control: PlaygroundControl, emit: Callable[[FamilyView], None], *, slice_seconds: float = 0.02,
            view_interval: float = 0.1, measure_every: float = 2.0) -> None:
        """Until control.stop(): each running family in turn trains for slice_seconds; a
        family's view goes out at most every view_interval seconds and its density is measured
        again after every measure_every seconds of its training. A family paused, stepped or
        reset is shown at once; with nothing to do the loop sleeps until asked."""
        for name in self.trained:
            self.measure(name, control.field_time)
            emit(self.view(name, False))
        was_running: set[str] = set()
        while not control.stopped:
            running, steps, resets = control.take()
            for name in (was_running - running) & set(self.trained):
                emit(self.view(name, False))   # paused: the panel shows it at once
            was_running = running
            for name in resets & set(self.trained):
                self.trained[name] = self._fresh(name)
                self.measure(name, control.field_time)
                emit(self.view(name, name in running))
            active = [name for name in self.trained if name in running or steps[name]]
            if not active:
                control.wait(0.5)
                continue
            for name in active:
                trained = self.trained[name]
                self.train(name, slice_seconds if name in running else 0.0, steps[name])
                now = time.perf_counter()
                if steps[name] or trained.train_seconds - trained.measured_at >= measure_every:
                    self.measure(name, control.field_time)
                if steps[name] or now - trained.viewed_at >= view_interval:
                    trained.viewed_at = now
                    emit(self.view(name, name in running))
                if control.stopped:
                    return
