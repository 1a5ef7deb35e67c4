"""The training session's state machine (app/run_view.py RunView), walked without a window: the
phase each event and request leads to, and what the tab then shows."""

import numpy as np

from genstudio.app.run_view import FINISHING, IDLE, LOADING, PAUSED, RUNNING, STOPPING, RunView
from genstudio.core.runtime.training import (
    FINAL_SAMPLES,
    CheckpointSaved,
    RunStarted,
    SamplesReady,
    StepLogged,
)


def started(view: RunView, paused: bool = False, total: int = 100) -> RunView:
    view.starting("builtin:shapes", 0.0, processes=1)
    view.run_started(RunStarted("/runs/a", 0, total, "shapes", "", "cpu", 1000), paused=paused)
    return view


def logged(step: int, total: int = 100) -> StepLogged:
    return StepLogged(step, total, {"loss": 1.0}, images_per_sec=50.0, eta_seconds=9.0,
                      elapsed_seconds=1.0, done=step / total)


def test_a_stopped_run_goes_loading_running_paused_stopping_finishing_idle():
    view = RunView(family="vae", images_per_sec=80.0)  # a continued run's earlier speed
    view.starting("builtin:shapes", 0.0, processes=1)
    assert view.phase == LOADING and view.images_per_sec is None
    view.loaded_images(10, 40)
    assert view.loading == (10, 40)
    view.run_started(RunStarted("/runs/a", 0, 100, "shapes", "", "cpu", 1000), paused=False)
    assert view.phase == RUNNING and view.loading is None and view.run_dir == "/runs/a"
    view.step_logged(logged(10))
    assert (view.step, view.images_per_sec, view.eta_seconds) == (10, 50.0, 9.0)
    view.pause_changed(True)
    assert view.phase == PAUSED
    view.pause_changed(False)
    assert view.phase == RUNNING
    assert not view.checkpoint_saved(CheckpointSaved(10, "/runs/a/checkpoint"))  # mid-run save
    assert view.phase == RUNNING
    view.stop_asked()
    assert view.phase == STOPPING
    view.pause_changed(True)  # a pause event trailing the Stop changes nothing
    assert view.phase == STOPPING
    view.stopped_at(12)
    assert (view.phase, view.step, view.eta_seconds) == (STOPPING, 12, None)
    assert view.checkpoint_saved(CheckpointSaved(12, "/runs/a/checkpoint"))  # the last save
    assert (view.phase, view.finishing) == (FINISHING, FINAL_SAMPLES)
    view.finishing_progress(FINAL_SAMPLES, 3, 25)
    assert view.finishing_done == (3, 25)
    grid = np.zeros((4, 4, 3), np.uint8)
    view.samples_ready(SamplesReady(12, grid, "/runs/a/samples/step-12.png"))
    assert view.latest_grid is grid and view.finishing == "measuring the held-out images"
    view.finished(12)
    assert view.ended and view.finishing == "" and view.phase == FINISHING
    view.session_ended()
    assert view.phase == IDLE and view.step == 12 and view.latest_grid is grid  # the run stays shown


def test_a_pause_pressed_while_loading_holds_when_the_run_starts():
    view = started(RunView(), paused=True)
    assert view.phase == PAUSED


def test_a_run_that_completes_finishes_at_its_last_save_and_a_grid_mid_run_changes_no_phase():
    view = started(RunView(), total=20)
    view.samples_ready(SamplesReady(10, np.zeros((2, 2, 3), np.uint8), "p"))
    assert view.phase == RUNNING and view.finishing == ""
    view.step_logged(logged(20, total=20))
    assert view.checkpoint_saved(CheckpointSaved(20, "c"))
    assert view.phase == FINISHING and view.eta_seconds is None


def test_progress_outside_the_end_of_run_work_is_ignored():
    view = started(RunView())
    view.finishing_progress("measuring", 1, 2)
    assert view.finishing == "" and view.finishing_done == (0, 0)


def test_a_torchrun_start_counts_its_processes_until_the_run_starts():
    view = RunView()
    view.starting("builtin:shapes", 5.0, processes=4)
    assert view.launching == 4 and view.minutes == 5.0
    view.run_started(RunStarted("/runs/b", 0, 100, "shapes", "", "cpu, 4 processes", 10, 5.0), paused=False)
    assert view.launching == 0
