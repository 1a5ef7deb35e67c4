"""Faults seen from the window: stop wakes a paused run, and a handled NaN step is shown."""

from __future__ import annotations

import torch
from app_helpers import ENDLESS, start_training
from PySide6.QtCore import Qt

from genstudio.app import workers
from genstudio.core.runs.run import load_run
from genstudio.core.runtime.training import Trainer


def test_stop_wakes_a_paused_run_which_saves_and_joins(qtbot, window):
    start_training(qtbot, window, steps=ENDLESS, checkpoint_every=0)
    panel = window.training_panel
    qtbot.waitUntil(lambda: panel.progress.value() >= 5, timeout=30_000)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.training.control.paused and panel.state == "paused", timeout=10_000)
    with qtbot.waitSignal(window.training_ended, timeout=30_000) as ended:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert ended.args == ["stopped"]
    assert window.training is None  # joined, not left running
    qtbot.waitUntil(lambda: not workers.running_threads(), timeout=20_000)
    run = panel.run_label.text().split("Run folder: ", 1)[1].splitlines()[0]
    assert load_run(run).step >= 5


def test_a_skipped_nan_step_is_shown_to_the_user(qtbot, window, monkeypatch):
    real = Trainer.batch

    def batch(self, step):
        x, labels = real(self, step)
        return (torch.full_like(x, float("nan")) if step == 3 else x), labels

    monkeypatch.setattr(Trainer, "batch", batch)
    with qtbot.waitSignal(window.training_ended, timeout=60_000) as ended:
        start_training(qtbot, window, steps=8)
    assert ended.args == ["completed"]
    notice = window.training_panel.notice_label
    assert notice.isVisible() and notice.text() == (
        "step 4: loss = nan, grad_norm = nan, bpd = nan, recon = nan, kl = nan; "
        "the update was skipped")


def test_opening_a_run_with_a_damaged_checkpoint_opens_the_previous_one_and_says_so(
        qtbot, window, tmp_path, dataset_cache):
    from app_helpers import SIZE, TINY_MODEL

    from genstudio.core.data import load_source
    from genstudio.core.runs.run import TrainSettings

    settings = TrainSettings(data="builtin:shapes", size=SIZE, steps=2, batch=4, device="cpu",
                             family_config=dict(TINY_MODEL), sample_every=0, checkpoint_every=1,
                             grid_samples=1, eval_images=0)
    dataset = load_source(settings.data, SIZE, cache_dir=dataset_cache)
    run = tmp_path / "run"
    list(Trainer(settings, str(run), dataset=dataset).run())
    checkpoint = run / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:50])
    window.open_run(str(run))
    qtbot.waitUntil(lambda: window.loaded is not None and window.loaded.run.path == run,
                    timeout=30_000)
    assert window.loaded.step == 1
    notice = window.training_panel.notice_label
    assert notice.isVisible() and "loaded the previous checkpoint" in notice.text()
