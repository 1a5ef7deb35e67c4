"""What the Train tab shows, all of it about one run: the one training now, or the one open.

The window replaces the whole RunView when another run takes the tab (a start, a Continue, a run
opened), so nothing of the previous run (its speed, ETA, held-out summary, latest grid, folder)
can stay beside the new one. The run's phase moves only through the methods below, one per
training event or request, so the session's state machine is all here and testable without a
window; the window calls them as events arrive, then the training panel and the latest-samples
box draw the view. No Qt here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genstudio.core.metrics.evaluate import describe_evaluation
from genstudio.core.runtime.training import (
    FINAL_SAMPLES,
    CheckpointSaved,
    Evaluated,
    RunStarted,
    SamplesReady,
    StepLogged,
)

# Phases of the run on the tab. FINISHING: stopped and saved, the end-of-run samples and
# evaluation still running (Skip ends them; Start, Continue and Open skip them first).
IDLE, LOADING, RUNNING, PAUSED, STOPPING, FINISHING = "idle", "loading", "running", "paused", "stopping", "finishing"
TRAINING_PHASES = (LOADING, RUNNING, PAUSED, STOPPING, FINISHING)


@dataclass
class RunView:
    phase: str = IDLE
    run_dir: str = ""                 # "" until a run folder exists
    family: str = ""
    data: str = ""                    # the run's own data source
    device: str = ""
    step: int = 0
    total_steps: int = 0
    minutes: float = 0.0              # the run's time limit; 0: none
    done: float | None = None         # share of a time-limited run done (of its steps or time)
    ended: bool = False               # the run has ended: the bar shows where
    images_per_sec: float | None = None
    eta_seconds: float | None = None
    finishing: str = ""               # the end-of-run work under way, e.g. "drawing the final samples"
    finishing_done: tuple[int, int] = (0, 0)  # its (done, total); total 0: no count yet
    likelihood: str = ""              # the last held-out summary (describe_evaluation)
    notices: list[str] = field(default_factory=list)
    latest_grid: np.ndarray | None = None  # (H, W, C) uint8, the newest sample grid
    latest_grid_step: int = 0
    latest_grid_path: str = ""
    loading: tuple[int, int] | None = None  # (done, total) images while the data loads
    launching: int = 0                # processes being started by torchrun (0: none)

    @property
    def training(self) -> bool:
        return self.phase in TRAINING_PHASES

    # -- the session, in the order it goes ---------------------------------------------------
    def starting(self, data: str, minutes: float, processes: int) -> None:
        """A start or Continue: the data and model load (in `processes` torchrun processes
        when more than one, which report no loading progress)."""
        self.phase, self.data, self.minutes = LOADING, data, minutes
        self.launching = processes if processes > 1 else 0
        self.images_per_sec = self.eta_seconds = None  # a continued run's earlier speed is not this one's

    def loaded_images(self, done: int, total: int) -> None:
        self.loading = (done, total)

    def run_started(self, event: RunStarted, paused: bool) -> None:
        if self.phase == LOADING:  # a Pause pressed while it loaded holds
            self.phase = PAUSED if paused else RUNNING
        self.run_dir, self.device, self.step, self.total_steps = (event.run_dir, event.device,
                                                                   event.start_step, event.total_steps)
        self.minutes, self.done, self.loading, self.launching = event.minutes, 0.0, None, 0

    def step_logged(self, event: StepLogged) -> None:
        self.step, self.total_steps, self.done = event.step, event.total_steps, event.done
        self.images_per_sec, self.eta_seconds = event.images_per_sec, event.eta_seconds

    def pause_changed(self, paused: bool) -> None:
        """Pause or Resume asked, or the worker's word on it (the control's state is the truth:
        a queued event may trail a later click)."""
        if self.phase in (RUNNING, PAUSED):
            self.phase = PAUSED if paused else RUNNING

    def stop_asked(self) -> None:
        self.phase = STOPPING

    def stopped_at(self, step: int) -> None:
        """Stop took effect at `step` (the checkpoint's): no ETA belongs to what follows."""
        self.phase, self.step, self.eta_seconds = STOPPING, step, None

    def samples_ready(self, event: SamplesReady) -> None:
        self.latest_grid, self.latest_grid_step, self.latest_grid_path = event.grid, event.step, event.path
        if self.phase == FINISHING:
            self.finishing = "measuring the held-out images"

    def checkpoint_saved(self, event: CheckpointSaved) -> bool:
        """True for the run's last save: the end-of-run samples and evaluation follow."""
        if self.phase == STOPPING or (self.phase == RUNNING and event.step >= self.total_steps):
            self.phase, self.step, self.finishing = FINISHING, event.step, FINAL_SAMPLES
            self.finishing_done, self.eta_seconds = (0, 0), None
            return True
        return False

    def finishing_progress(self, what: str, done: int, total: int) -> None:
        if self.phase == FINISHING:
            self.finishing, self.finishing_done = what, (done, total)

    def evaluated(self, event: Evaluated) -> None:
        self.likelihood = describe_evaluation(event.figures)

    def finished(self, step: int) -> None:
        self.step, self.ended, self.finishing, self.eta_seconds = step, True, "", None
        self.finishing_done = (0, 0)

    def session_ended(self) -> None:
        """The training's thread has ended (finished, stopped, cancelled or failed)."""
        self.phase, self.loading, self.launching, self.finishing = IDLE, None, 0, ""
