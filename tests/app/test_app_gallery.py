"""Opening a run, regenerating samples (reproducibly, newest only), enlarging and exporting."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox

from genstudio.core.runs.images import read_png_metadata


@pytest.fixture
def opened(qtbot, window, trained_run):
    """The window with the session's trained run opened through File → Open run…"""
    window.ask_run_folder = lambda: str(trained_run)
    with qtbot.waitSignal(window.sample_jobs.succeeded, timeout=30_000):
        window.open_action.trigger()
    return window


def regenerate(qtbot, window, seed: int) -> np.ndarray:
    window.gallery.seed_spin.setValue(seed)
    with qtbot.waitSignal(window.sample_jobs.succeeded, timeout=30_000):
        qtbot.mouseClick(window.gallery.regenerate_button, Qt.MouseButton.LeftButton)
    return window.gallery.samples.images.copy()


def test_open_run_fills_the_gallery_and_the_plot_history(opened, trained_run):
    gallery = opened.gallery
    assert gallery.tiles.count() == 36
    assert gallery.samples.images.shape == (36, 16, 16, 3)
    assert trained_run.name in gallery.caption.text()
    assert opened.loaded.step == 30
    assert opened.metrics_plot.shown_metrics() == ["bpd"]
    steps, values = opened.metrics_plot.curve_data("bpd")
    assert list(steps) == [10, 20, 30] and np.isfinite(values).all()
    assert str(trained_run) in opened.statusBar().currentMessage()


def test_the_same_seed_gives_the_same_pixels(qtbot, opened):
    first = regenerate(qtbot, opened, seed=7)
    again = regenerate(qtbot, opened, seed=7)
    other = regenerate(qtbot, opened, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert "seed 8" in opened.gallery.caption.text()


def test_only_the_newest_request_is_shown(qtbot, opened):
    received = []
    opened.sample_jobs.succeeded.connect(received.append)
    gallery = opened.gallery
    for seed in (1, 2, 3):
        gallery.seed_spin.setValue(seed)
        gallery.regenerate()
    qtbot.waitUntil(lambda: not opened.sample_jobs.is_busy(), timeout=30_000)
    assert [samples.seed for samples in received] == [3]
    assert gallery.samples.seed == 3


def test_class_combo_conditions_the_samples(qtbot, opened):
    combo = opened.gallery.class_combo
    assert combo.isVisibleTo(opened.gallery)
    assert [combo.itemText(i) for i in range(combo.count())][1:] == ["circle", "square", "triangle"]
    combo.setCurrentIndex(combo.findText("square"))
    regenerate(qtbot, opened, seed=0)
    assert opened.gallery.samples.label == 1


def test_enter_in_the_seed_or_count_and_ctrl_r_regenerate(qtbot, opened):
    gallery = opened.gallery
    opened.tabs.setCurrentWidget(gallery)
    gallery.seed_spin.setFocus()
    gallery.seed_spin.lineEdit().selectAll()
    qtbot.keyClicks(gallery.seed_spin.lineEdit(), "77")
    with qtbot.waitSignal(opened.sample_jobs.succeeded, timeout=30_000):
        qtbot.keyClick(gallery.seed_spin.lineEdit(), Qt.Key.Key_Return)
    assert gallery.samples.seed == 77
    gallery.count_spin.setFocus()
    gallery.count_spin.lineEdit().selectAll()
    qtbot.keyClicks(gallery.count_spin.lineEdit(), "5")
    with qtbot.waitSignal(opened.sample_jobs.succeeded, timeout=30_000):
        qtbot.keyClick(gallery.count_spin.lineEdit(), Qt.Key.Key_Enter)
    assert gallery.tiles.count() == 5
    gallery.seed_spin.setValue(78)
    with qtbot.waitSignal(opened.sample_jobs.succeeded, timeout=30_000):
        qtbot.keyClick(gallery.tiles, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert gallery.samples.seed == 78 and "Ctrl+R" in gallery.regenerate_button.toolTip()


def test_double_click_enlarges_a_tile(qtbot, opened):
    dialog = opened.gallery.enlarge(3)
    assert dialog.isVisible()
    assert dialog.view.image().size() == opened.gallery.samples.tiles[3].size()
    dialog.close()


def wait_exported(qtbot, window, action):
    with qtbot.waitSignal(window.export_jobs.succeeded, timeout=30_000) as blocker:
        action()
    return blocker.args[0]


def test_export_selected_all_and_grid_write_pngs_with_provenance(qtbot, opened, tmp_path, trained_run):
    gallery = opened.gallery
    gallery.tiles.item(0).setSelected(True)
    gallery.tiles.item(5).setSelected(True)
    gallery.ask_folder = lambda: str(tmp_path / "picked")
    paths = wait_exported(qtbot, opened, lambda: qtbot.mouseClick(
        gallery.export_selected_button, Qt.MouseButton.LeftButton))
    seed = gallery.samples.seed
    assert sorted(p.name for p in paths) == [f"{trained_run.name}-seed{seed}-{i:04d}.png" for i in (0, 5)]
    meta = read_png_metadata(paths[1])
    assert meta["family"] == "vae" and meta["run"] == trained_run.name
    assert meta["step"] == "30" and meta["seed"] == str(gallery.samples.seed)
    assert meta["index"] == "5"
    with Image.open(paths[1]) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), gallery.samples.images[5])

    everything = wait_exported(qtbot, opened, lambda: gallery.export_all(str(tmp_path / "all")))
    assert len(everything) == 36 and all(p.is_file() for p in everything)
    # Into the same folder again: the first export stays, and the status bar says so.
    before = {p: p.read_bytes() for p in everything}
    again = wait_exported(qtbot, opened, lambda: gallery.export_all(str(tmp_path / "all")))
    assert {p.name for p in again} == {p.name.replace(".png", "-2.png") for p in everything}
    assert all(p.read_bytes() == data for p, data in before.items())
    assert "36 named -2, -3, … beside files already there (nothing replaced)" in opened.statusBar().currentMessage()

    gallery.tiles.clearSelection()
    gallery.ask_grid_file = lambda: str(tmp_path / "grid.png")
    (grid,) = wait_exported(qtbot, opened, lambda: qtbot.mouseClick(
        gallery.export_grid_button, Qt.MouseButton.LeftButton))
    assert read_png_metadata(grid)["count"] == "36"
    assert "Exported" in opened.statusBar().currentMessage()


def test_a_folder_that_is_not_a_run_is_reported(qtbot, window, tmp_path):
    window.ask_run_folder = lambda: str(tmp_path)
    with qtbot.waitSignal(window.run_jobs.failed, timeout=30_000):
        window.open_action.trigger()
    assert "not a genstudio run" in window.statusBar().currentMessage()
    assert window.gallery.samples is None


def test_file_export_writes_every_sample(qtbot, opened, tmp_path):
    opened.gallery.ask_folder = lambda: str(tmp_path / "menu")
    paths = wait_exported(qtbot, opened, opened.export_action.trigger)
    assert len(paths) == 36


# -- a family with sampling options and a slow sampler (diffusion) ---------------------------


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory, dataset_cache):
    """A tiny diffusion run with a long chain, so DDPM sampling takes long enough to cancel."""
    from genstudio.core.data import load_source
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime.training import Trainer

    run = tmp_path_factory.mktemp("diffusion") / "run"
    settings = TrainSettings(family="diffusion", data="builtin:shapes", size=16, steps=4, batch=8,
                             family_config={"base_channels": 8, "channel_mults": [1], "timesteps": 3000},
                             sample_every=0, checkpoint_every=0, eval_images=0)
    dataset = load_source("builtin:shapes", 16, cache_dir=dataset_cache)
    for _event in Trainer(settings, str(run), dataset=dataset).run():
        pass
    return run


@pytest.fixture
def diffusion_opened(qtbot, window, diffusion_run):
    window.gallery.count_spin.setValue(4)
    window.ask_run_folder = lambda: str(diffusion_run)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: window.gallery.samples is not None or "c62828" in window.gallery.caption.text(),
                    timeout=60_000)  # samples, or an error shown in red
    assert window.gallery.samples is not None, window.gallery.caption.text()
    return window


def test_sampling_options_come_from_the_family_and_reach_the_sampler(qtbot, diffusion_opened, tmp_path):
    gallery = diffusion_opened.gallery
    assert not gallery.options_box.isHidden()
    assert {"sampler", "steps", "eta"} <= set(gallery.options_form.editors)
    gallery.options_form.set_values({"sampler": "ddim", "steps": 4, "eta": 0.0})
    first = regenerate(qtbot, diffusion_opened, seed=1)
    gallery.options_form.set_values({"steps": 6})
    other_steps = regenerate(qtbot, diffusion_opened, seed=1)
    assert not np.array_equal(first, other_steps)  # the step count reached the sampler
    assert gallery.samples.options == {**gallery.options_form.values()}
    gallery.export_grid(str(tmp_path / "grid.png"))
    qtbot.waitUntil(lambda: (tmp_path / "grid.png").exists(), timeout=10_000)
    assert '"steps": 6' in read_png_metadata(tmp_path / "grid.png")["options"]
    sampler = gallery.options_form.editors["sampler"]  # a Literal field: a drop-down of its choices
    assert isinstance(sampler, QComboBox) and [sampler.itemText(i) for i in range(sampler.count())] == ["ddim", "dpm++2m", "dpm++2m-sde", "ddpm"]
    with pytest.raises(ValueError, match="not one of the choices"):
        gallery.options_form.set_values({"sampler": "euler"})


def test_a_slow_sampler_shows_its_chain_and_can_be_cancelled(qtbot, diffusion_opened):
    gallery = diffusion_opened.gallery
    before = gallery.samples.images.copy()
    gallery.options_form.set_values({"sampler": "ddpm"})
    qtbot.mouseClick(gallery.regenerate_button, Qt.MouseButton.LeftButton)
    assert not gallery.cancel_button.isHidden() and not gallery.regenerate_button.isEnabled()
    qtbot.waitUntil(lambda: gallery.progress_bar.value() > 0, timeout=30_000)
    assert gallery.progress_bar.maximum() == 3000
    assert gallery.stack.currentWidget() is gallery.training_view  # the current x_0 predictions
    assert "step" in gallery.caption.text()
    qtbot.mouseClick(gallery.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelled" in gallery.caption.text() and gallery.regenerate_button.isEnabled()
    qtbot.waitUntil(lambda: not diffusion_opened.sample_jobs.is_busy(), timeout=30_000)
    assert np.array_equal(gallery.samples.images, before)  # the earlier samples are kept
    assert gallery.stack.currentWidget() is gallery.tiles


def test_the_options_form_shows_each_runs_own_values(qtbot):
    from genstudio.app.panels.gallery import Gallery
    from genstudio.core.families.ebm import EBMSampleOptions

    gallery = Gallery()
    qtbot.addWidget(gallery)
    gallery.regenerate = lambda: None  # no window behind this gallery to sample
    gallery.set_run("first", [], EBMSampleOptions(step_size=2.0, noise=0.01))
    assert gallery.options_form.values()["step_size"] == 2.0
    gallery.set_run("second", [], EBMSampleOptions(step_size=5.0, noise=0.0))  # same form, new run
    assert gallery.options_form.values() == {"start": "auto", "steps": 200, "step_size": 5.0, "noise": 0.0}
    gallery.set_run("no knobs", [], None)
    assert gallery.options_box.isHidden()


def test_guidance_is_offered_only_for_a_class_conditional_model(qtbot):
    from genstudio.app.panels.gallery import Gallery
    from genstudio.core.families.diffusion import DiffusionSampleOptions

    gallery = Gallery()
    qtbot.addWidget(gallery)
    gallery.regenerate = lambda: None  # no window behind this gallery to sample
    editors = gallery.options_form.editors
    gallery.set_run("unconditional", [], DiffusionSampleOptions())
    assert editors["guidance"].isHidden() and not editors["steps"].isHidden()
    gallery.set_run("conditional", ["circle", "square"], DiffusionSampleOptions())
    assert not editors["guidance"].isHidden()  # the same form, its row shown again


def test_the_training_form_offers_label_dropout_only_for_a_conditional_run(qtbot, window):
    panel = window.training_panel
    window.family_picker.select("diffusion")
    qtbot.waitUntil(panel.conditional_check.isEnabled, timeout=30_000)  # the shapes have 3 classes
    p_uncond = panel.config_form.editors["p_uncond"]
    assert p_uncond.isHidden()
    panel.conditional_check.setChecked(True)
    assert not p_uncond.isHidden()
    window.family_picker.select("vae")
    window.family_picker.select("diffusion")  # a new form keeps to the box
    assert not panel.config_form.editors["p_uncond"].isHidden()
    window.family_picker.select("gan")  # how the class reaches G and D, likewise
    assert not any(panel.config_form.editors[name].isHidden() for name in ("conditioning", "projection"))
    panel.conditional_check.setChecked(False)
    assert all(panel.config_form.editors[name].isHidden() for name in ("conditioning", "projection"))
