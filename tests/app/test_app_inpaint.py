"""The Inpaint tab, driven like a user: paint with the mouse, undo and redo with the keys,
rectangle / eraser / invert / clear, zoom, fill with seeded candidates (known pixels exact),
continue from one, cancel, compare families, export with provenance."""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import SIZE
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt

from genstudio.core.runs.images import read_png_metadata
from genstudio.core.trained.inpainting import load_mask
from genstudio.core.trained.masks import MaskHistory


@pytest.fixture
def inpaint(qtbot, window, trained_run):
    """The trained tiny conditional VAE opened on the Inpaint tab, with training image #3 on
    the canvas."""
    window.ask_run_folder = lambda: str(trained_run)
    window.gallery.count_spin.setValue(1)
    with qtbot.waitSignal(window.sample_jobs.succeeded, timeout=30_000):
        window.open_action.trigger()
    window.tabs.setCurrentWidget(window.inpaint)
    panel = window.inpaint
    panel.dataset_spin.setValue(3)
    qtbot.mouseClick(panel.dataset_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.session.image is not None, timeout=30_000)
    return panel


def screen(panel, x: float, y: float) -> QPoint:
    """The canvas's widget position of model point (x, y)."""
    return panel.canvas.from_model(x, y).toPoint()


def drag(qtbot, panel, points, button=Qt.MouseButton.LeftButton) -> None:
    canvas = panel.canvas
    qtbot.mousePress(canvas, button, pos=screen(panel, *points[0]))
    for point in points[1:]:
        qtbot.mouseMove(canvas, screen(panel, *point))
    qtbot.mouseRelease(canvas, button, pos=screen(panel, *points[-1]))


def test_the_image_is_the_training_image_at_the_models_resolution(inpaint):
    assert inpaint.session.image.shape == (SIZE, SIZE, 3)
    assert np.array_equal(inpaint.session.image, inpaint.dataset.images[3])
    assert inpaint.original_view.image().size().width() == SIZE
    assert "Method: Latent optimisation" in inpaint.method_label.text()
    assert not inpaint.fill_button.isEnabled()  # nothing painted yet


def test_painting_with_the_mouse_then_undo_and_redo_with_the_keys(qtbot, inpaint):
    inpaint.size_spin.setValue(1)
    drag(qtbot, inpaint, [(2.5, 8.5), (6.5, 8.5), (12.5, 8.5)])  # one stroke along row 8
    mask = inpaint.mask()
    assert mask[8, 2:13].all() and mask.sum() < 3 * 11 + 10
    assert "To fill:" in inpaint.canvas_label.text()
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_BracketRight)  # radius 2
    assert inpaint.size_spin.value() == 2
    drag(qtbot, inpaint, [(8.5, 2.5), (8.5, 3.5)])
    two_strokes = inpaint.mask()
    assert two_strokes.sum() > mask.sum()
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(inpaint.mask(), mask)  # one stroke, one undo
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not inpaint.mask().any() and not inpaint.undo_button.isEnabled()
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(inpaint.mask(), two_strokes)
    assert not inpaint.redo_button.isEnabled()


def test_rectangle_eraser_invert_and_clear(qtbot, inpaint):
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_R)
    assert inpaint.tool_buttons["rectangle"].isChecked()
    drag(qtbot, inpaint, [(4.2, 4.2), (9.0, 6.0), (11.8, 9.8)])
    expected = np.zeros((SIZE, SIZE), bool)
    expected[4:10, 4:12] = True  # pixels whose centres lie inside the dragged rectangle
    assert np.array_equal(inpaint.mask(), expected)
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_E)
    inpaint.size_spin.setValue(2)
    drag(qtbot, inpaint, [(6.5, 6.5), (6.5, 6.5)])
    # The dab lands where the pointer's whole screen pixel maps to, and erases around it.
    at = inpaint.canvas.to_model(QPointF(screen(inpaint, 6.5, 6.5)))
    replay = MaskHistory(SIZE)
    replay.replace(expected)
    replay.paint(at, at, 2.0, fill=False)
    assert np.array_equal(inpaint.mask(), replay.mask)
    assert not inpaint.mask()[6, 6] and 9 <= expected.sum() - inpaint.mask().sum() <= 13
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_I)
    assert inpaint.mask()[6, 6] and inpaint.mask()[0, 0] and not inpaint.mask()[4, 4]
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Delete)
    assert not inpaint.mask().any()
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert inpaint.mask()[0, 0]  # the clear is undone


def test_zoom_and_pan_keep_painting_on_the_pixel_under_the_pointer(qtbot, inpaint):
    canvas = inpaint.canvas
    fitted = canvas.zoom()
    qtbot.keyClick(canvas, Qt.Key.Key_Plus)
    assert canvas.zoom() == pytest.approx(fitted * 1.25)
    corner = canvas.image_rect().topLeft()
    middle = canvas.rect().center()
    qtbot.mousePress(canvas, Qt.MouseButton.RightButton, pos=middle)
    qtbot.mouseMove(canvas, middle + QPoint(30, 10))
    qtbot.mouseRelease(canvas, Qt.MouseButton.RightButton, pos=middle + QPoint(30, 10))
    assert canvas.image_rect().topLeft() == corner + QPointF(30, 10)
    assert not inpaint.mask().any()  # panning paints nothing
    inpaint.size_spin.setValue(1)
    drag(qtbot, inpaint, [(13.5, 1.5), (13.5, 1.5)])
    assert inpaint.mask()[1, 13]
    qtbot.keyClick(canvas, Qt.Key.Key_F)
    assert canvas.zoom() == pytest.approx(fitted)


def paint_centre(inpaint) -> np.ndarray:
    inpaint.session.history.fill_rect((4, 4), (12, 12))
    inpaint.canvas.refresh_mask()
    inpaint._on_mask_changed()
    return inpaint.mask()


def fill(qtbot, inpaint) -> None:
    qtbot.waitUntil(inpaint.fill_button.isEnabled, timeout=10_000)  # the last job's thread has ended
    with qtbot.waitSignal(inpaint.fill_jobs.succeeded, timeout=60_000):
        qtbot.mouseClick(inpaint.fill_button, Qt.MouseButton.LeftButton)


def test_fill_gives_seeded_candidates_that_keep_known_pixels_exactly(qtbot, inpaint):
    hole = paint_centre(inpaint)
    inpaint.count_spin.setValue(3)
    inpaint.seed_spin.setValue(7)
    with qtbot.waitSignal(inpaint.fill_jobs.succeeded, timeout=60_000):
        qtbot.keyClick(inpaint.canvas, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    result = inpaint.session.result
    assert result.candidates.shape == (3, SIZE, SIZE, 3)
    assert inpaint.candidate_list.count() == 3 and inpaint.candidate_list.item(2).text() == "seed 9"
    for candidate in result.candidates:
        assert np.array_equal(candidate[~hole], inpaint.session.image[~hole])  # bit for bit
        assert (candidate[hole] != inpaint.session.image[hole]).any()
    assert not np.array_equal(result.candidates[0], result.candidates[1])
    first = result.candidates.copy()
    inpaint.count_spin.setValue(1)
    inpaint.seed_spin.setValue(8)  # candidate 2 of the first fill
    fill(qtbot, inpaint)
    assert np.array_equal(inpaint.session.result.candidates[0], first[1])  # reproducible by seed


def test_continue_from_a_candidate_then_back_and_original(qtbot, inpaint):
    paint_centre(inpaint)
    inpaint.count_spin.setValue(2)
    fill(qtbot, inpaint)
    inpaint.candidate_list.setCurrentRow(1)
    chosen = inpaint.session.result.candidates[1]
    qtbot.mouseClick(inpaint.continue_button, Qt.MouseButton.LeftButton)
    assert np.array_equal(inpaint.session.image, chosen)
    assert not inpaint.mask().any()  # a fresh mask for the next region…
    assert "candidate 2 (seed 1)" in inpaint.session.source
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert inpaint.mask().sum() == 64  # …and the old one is an undo away
    qtbot.mouseClick(inpaint.back_button, Qt.MouseButton.LeftButton)
    assert np.array_equal(inpaint.session.image, inpaint.session.original)
    assert not inpaint.back_button.isEnabled()


def test_cancelling_a_fill_stops_it_and_keeps_the_canvas(qtbot, inpaint):
    hole = paint_centre(inpaint)
    inpaint.count_spin.setValue(16)
    previews = []
    inpaint.fill_jobs.preview.connect(previews.append)
    qtbot.mouseClick(inpaint.fill_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(previews), timeout=30_000)
    assert inpaint.progress.isVisible() and inpaint.cancel_button.isEnabled()
    qtbot.keyClick(inpaint.canvas, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not inpaint.fill_jobs.is_busy(), timeout=10_000)
    assert inpaint.session.result is None and "Cancelled" in inpaint.result_label.text()
    assert not inpaint.progress.isVisible()
    assert np.array_equal(inpaint.mask(), hole) and inpaint.fill_button.isEnabled()
    assert previews[-1].done < previews[-1].total


def test_export_writes_result_mask_and_before_after_with_provenance(qtbot, inpaint, tmp_path):
    hole = paint_centre(inpaint)
    inpaint.count_spin.setValue(2)
    inpaint.seed_spin.setValue(3)
    fill(qtbot, inpaint)
    inpaint.candidate_list.setCurrentRow(1)
    inpaint.scale_spin.setValue(2)
    inpaint.ask_save_path = lambda _name: str(tmp_path / "fill.png")
    with qtbot.waitSignal(inpaint.export_jobs.succeeded, timeout=10_000) as exported:
        qtbot.mouseClick(inpaint.export_button, Qt.MouseButton.LeftButton)
    assert [p.name for p in exported.args[0]] == ["fill.png", "fill-mask.png", "fill-before-after.png"]
    with Image.open(tmp_path / "fill.png") as im:
        assert np.array_equal(np.asarray(im)[::2, ::2], inpaint.session.result.candidates[1])
    meta = read_png_metadata(tmp_path / "fill.png")
    assert meta["family"] == "vae" and meta["seed"] == "4" and meta["run"] == inpaint.loaded.name
    assert meta["method"].startswith("Latent optimisation") and meta["source"] == "training image #3"
    assert np.array_equal(load_mask(tmp_path / "fill-mask.png", SIZE), hole)
    assert read_png_metadata(tmp_path / "fill-before-after.png")["seed"] == "4"


def small_gan_run(tmp_path, dataset_cache):
    from genstudio.core.data import load_source
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime.training import Trainer

    run = tmp_path / "gan-run"
    settings = TrainSettings(family="gan", data="builtin:shapes", size=8, steps=2, batch=4, sample_every=0,
                             checkpoint_every=0, eval_images=0,
                             family_config={"latent_dim": 8, "base_channels": 4, "inversion_steps": 5})
    for _event in Trainer(settings, str(run), dataset=load_source("builtin:shapes", 8,
                                                                   cache_dir=dataset_cache)).run():
        pass
    return run


def test_a_trip_through_a_smaller_model_leaves_the_image_sharp_and_the_mask_as_painted(qtbot, inpaint, tmp_path,
                                                                                        dataset_cache):
    from genstudio.core.runs.run import load_run

    paint_centre(inpaint)
    image, mask, first = inpaint.session.image.copy(), inpaint.session.history.mask.copy(), inpaint.loaded
    inpaint.set_run(load_run(small_gan_run(tmp_path, dataset_cache)))
    assert inpaint.session.image.shape == (8, 8, 3)  # resampled for the 8 px model
    inpaint.set_run(first)
    assert np.array_equal(inpaint.session.image, image) and np.array_equal(inpaint.session.history.mask, mask)
    inpaint.session.history.replace(np.zeros_like(mask))  # an edit at 16 px: the next refit starts from it
    inpaint.set_run(first)
    assert not inpaint.session.history.mask.any()


def test_families_side_by_side_on_the_same_hole(qtbot, inpaint, tmp_path, dataset_cache):
    other = small_gan_run(tmp_path, dataset_cache)  # another family at another size: the hole is resampled
    (tmp_path / "not-a-run").mkdir()
    paint_centre(inpaint)
    assert not inpaint.compare_button.isEnabled()  # nothing ticked to compare with
    assert "Tick the runs" in inpaint.compare_button.toolTip()
    inpaint.add_run(str(other))
    inpaint.add_run(str(tmp_path / "not-a-run"))
    inpaint.add_run(str(tmp_path / "unticked"), checked=False)
    assert inpaint.ticked_runs() == [str(other), str(tmp_path / "not-a-run")]
    assert inpaint.compare_button.isEnabled()
    shown_before_the_end = []  # each run's fill appears as it is ready, not all at the end
    inpaint.compare_jobs.preview.connect(lambda _entry: shown_before_the_end.append(
        (inpaint.compare_list.count(), len(inpaint.compared))))
    with qtbot.waitSignal(inpaint.compare_jobs.succeeded, timeout=60_000):
        qtbot.mouseClick(inpaint.compare_button, Qt.MouseButton.LeftButton)
    assert shown_before_the_end == [(1, 0), (2, 0), (3, 0)]  # each tile shown before the whole result
    compared = inpaint.compared
    assert [c.title for c in compared] == ["Variational autoencoder", "GAN", "—"]
    assert compared[0].image.shape == (SIZE, SIZE, 3) and compared[1].image.shape == (8, 8, 3)
    assert compared[2].image is None and compared[2].error
    assert "could not fill" in inpaint.compare_label.text()
    assert inpaint.compare_list.count() == 3
    inpaint.ask_save_path = lambda _name: str(tmp_path / "side.png")
    with qtbot.waitSignal(inpaint.export_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(inpaint.export_compare_button, Qt.MouseButton.LeftButton)
    meta = read_png_metadata(tmp_path / "side.png")
    assert "Variational autoencoder" in meta["panels"] and "GAN (gan-run)" in meta["panels"]
    with Image.open(tmp_path / "side.png") as im:
        assert im.size == (3 * SIZE + 4 * 2, SIZE + 4)  # input + two fills at the largest size


def test_without_a_run_nothing_can_be_done(qtbot, window):
    qtbot.keyClick(window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    panel = window.inpaint
    assert window.tabs.currentWidget() is panel
    assert "Open a run" in panel.caption.text()
    for button in (panel.dataset_button, panel.file_button, panel.fill_button, panel.export_button):
        assert not button.isEnabled()
