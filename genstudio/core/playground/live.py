"""The playground's live loop: several 2-D families training in turn on one thread, each
played, paused, stepped or reset on request, each sending a fresh view (its samples, and its own
view when asked for) about ten times a second, while a measurer thread beside it measures copies
of them (density on the grid, the yardstick) one after another. Qt-free: the tab's worker calls
`LivePlayground.run` on its thread and relays each FamilyView as a signal; the panels draw them.
"""

from __future__ import annotations

import copy
import math
import queue
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
from .figure import Panel
from .grid import Grid, GridDensity, ModeCoverage
from .scenario import Scenario
from .session import FitRecord
from .toys import TOYS
from .yardstick import MeasureCancelled, Measured, data_density, measure

VIEW_SAMPLES = 300          # samples drawn over each panel, ten times a second
SAMPLE_PIXELS = Grid(resolution=128)  # …as the pixels of this grid they fall in (an image draws faster than points)
MEASURE_SAMPLES = 500       # samples a measurement draws (modes, precision, recall, sampling time)
LIVE_GRID = Grid(resolution=64)  # coarser than the CLI's: a density every second must stay cheap
MEASURER_REST = 1.0         # the measurer rests as long as each measurement took: a core for
                            # the loop and the window (all seven measured nonstop, views ~8 a second)
MEASURE_CHUNK = 1024        # grid points per piece of a live density: a Stop waits for one piece at most


@dataclass(frozen=True)
class FamilyView:
    """One family as its panel draws it, at one moment (a copy: safe to hand to another thread)."""

    name: str
    title: str
    steps: int
    train_seconds: float
    running: bool
    samples: np.ndarray                 # (VIEW_SAMPLES, 2), the family's live_samples
    sample_pixels: np.ndarray           # (R, R, 4) RGBA of them on SAMPLE_PIXELS (sample_image)
    measured: Measured | None           # the latest measurement (density, KL, modes, precision, …)
    history: tuple[FitRecord, ...]
    figures: dict[str, float]           # the last training step's (loss, …)
    extra: ExtraView | None             # its own view, when asked for (PlaygroundControl.show_own_view)
    latent: str = "none"                # what latent space the family has

    @property
    def density(self) -> GridDensity | None:
        return None if self.measured is None else self.measured.model

    @property
    def kl(self) -> float | None:
        return None if self.measured is None else self.measured.kl

    @property
    def coverage(self) -> ModeCoverage | None:
        return None if self.measured is None else self.measured.coverage

    def panel(self) -> Panel | None:
        """This moment as the side-by-side figure draws it, once a density has been measured."""
        if self.measured is None:
            return None
        return Panel(self.title, self.measured.model, self.samples,
                     (self.measured.caption, f"{self.steps:,} steps, {self.train_seconds:.1f} s"))


def sample_image(samples: np.ndarray) -> np.ndarray:
    """(R, R, 4) uint8 RGBA on SAMPLE_PIXELS, rows y ascending: white where a sample falls,
    clear elsewhere."""
    hit = SAMPLE_PIXELS.histogram(samples) > 0
    pixels = np.zeros((*hit.shape, 4), dtype=np.uint8)
    pixels[hit] = (255, 255, 255, 230)
    return pixels


class PlaygroundControl:
    """Requests from another thread (the GUI's), read by the loop between slices."""

    def __init__(self, running: set[str] | None = None):
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = set(running or ())
        self._steps: Counter[str] = Counter()
        self._resets: dict[str, dict | None] = {}
        self._own_views: set[str] = set()
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

    def reset(self, name: str, knobs: dict | None = None) -> None:
        """`name` from fresh weights; with `knobs`, its knobs (those that differ from the
        defaults) replaced by them."""
        with self._lock:
            self._resets[name] = knobs if knobs is not None else self._resets.get(name)
        self._wake.set()

    def show_own_view(self, name: str, on: bool) -> None:
        """Send `name`'s own view (computed afresh) with each of its views, or stop sending it."""
        with self._lock:
            (self._own_views.add if on else self._own_views.discard)(name)
        self._wake.set()

    @property
    def own_views(self) -> set[str]:
        with self._lock:
            return set(self._own_views)

    def set_field_time(self, t: float) -> None:
        self.field_time = min(max(t, 0.0), 1.0)
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def take(self) -> tuple[set[str], Counter[str], dict[str, dict | None]]:
        """(running, steps asked for, resets asked for with their new knobs or None) now; the
        requests are consumed."""
        with self._lock:
            steps, resets = self._steps, self._resets
            self._steps, self._resets = Counter(), {}
            return set(self._running), steps, resets

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()


@dataclass
class _Trained:
    family: PlaneFamily
    generator: torch.Generator
    generation: int = 0            # bumped by a reset: a measurement of an older model is dropped
    steps: int = 0
    train_seconds: float = 0.0
    history: list[FitRecord] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    measured: Measured | None = None   # the latest measurement of this model
    measured_steps: int = -1       # steps of the model last measured
    measured_wall: float = -math.inf  # wall clock when that measurement was asked for
    viewed_at: float = 0.0         # wall clock of the last view sent


@dataclass(frozen=True)
class _Job:
    name: str
    generation: int
    family: PlaneFamily            # a copy: the measurer never touches the model being trained
    steps: int
    train_seconds: float


class _Measurer:
    """A thread that measures copies of the families (density, KL, coverage, precision, recall) while the
    loop goes on training them: on two cores the measuring runs beside the training, so a density
    by the ODE (a second or more) never holds the views up. One job at a time, each followed by
    a rest as long as it took (MEASURER_REST), so the views keep their ten a second."""

    def __init__(self, live: LivePlayground):
        self.live = live
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[tuple[_Job, Measured] | BaseException] = queue.SimpleQueue()
        self.in_flight: _Job | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="playground-measurer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self.in_flight = job
        self.jobs.put(job)

    def stop(self) -> None:
        """Cancel the job in hand at its next chunk and end the thread."""
        self._stopping.set()
        self.jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        torch.set_num_threads(1)   # this thread's own (OpenMP's setting is per thread): see LivePlayground.run
        live = self.live
        while (job := self.jobs.get()) is not None:
            started = time.perf_counter()
            try:
                measured = measure(job.family, live.grid, live.target, live.toy, samples=MEASURE_SAMPLES,
                                   seed=live.scenario.seed, chunk=MEASURE_CHUNK, should_stop=self._stopping.is_set,
                                   data_points=live.points_array)
                self.results.put((job, measured))
                if self._stopping.wait(MEASURER_REST * (time.perf_counter() - started)):
                    return
            except MeasureCancelled:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which raises it on its thread
                self.results.put(exc)
                return


class LivePlayground:
    def __init__(self, scenario: Scenario, names: list[str], grid: Grid = LIVE_GRID):
        self.scenario, self.grid = scenario, grid
        self.toy = TOYS.get(scenario.toy) if scenario.toy else None
        self.points_array = scenario.data()
        self.points = torch.as_tensor(self.points_array, dtype=torch.float32)
        self.target = data_density(grid, self.toy if self.toy is not None else self.points_array, scenario.seed)
        self.knobs = {name: dict(scenario.families.get(name, {})) for name in names}
        self.trained = {name: self._fresh(name) for name in names}

    def _fresh(self, name: str, generation: int = 0) -> _Trained:
        seed = self.scenario.seed
        family = create_plane_family(name, self.knobs[name], seed)
        return _Trained(family, torch.Generator().manual_seed(seed), generation)

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

    def view(self, name: str, running: bool, own_view: bool = False, field_time: float = 0.5) -> FamilyView:
        """The family now; with own_view, its own view computed afresh (fields at field_time)."""
        trained = self.trained[name]
        family = trained.family
        samples = family.live_samples(VIEW_SAMPLES, self.scenario.seed)
        extra = extra_view(family, self.grid, self.points_array, field_time) if own_view else None
        return FamilyView(name, family.title, trained.steps, trained.train_seconds, running, samples,
                          sample_image(samples), trained.measured, tuple(trained.history), dict(trained.figures), extra,
                          family.latent)

    def _next_job(self, measure_every: float) -> _Job | None:
        """The family whose measurement is oldest among those trained since it and not measured
        in the last measure_every seconds; None if none is."""
        now = time.perf_counter()
        due = [(trained.measured_wall, name) for name, trained in self.trained.items()
               if trained.steps != trained.measured_steps and now - trained.measured_wall >= measure_every]
        if not due:
            return None
        name = min(due)[1]
        trained = self.trained[name]
        trained.measured_wall = now
        return _Job(name, trained.generation, copy.deepcopy(trained.family), trained.steps, trained.train_seconds)

    def _take_measurement(self, job: _Job, measured: Measured) -> bool:
        """Attach a finished measurement to its family; False if the family was reset since."""
        trained = self.trained.get(job.name)
        if trained is None or trained.generation != job.generation:
            return False
        trained.measured, trained.measured_steps = measured, job.steps
        covered = None if measured.coverage is None else measured.coverage.covered
        trained.history.append(FitRecord(job.train_seconds, job.steps, measured.kl, covered))
        return True

    def run(self, control: PlaygroundControl, emit: Callable[[FamilyView], None], *, slice_seconds: float = 0.02,
            round_seconds: float = 0.02, view_interval: float = 0.05, measure_every: float = 1.0) -> None:
        """Until control.stop(): the running families train in turn, each for at least a step
        and min(slice_seconds, round_seconds / their number), aiming at a round of all seven,
        views included, every tenth of a second (docs/playground.md has what it reaches); a
        family's view goes out at most every view_interval seconds. Beside it a measurer
        thread measures a copy of one family at a time, the one measured longest ago among
        those changed since (at most every measure_every seconds each); each finished
        measurement goes out with a fresh view. A family paused, stepped or reset is shown at
        once; with nothing to do the loop sleeps until asked.

        The loop and the measurer each run their operations on one thread (the calling thread's
        setting only): small MLPs gain nothing from a second, and two each would oversubscribe
        two cores."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        measurer = _Measurer(self)
        measurer.start()
        try:
            self._run(control, emit, measurer, slice_seconds, round_seconds, view_interval, measure_every)
        finally:
            measurer.stop()
            torch.set_num_threads(threads)

    def _run(self, control: PlaygroundControl, emit: Callable[[FamilyView], None], measurer: _Measurer,
             slice_seconds: float, round_seconds: float, view_interval: float, measure_every: float) -> None:
        for name in self.trained:
            emit(self.view(name, False))   # samples at once; each density follows from the measurer
        was_running: set[str] = set()
        was_own: set[str] = set()
        was_field_time = control.field_time
        while not control.stopped:
            running, steps, resets = control.take()
            own, field_time = control.own_views, control.field_time

            def send(name: str, running: set[str] = running, own: set[str] = own, t: float = field_time) -> None:
                emit(self.view(name, name in running, name in own, t))   # as asked at the top of this round

            while not measurer.results.empty():
                result = measurer.results.get()
                if isinstance(result, BaseException):
                    raise result
                measurer.in_flight = None
                if self._take_measurement(*result):
                    send(result[0].name)
            # Paused, its own view switched, or that view's t moved: the panel shows it at once.
            changed = (was_running - running) | (was_own ^ own) | (own if field_time != was_field_time else set())
            for name in changed & set(self.trained):
                send(name)
            was_running, was_own, was_field_time = running, own, field_time
            for name, knobs in resets.items():
                if name not in self.trained:
                    continue
                if knobs is not None:
                    self.knobs[name] = dict(knobs)
                self.trained[name] = self._fresh(name, self.trained[name].generation + 1)
                send(name)
            if measurer.in_flight is None and (job := self._next_job(measure_every)):
                measurer.submit(job)
            active = [name for name in self.trained if name in running or steps[name]]
            if not active:
                control.wait(0.05 if measurer.in_flight is not None else 0.5)
                continue
            share = min(slice_seconds, round_seconds / len(active))
            for name in active:
                trained = self.trained[name]
                self.train(name, share if name in running else 0.0, steps[name])
                now = time.perf_counter()
                if steps[name] or now - trained.viewed_at >= view_interval:
                    trained.viewed_at = now
                    send(name)
                if control.stopped:
                    return
