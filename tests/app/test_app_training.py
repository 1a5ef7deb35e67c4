"""Training from the window: live progress, pause/resume, stop, errors and closing mid-run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from app_helpers import ENDLESS, start_training, wait_idle
from PySide6.QtCore import Qt

from genstudio.app import workers
from genstudio.core.data import load_source
from genstudio.core.families import available_families, family_class
from genstudio.core.families.vae import VAE
from genstudio.core.runs.run import RunDir, TrainSettings, load_run
from genstudio.core.runtime.training import Trainer


def run_dir_of(window) -> Path:
    text = window.training_panel.run_label.text()
    return Path(text.split("Run folder: ", 1)[1].splitlines()[0])


def test_start_shows_progress_curves_and_samples_then_opens_the_gallery(qtbot, window):
    with qtbot.waitSignal(window.training_ended, timeout=60_000) as ended:
        start_training(qtbot, window, steps=40)
    assert ended.args == ["completed"]
    panel = window.training_panel
    assert panel.progress.value() == panel.progress.maximum() == 40
    assert panel.progress.text() == "step 40 / 40"
    assert "images/s" in panel.speed_label.text()
    assert panel.eta_label.text() == ""  # nothing left to wait for
    plot = window.metrics_plot
    assert plot.shown_metrics() == ["bpd"]
    qtbot.waitUntil(lambda: len(plot.curve_data("bpd")[0]) == 4)  # logged every 10 steps
    assert set(plot.metric_names()) >= {"loss", "bpd", "kl", "elbo_bpd", "iwae_bpd"}
    assert panel.likelihood_label.text().startswith("On 256 held-out images: elbo ")
    assert "iwae" in panel.likelihood_label.text() and "bits/dim" in panel.likelihood_label.text()
    assert window.latest_samples.image() is not None
    assert "step 40" in window.latest_caption.text()
    # The finished run is loaded into the gallery and sampled.
    qtbot.waitUntil(lambda: window.gallery.samples is not None, timeout=30_000)
    assert window.gallery.tiles.count() == 36
    assert load_run(run_dir_of(window)).step == 40
    assert panel.state == "idle" and panel.start_button.isEnabled()


def test_continue_run_trains_the_open_run_further_in_its_own_folder(qtbot, window):
    with qtbot.waitSignal(window.training_ended, timeout=60_000):
        start_training(qtbot, window, steps=20)
    run = run_dir_of(window)
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == run, timeout=30_000)
    panel = window.training_panel
    assert panel.continue_button.isEnabled()
    runs_before = set(run.parent.iterdir())
    # Steps not above the run's own: said, and nothing starts.
    panel.steps_spin.setValue(20)
    qtbot.mouseClick(panel.continue_button, Qt.MouseButton.LeftButton)
    assert window.training is None
    assert "at step 20" in panel.error_label.text()
    # Another family and batch picked meanwhile: the run trains as it was made, and the form
    # says so; how often it samples comes from the form (it sampled every 10 steps).
    window.family_picker.select("gan")
    panel.set_values(steps=40, batch=32, sample_every=5)
    with qtbot.waitSignal(window.training_ended, timeout=60_000) as ended:
        qtbot.mouseClick(panel.continue_button, Qt.MouseButton.LeftButton)
        assert window.training is not None and window.training.worker.resume
        assert window.family_picker.current() == "vae"
        assert panel.values()["family_config"] == dataclasses.asdict(load_run(run).family.config)
        assert (panel.values()["batch"], panel.values()["sample_every"]) == (16, 5)
        assert not panel.continue_button.isEnabled()
        qtbot.waitUntil(lambda: len(window.metrics_plot.curve_data("bpd")[0]) >= 2)  # the history first
    assert ended.args == ["completed"]
    assert run_dir_of(window) == run
    assert load_run(run).step == 40
    assert [r["step"] for r in RunDir(run).read_metrics() if "loss" in r] == [10, 20, 30, 40]
    assert set(run.parent.iterdir()) == runs_before  # no new run folder
    assert sorted(int(p.stem.split("_")[1]) for p in (run / "samples").glob("step_*.png")) == [10, 20, 25, 30, 35, 40]
    assert load_run(run).settings.batch == 16
    assert {10, 20, 30, 40} <= set(window.metrics_plot.curve_data("bpd")[0].tolist())
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.step == 40, timeout=30_000)
    assert panel.continue_button.isEnabled()


@pytest.mark.parametrize("family", available_families())
def test_every_knob_survives_config_json_and_continue(qtbot, window, tmp_path, dataset_cache, family):
    # A GAN's "Adam betas" (a tuple field) once came back from config.json as [] and disabled Start.
    run = tmp_path / f"{family}-run"
    settings = TrainSettings(family=family, data="builtin:shapes", size=8, steps=1, batch=4,
                             family_config=dict(family_class(family).TINY), sample_every=0,
                             checkpoint_every=0, eval_images=0)
    for _event in Trainer(settings, str(run), dataset=load_source("builtin:shapes", 8, cache_dir=dataset_cache)).run():
        pass
    window.ask_run_folder = lambda: str(run)
    window.gallery.count_spin.setValue(1)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == run, timeout=30_000)
    panel = window.training_panel
    panel.steps_spin.setValue(2)
    with qtbot.waitSignal(window.training_ended, timeout=60_000):
        qtbot.mouseClick(panel.continue_button, Qt.MouseButton.LeftButton)
    assert panel.config_form.invalid_fields() == []
    assert panel.values()["family_config"] == dataclasses.asdict(load_run(run).family.config)
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.step == 2, timeout=30_000)
    assert panel.start_button.isEnabled() and panel.continue_button.isEnabled()


def test_pause_holds_the_step_and_resume_continues(qtbot, window):
    start_training(qtbot, window, steps=ENDLESS)
    panel = window.training_panel
    qtbot.waitUntil(lambda: panel.progress.value() >= 20, timeout=30_000)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert panel.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: window.training and _loop_is_paused(window), timeout=10_000)
    held = panel.progress.value()
    qtbot.wait(500)
    assert panel.progress.value() == held
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    assert panel.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: panel.progress.value() > held, timeout=30_000)
    window.stop_training()
    wait_idle(qtbot, window)


def _loop_is_paused(window) -> bool:
    # The status bar reports the pause at once; the loop confirms with a PauseChanged event,
    # after which no more steps are logged. Every queued event before it has been delivered.
    return window.training_panel.state == "paused" and window.training.control.paused


def test_stop_saves_a_loadable_checkpoint_and_save_now_works(qtbot, window):
    start_training(qtbot, window, steps=ENDLESS, checkpoint_every=0)
    panel = window.training_panel
    qtbot.waitUntil(lambda: panel.progress.value() >= 10, timeout=30_000)
    qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Saved checkpoint" in window.statusBar().currentMessage(), timeout=30_000)
    messages = []
    window.statusBar().messageChanged.connect(messages.append)
    with qtbot.waitSignal(window.training_ended, timeout=30_000) as ended:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        assert panel.state == "stopping"
    assert ended.args == ["stopped"]
    # The loop's Stopping event reached the window: it says at which step training ended.
    stopped = [m for m in messages if m.startswith("Stopped at step ")]
    assert stopped and "saving a checkpoint" in stopped[0]
    assert any(m.startswith("Saved checkpoint") and "drawing the last samples" in m for m in messages)
    run = run_dir_of(window)
    assert (run / "checkpoint.safetensors").is_file()
    loaded = load_run(run)
    assert 10 <= loaded.step < ENDLESS
    # The bar shows the step the checkpoint holds, not the last one logged; no ETA, and the
    # speed says it is past.
    assert panel.progress.value() == loaded.step
    assert panel.speed_label.text().startswith("trained at ") and panel.eta_label.text() == ""
    qtbot.waitUntil(lambda: window.gallery.samples is not None, timeout=30_000)
    assert window.gallery.samples.loaded.step == loaded.step


def test_a_training_error_is_shown_with_its_cause(qtbot, window, monkeypatch):
    def explode(self, x, labels, generator):
        raise RuntimeError("gradients exploded on purpose")

    monkeypatch.setattr(VAE, "train_step", explode)
    with qtbot.waitSignal(window.training_ended, timeout=30_000) as ended:
        start_training(qtbot, window)
    assert ended.args == ["failed"]
    error = window.training_panel.error_label
    assert error.isVisible()
    assert "gradients exploded on purpose" in error.text() and "RuntimeError" in error.text()
    assert "gradients exploded" in window.statusBar().currentMessage()
    box = window.training_panel.show_error_details()
    assert "Traceback" in box.detailedText() and "explode" in box.detailedText()
    box.close()
    assert window.training is None  # the failed training thread was joined
    # A superseded dataset preview may still be finishing under load; it must end too.
    qtbot.waitUntil(lambda: not workers.running_threads(), timeout=20_000)
    assert window.training_panel.state == "idle"
    assert window.training_panel.start_button.isEnabled()


def test_a_bad_setting_is_reported_not_raised(qtbot, window):
    window.training_panel.set_values(family_config={"latent_dim": 4, "base_channels": 8})
    window.training_panel.device_combo.setCurrentText("mps")  # not on this machine
    with qtbot.waitSignal(window.training_ended, timeout=30_000) as ended:
        qtbot.mouseClick(window.training_panel.start_button, Qt.MouseButton.LeftButton)
    assert ended.args == ["failed"]
    assert "MPS" in window.training_panel.error_label.text()


@pytest.mark.parametrize("when", ["running", "paused"])
def test_closing_mid_training_stops_saves_and_leaves_no_thread(qtbot, window, when):
    start_training(qtbot, window, steps=ENDLESS)
    qtbot.waitUntil(lambda: window.training_panel.progress.value() >= 10, timeout=30_000)
    if when == "paused":
        window.toggle_pause()
    run = run_dir_of(window)
    window.close()
    assert window.isVisible()  # still saving: the close waits for the worker
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    assert not workers.running_threads()
    assert load_run(run).step >= 10


def test_evaluations_during_training_are_plotted_live(qtbot, window):
    panel = window.training_panel
    panel.quality_check.setChecked(True)
    with qtbot.waitSignal(window.training_ended, timeout=90_000) as ended:
        start_training(qtbot, window, steps=40, eval_every=20)
    assert ended.args == ["completed"]
    plot = window.metrics_plot
    qtbot.waitUntil(lambda: "fid" in plot.metric_names(), timeout=10_000)
    steps, values = plot.history("eval_bpd")
    assert steps == [20, 40] and all(0 < v < 16 for v in values)
    assert plot.history("fid")[0] == [20, 40]
    text = panel.likelihood_label.text()
    assert text.startswith("On 256 held-out images:") and "FID" in text and "random-conv-v1" in text
    assert "per-pixel baseline" in text  # the final evaluation scores the floor too


def test_a_multi_process_run_is_launched_with_torchrun_and_followed(qtbot, window):
    """Processes = 2: torchrun trains (gloo, 2 CPU processes); the window shows its progress
    and curves, offers Stop but not Pause / Sample now / Save now, and opens the run after."""
    panel = window.training_panel
    panel.processes_spin.setValue(2)
    start_training(qtbot, window, steps=ENDLESS, checkpoint_every=0, sample_every=0)
    assert isinstance(window.training.worker, workers.LaunchedTrainingWorker)
    qtbot.waitUntil(lambda: panel.progress.value() >= 20, timeout=60_000)
    assert "2 processes (torchrun)" in panel.run_label.text()
    qtbot.waitUntil(lambda: len(window.metrics_plot.curve_data("bpd")[0]) >= 2, timeout=10_000)
    assert panel.stop_button.isEnabled()
    assert not any(b.isEnabled() for b in (panel.pause_button, panel.sample_button, panel.save_button))
    window.toggle_pause()  # the shortcut's path: nothing happens
    assert panel.state == "running"
    with qtbot.waitSignal(window.training_ended, timeout=60_000) as ended:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert ended.args == ["stopped"]
    loaded = load_run(run_dir_of(window))
    assert 20 <= loaded.step < ENDLESS
    qtbot.waitUntil(lambda: window.gallery.samples is not None, timeout=30_000)
    assert window.gallery.samples.loaded.step == loaded.step


def test_a_batch_that_cannot_be_split_between_processes_is_refused_before_launch(qtbot, window):
    window.training_panel.processes_spin.setValue(2)
    window.training_panel.set_values(**{"batch": 15, "steps": 10})
    qtbot.waitUntil(window.training_panel.start_button.isEnabled, timeout=10_000)
    window.start_training()
    assert window.training is None
    assert "multiple of the number of processes" in window.training_panel.error_label.text()


def test_a_run_still_opening_when_training_starts_is_dropped(qtbot, window, trained_run):
    """At launch the window opens the pretrained default in the background; pressing Start
    before it arrives must not mix that run into the new one's curves, label and panels."""
    window.open_run(str(trained_run))
    start_training(qtbot, window, steps=ENDLESS)
    assert not window.pretrained_menu.isEnabled() and not window.open_action.isEnabled()
    qtbot.waitUntil(lambda: not window.run_jobs.is_busy(), timeout=30_000)
    qtbot.wait(100)  # a dropped result would have been delivered by now
    assert window.loaded is None
    assert str(trained_run) not in window.training_panel.run_label.text()
    window.stop_training()
    wait_idle(qtbot, window)


def test_a_time_limit_on_the_train_tab_ends_the_run_and_shows_time_as_progress(qtbot, window):
    panel = window.training_panel
    seen = []
    window.training_panel.progress.valueChanged.connect(lambda value: seen.append(panel.progress.text()))
    with qtbot.waitSignal(window.training_ended, timeout=60_000) as ended:
        start_training(qtbot, window, steps=1_000_000, minutes=0.03, sample_every=0)
    assert ended.args == ["time limit reached"]
    assert any(text.startswith("step ") and text.endswith("%") for text in seen)  # step N · P%
    assert panel.progress.value() == panel.progress.maximum()
    run = run_dir_of(window)
    settings = RunDir(run).read_settings()
    assert settings.minutes == 0.03 and settings.steps == 1_000_000
    assert 0 < load_run(run, "cpu").step < 1_000_000
    wait_idle(qtbot, window)  # the finished run opens in the gallery


# -- one run on the tab, and Stop that leaves the window usable ---------------------------------


@pytest.fixture
def slow_final_grid(monkeypatch):
    """The end-of-run grid waits until it is cut short (Skip, a new start, closing): the work
    after a Stop that used to hold the window for ~50 s, made as long as a test needs."""
    from genstudio.core.runtime.training import Trainer

    real = Trainer.sample_grid

    def sample_grid(self, cancel=None, progress=None):
        if progress is not None:
            progress(1, 4)  # one of the sampler's four steps done, then it waits
        while cancel is not None and not cancel():
            time.sleep(0.01)
        return real(self, cancel)

    monkeypatch.setattr(Trainer, "sample_grid", sample_grid)


def stop_into_finishing(qtbot, window) -> Path:
    start_training(qtbot, window, steps=ENDLESS, sample_every=0)
    panel = window.training_panel
    qtbot.waitUntil(lambda: window.run_view.step >= 10, timeout=30_000)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.state == "finishing", timeout=30_000)
    return run_dir_of(window)


def test_after_stop_the_end_of_run_work_is_shown_and_skip_ends_it(qtbot, window, slow_final_grid):
    run = stop_into_finishing(qtbot, window)
    panel = window.training_panel
    assert load_run(run).step >= 10  # saved before the end-of-run work
    assert panel.stop_button.text() == "Skip" and panel.stop_button.isEnabled()
    qtbot.waitUntil(lambda: panel.progress.format().endswith(" saved · 1/4"), timeout=10_000)
    assert (panel.progress.value(), panel.progress.maximum()) == (1, 4)
    assert panel.speed_label.text() == "Drawing the final samples…"
    assert panel.start_button.isEnabled() and window.family_picker.isEnabled() and window.open_action.isEnabled()
    with qtbot.waitSignal(window.training_ended, timeout=10_000) as ended:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert ended.args == ["stopped"]
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == run, timeout=30_000)


def test_start_while_a_stopped_run_finishes_skips_its_end_and_starts_at_once(qtbot, window, slow_final_grid):
    first = stop_into_finishing(qtbot, window)
    panel = window.training_panel
    with qtbot.waitSignal(window.training_ended, timeout=10_000):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.training is not None and panel.state == "running", timeout=30_000)
    assert run_dir_of(window) != first  # a new run, not the stopped one reopened
    assert not panel.speed_label.text().startswith("trained at")  # nothing of the last run shown
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)  # its own end: stop, then skip
    qtbot.waitUntil(lambda: panel.state == "finishing", timeout=30_000)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)


def test_the_tab_shows_only_the_run_just_opened(qtbot, window, trained_run):
    with qtbot.waitSignal(window.training_ended, timeout=60_000):
        start_training(qtbot, window, steps=20)
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.step == 20, timeout=30_000)
    panel = window.training_panel
    assert "images/s" in panel.speed_label.text() and window.latest_samples.image() is not None
    window.family_picker.select("gan")
    window.ask_run_folder = lambda: str(trained_run)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == trained_run, timeout=30_000)
    assert run_dir_of(window) == trained_run
    assert panel.speed_label.text() == "" and panel.eta_label.text() == ""  # none of the last run's
    assert "step 30" in window.latest_caption.text()  # the opened run's own newest grid
    records = [r for r in RunDir(trained_run).read_metrics() if "reference_images" in r]
    assert records and panel.likelihood_label.text().startswith(f"On {records[-1]['reference_images']} ")
    assert window.family_picker.current() == "vae" and panel.conditional_check.isChecked()
    assert window.dataset_panel.request().source == "builtin:shapes"
    assert panel.progress.value() == 30


def test_continue_shows_the_runs_own_data_in_the_dataset_box(qtbot, window, image_folder, tmp_path):
    run = tmp_path / "folder-run"
    settings = TrainSettings(data=str(image_folder), size=8, steps=2, batch=2, sample_every=0, checkpoint_every=0,
                             eval_images=0, family_config={"base_channels": 4, "latent_dim": 2})
    for _event in Trainer(settings, str(run)).run():
        pass
    window.ask_run_folder = lambda: str(run)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == run, timeout=30_000)
    assert window.dataset_panel.request().source == str(image_folder)  # opening shows it
    window.dataset_panel.set_request("builtin:shapes", 16, None)  # the person looks elsewhere …
    window.dataset_panel.request_load()
    window.training_panel.steps_spin.setValue(4)
    with qtbot.waitSignal(window.training_ended, timeout=60_000):
        qtbot.mouseClick(window.training_panel.continue_button, Qt.MouseButton.LeftButton)
        request = window.dataset_panel.request()  # … but what trains is the run's own data
        assert (request.source, request.size) == (str(image_folder), 8)
        assert f"Data: {image_folder}" in window.training_panel.run_label.text()
    assert load_run(run).step == 4
