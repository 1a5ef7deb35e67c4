"""What the Train tab shows, all of it about one run: the one training now, or the one open.

The window replaces the whole RunView when another run takes the tab (a start, a Continue, a run
opened), so nothing of the previous run (its speed, ETA, held-out summary, latest grid, folder)
can stay beside the new one; as the run's events arrive it changes fields of the current view,
and the training panel and the latest-samples box draw it. No Qt here: it is plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

    def stopped_at(self, step: int) -> None:
        """Stop took effect at `step` (the checkpoint's): no ETA belongs to what follows."""
        self.phase, self.step, self.eta_seconds = STOPPING, step, None

    def finished(self, step: int) -> None:
        self.step, self.ended, self.finishing, self.eta_seconds = step, True, "", None
        self.finishing_done = (0, 0)
