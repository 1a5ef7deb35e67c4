"""The Explore tab, driven like a user: sliders, randomise/reset, the latent map, starting from
an image, interpolation with PNG/GIF export, and families without a latent."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QScrollArea, QStyle, QStyleOptionSlider

from genstudio.core.runs.images import read_gif_metadata, read_png_metadata
from genstudio.core.trained.latent import prior_latents


def image_bits(view) -> bytes:
    image = view.image()
    assert image is not None
    return bytes(image.constBits())


@pytest.fixture
def explorer(qtbot, window, trained_run):
    """The trained (class-conditional VAE, 4-D latent) run opened on the Explore tab, with its
    training images encoded."""
    window.ask_run_folder = lambda: str(trained_run)
    window.explorer.encode_spin.setValue(200)
    with qtbot.waitSignal(window.sample_jobs.succeeded, timeout=30_000):
        window.open_action.trigger()
    window.tabs.setCurrentWidget(window.explorer)
    panel = window.explorer
    qtbot.waitUntil(lambda: panel.encoded is not None and panel.image_view.image() is not None, timeout=60_000)
    return panel


def test_opening_a_run_encodes_its_images_and_draws_the_map_and_probes(explorer):
    assert "4-dimensional latent" in explorer.caption.text()
    assert len(explorer.encoded.encoded) == 200
    assert explorer.map_view.points.shape == (200, 2)
    assert len(explorer.map_view.scatter.data) == 200
    assert "PC1" in explorer.map_view.plot.getAxis("bottom").labelText
    probes = explorer.probe_label.text()
    for factor in ("size", "x", "y", "rotation", "hue", "class"):
        assert f"{factor}:" in probes
    assert "200 training images" in explorer.encode_status.text()
    assert explorer.dataset_spin.maximum() == len(explorer.encoded.dataset) - 1


def test_an_encoding_is_kept_in_the_run_and_reused(qtbot, explorer, trained_run):
    kept = trained_run / "explorer" / "step30-n200.npz"
    assert kept.is_file()
    latents = explorer.encoded.encoded.latents.clone()
    stages = []
    explorer.encode_jobs.message.connect(stages.append)
    explorer.encode_spin.setValue(150)
    qtbot.mouseClick(explorer.encode_button, Qt.MouseButton.LeftButton)  # same run: its images are reused
    qtbot.waitUntil(lambda: len(explorer.encoded.encoded) == 150, timeout=30_000)
    assert stages == ["timing the encoder", "encoding 150 images"]  # not loaded again
    explorer.encode_spin.setValue(200)
    explorer.set_run(explorer.loaded)  # visible: encodes again, from the kept file this time
    qtbot.waitUntil(lambda: explorer.encoded is not None, timeout=30_000)
    assert "encoded before" in explorer.encode_status.text()
    assert torch.equal(explorer.encoded.encoded.latents, latents)


def test_stop_ends_an_encoding_started_after_another_and_keeps_what_is_done(qtbot, explorer, monkeypatch, request):
    # The second encoding of a run gets a new stop signal; Stop must reach that one. The
    # encoding waits after its first batch until Stop has been pressed, so the test is not a race.
    from genstudio.app import jobs

    pressed, real_encode = threading.Event(), jobs.encode_dataset
    request.addfinalizer(pressed.set)

    def encode_dataset(*args, should_stop, **kwargs):
        checks = itertools.count()

        def stop_after_first_batch():
            if next(checks) == 1:
                pressed.wait(10)
            return should_stop()

        return real_encode(*args, **kwargs, should_stop=stop_after_first_batch)

    monkeypatch.setattr(jobs, "encode_dataset", encode_dataset)
    explorer.encode_spin.setValue(300)  # not kept in the run yet
    with qtbot.waitSignal(explorer.encode_jobs.progress, timeout=30_000):
        qtbot.mouseClick(explorer.encode_button, Qt.MouseButton.LeftButton)
    assert explorer.stop_encode_button.isEnabled()
    qtbot.mouseClick(explorer.stop_encode_button, Qt.MouseButton.LeftButton)
    pressed.set()
    qtbot.waitUntil(lambda: "stopped at" in explorer.encode_status.text(), timeout=30_000)
    assert 0 < len(explorer.encoded.encoded) < 300
    assert f"stopped at {len(explorer.encoded.encoded)} of 300" in explorer.encode_status.text()
    assert not explorer.stop_encode_button.isEnabled() and explorer.encode_button.isEnabled()


def test_a_long_encoding_waits_for_encode_and_says_how_long(qtbot, window, trained_run):
    panel = window.explorer
    panel.encode_unasked_seconds = 0.0  # every encoder counts as slow here
    panel.encode_spin.setValue(120)
    window.tabs.setCurrentWidget(panel)
    window.ask_run_folder = lambda: str(trained_run)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: panel.estimate is not None, timeout=30_000)
    assert panel.encoded is None and not panel.encode_jobs.is_working()
    assert "Encoding 120 training images" in panel.encode_status.text()
    assert "would take about" in panel.encode_status.text() and "Press Encode" in panel.encode_status.text()
    assert panel.encode_button.isEnabled() and not panel.stop_encode_button.isEnabled()
    qtbot.mouseClick(panel.encode_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.encoded is not None, timeout=30_000)
    assert len(panel.encoded.encoded) == 120 and panel.estimate is None


def test_stop_while_the_encoder_is_timed_encodes_nothing_and_offers_the_estimate(qtbot, window, trained_run,
                                                                                 monkeypatch, request):
    # A GAN's encoder is an optimisation: timing it took minutes on a loaded machine, under a
    # map that said "Encoding training images…", and Stop did nothing until the timing ended.
    from genstudio.app import jobs

    timing, release, real_timing = threading.Event(), threading.Event(), jobs.encode_seconds_per_image
    request.addfinalizer(release.set)

    def slow_timing(*args, **kwargs):
        timing.set()
        release.wait(10)
        return real_timing(*args, **kwargs)

    monkeypatch.setattr(jobs, "encode_seconds_per_image", slow_timing)
    panel = window.explorer
    window.tabs.setCurrentWidget(panel)
    window.ask_run_folder = lambda: str(trained_run)
    window.open_action.trigger()
    qtbot.waitUntil(timing.is_set, timeout=30_000)
    qtbot.waitUntil(lambda: panel.map_view.message.text() == "Timing the encoder…", timeout=10_000)
    assert panel.stop_encode_button.isEnabled()
    qtbot.mouseClick(panel.stop_encode_button, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.waitUntil(lambda: panel.estimate is not None, timeout=30_000)
    assert panel.encoded is None and "Press Encode" in panel.encode_status.text()
    assert "press Encode" in panel.map_view.message.text() and panel.encode_button.isEnabled()


def test_opening_a_run_is_not_held_up_by_the_last_runs_encoding(qtbot, explorer, monkeypatch, request):
    # The old encoding is cancelled; until its thread notices, it must not keep the new run's
    # encoding from starting (the tab stayed grey for the whole of a GAN inversion).
    from genstudio.app import jobs

    release, real_encode = threading.Event(), jobs.encode_dataset
    request.addfinalizer(release.set)  # a failed assertion must not leave the thread waiting

    def encode_dataset(*args, should_stop, **kwargs):
        return real_encode(*args, **kwargs, should_stop=lambda: release.wait(10) and should_stop())

    monkeypatch.setattr(jobs, "encode_dataset", encode_dataset)
    explorer.encode_spin.setValue(310)
    explorer.set_run(explorer.loaded)  # loads the images again, then encodes
    qtbot.waitUntil(lambda: "Encoding 310 images" in explorer.encode_status.text(), timeout=30_000)
    # Loading reached 100%; the bar must not stay there while nothing is encoded yet.
    assert explorer.encode_progress.isVisible() and explorer.encode_progress.maximum() == 0
    monkeypatch.setattr(jobs, "encode_dataset", real_encode)
    explorer.encode_spin.setValue(200)  # kept in the run: no new encoding needed
    explorer.set_run(explorer.loaded)
    qtbot.waitUntil(lambda: explorer.encoded is not None, timeout=30_000)
    assert explorer.encode_jobs.is_busy()  # the old thread is still waiting, cancelled
    assert len(explorer.encoded.encoded) == 200 and explorer.encode_button.isEnabled()
    release.set()
    qtbot.waitUntil(lambda: not explorer.encode_jobs.is_busy(), timeout=30_000)
    assert len(explorer.encoded.encoded) == 200  # the cancelled one's result was dropped


def test_keys_encode_and_interpolate_and_the_wheel_scrolls_past_unfocused_sliders(qtbot, explorer):
    window = explorer.window()
    window.resize(1100, 560)  # short enough that the controls column scrolls
    qtbot.waitUntil(lambda: explorer.slider_rows[0].slider.isVisible(), timeout=5_000)
    window.activateWindow()
    explorer.randomise_button.setFocus()  # the keys work wherever focus is in the tab
    qtbot.waitUntil(explorer.randomise_button.hasFocus, timeout=2_000)
    with qtbot.waitSignal(explorer.interpolate_jobs.succeeded, timeout=30_000):
        qtbot.keyClick(explorer.randomise_button, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)
    explorer.encode_spin.setValue(120)
    qtbot.keyClick(explorer.randomise_button, Qt.Key.Key_E,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: len(explorer.encoded.encoded) == 120, timeout=30_000)
    slider = explorer.slider_rows[0].slider
    area = slider.parentWidget()
    while not isinstance(area, QScrollArea):
        area = area.parentWidget()
    bar = area.verticalScrollBar()
    assert bar.maximum() > 0
    value, scrolled = slider.value(), bar.value()
    wheel(slider, -120)
    assert slider.value() == value and bar.value() > scrolled  # the panel moved, not the slider
    slider.setFocus()
    qtbot.waitUntil(slider.hasFocus, timeout=2_000)
    scrolled = bar.value()
    wheel(slider, -120)
    assert slider.value() != value and bar.value() == scrolled  # a focused slider takes the wheel


def wheel(widget, delta_y: int) -> None:
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, widget.mapToGlobal(centre), QPoint(), QPoint(0, delta_y), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_dragging_a_raw_slider_moves_that_dimension_and_redraws(qtbot, explorer):
    explorer.raw_radio.setChecked(True)
    before, z_before = image_bits(explorer.image_view), explorer.position.z.clone()
    slider = explorer.slider_rows[2].slider
    count, value_before = len(explorer.latencies_ms), slider.value()
    option = QStyleOptionSlider()
    slider.initStyleOption(option)
    handle = slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, option,
                                           QStyle.SubControl.SC_SliderHandle, slider).center()
    qtbot.mousePress(slider, Qt.MouseButton.LeftButton, pos=handle)
    for dx in (5, 15, 30, 45):  # a drag: each move is a request; the image follows
        qtbot.mouseMove(slider, handle + QPoint(dx, 0))
    qtbot.mouseRelease(slider, Qt.MouseButton.LeftButton, pos=handle + QPoint(45, 0))
    assert slider.value() > value_before
    qtbot.waitUntil(lambda: len(explorer.latencies_ms) > count and image_bits(explorer.image_view) != before,
                    timeout=10_000)
    assert float(explorer.position.z[2]) == pytest.approx(slider.value() / 100)
    assert torch.equal(explorer.position.z[[0, 1, 3]], z_before[[0, 1, 3]])  # only that dimension moved
    assert "request → image" in explorer.latency_label.text()


def test_a_principal_slider_moves_along_its_direction(qtbot, explorer):
    explorer.principal_radio.setChecked(True)
    basis = explorer.encoded.basis
    assert explorer.slider_rows[0].name.text().startswith("PC1 · ")
    assert explorer.slider_rows[0].isVisible() and not explorer.slider_rows[basis.count].isVisible()
    coordinates_before = basis.coordinates(explorer.position.z)[0]
    explorer.slider_rows[0].slider.setValue(-150)
    coordinates = basis.coordinates(explorer.position.z)[0]
    assert float(coordinates[0]) == pytest.approx(-1.5, abs=1e-3)
    assert torch.allclose(coordinates[1:], coordinates_before[1:], atol=1e-3)


def test_randomise_and_reset(qtbot, explorer):
    start = explorer.position.z.clone()
    slider = explorer.slider_rows[0].slider
    slider.setValue(200)
    assert not torch.equal(explorer.position.z, start)
    explorer.window().activateWindow()
    slider.setFocus()
    qtbot.waitUntil(slider.hasFocus, timeout=5_000)
    qtbot.keyClick(slider, Qt.Key.Key_0)  # reset
    assert torch.equal(explorer.position.z, start)
    seed = explorer.seed_spin.value()
    qtbot.keyClick(slider, Qt.Key.Key_R)  # randomise
    assert explorer.seed_spin.value() == seed + 1
    assert torch.equal(explorer.position.z, prior_latents(4, 1, seed + 1)[0])
    qtbot.mouseClick(explorer.reset_button, Qt.MouseButton.LeftButton)  # back to the new start
    assert torch.equal(explorer.position.z, prior_latents(4, 1, seed + 1)[0])


def test_clicking_the_map_decodes_a_point_and_its_latent(qtbot, explorer):
    view = explorer.map_view
    x, y = view.points[7]

    def point_position() -> QPoint:
        return view.plot.mapFromScene(view.view_box.mapViewToScene(QPointF(float(x), float(y))))

    tries = []

    def hover_point_7() -> bool:
        # Each try maps the point afresh (the view may still be settling its range after the
        # map was drawn) and moves one pixel sideways: a move to where the pointer already is
        # sends no event, so nothing would hover.
        tries.append(None)
        qtbot.mouseMove(view.plot.viewport(), point_position() + QPoint(len(tries) % 2, 0))
        return "training image #" in explorer.hover_label.text()

    qtbot.waitUntil(hover_point_7, timeout=15_000)  # hovering shows the point's training image
    assert explorer.hover_view.image() is not None
    pos = point_position()
    qtbot.mouseClick(view.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    # The click lands on point 7 (or, if another point overlaps it, on that one).
    rows = [i for i in range(len(view.points)) if torch.equal(explorer.position.z, explorer.encoded.encoded.latents[i])]
    assert rows and np.allclose(view.points[rows[0]], view.points[7], atol=0.05 * np.ptp(view.points))
    # Off the points, a pick decodes the plane's point.
    view.plane_picked.emit(0.0, 0.0)
    torch.testing.assert_close(explorer.position.z, explorer.encoded.map.basis.mean)


def test_starting_from_a_training_image_encodes_it(qtbot, explorer):
    explorer.dataset_spin.setValue(5)
    with qtbot.waitSignal(explorer.start_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(explorer.dataset_button, Qt.MouseButton.LeftButton)
    image = explorer.encoded.dataset.images[5]
    family = explorer.loaded.family
    x = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float() / 255
    label = torch.tensor([explorer.class_combo.currentIndex()])
    torch.testing.assert_close(explorer.position.z, family.encode(x, label)[0])
    torch.testing.assert_close(explorer.position.origin, explorer.position.z)


def test_interpolating_from_a_seed_to_a_file_and_exporting_png_and_gif(qtbot, explorer, tmp_path):
    picture = tmp_path / "target.png"
    Image.fromarray(explorer.encoded.dataset.images[3]).save(picture)
    explorer.ask_open_image = lambda: str(picture)
    explorer.endpoint_a.kind.setCurrentText("Dataset image")  # two images: one from the data,
    explorer.endpoint_a.number.setValue(2)
    explorer.endpoint_b.kind.setCurrentText("Image file")     # one from a file
    qtbot.mouseClick(explorer.endpoint_b.file_button, Qt.MouseButton.LeftButton)
    explorer.steps_spin.setValue(5)
    with qtbot.waitSignal(explorer.interpolate_jobs.succeeded, timeout=20_000):
        qtbot.mouseClick(explorer.interpolate_button, Qt.MouseButton.LeftButton)
    frames = explorer.interpolation.frames
    assert frames.shape == (5, 16, 16, 3)
    assert explorer.strip_view.image() is not None
    assert "training image #2 → target.png" in explorer.strip_caption.text()
    # The ends are the images themselves, as the model reconstructs them.
    family = explorer.loaded.family
    for end, image in ((0, explorer.encoded.dataset.images[2]), (-1, explorer.encoded.dataset.images[3])):
        x = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float() / 255
        label = torch.zeros(1, dtype=torch.long)
        expected = (family.decode(family.encode(x, label), label)[0].permute(1, 2, 0) * 255).round().clamp(0, 255)
        assert np.array_equal(frames[end], expected.byte().numpy())
    explorer.ask_save_path = lambda suffix: str(tmp_path / f"path{suffix}")
    with qtbot.waitSignal(explorer.export_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(explorer.export_png_button, Qt.MouseButton.LeftButton)
    explorer.scale_spin.setValue(2)
    with qtbot.waitSignal(explorer.export_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(explorer.export_gif_button, Qt.MouseButton.LeftButton)
    with Image.open(tmp_path / "path.png") as strip:
        assert strip.size == (5 * 18 + 2, 18 + 2)  # five frames at model size, 2 px apart
        assert np.array_equal(np.asarray(strip.convert("RGB"))[2:18, 2:18], frames[0])
    meta = read_png_metadata(tmp_path / "path.png")
    assert meta["family"] == "vae" and meta["mode"] == "spherical" and meta["end"] == "target.png"
    with Image.open(tmp_path / "path.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (32, 32)  # 5 forward, 3 back; scaled ×2
    assert read_gif_metadata(tmp_path / "path.gif")["steps"] == "5"


def test_an_endpoint_that_is_not_ready_says_why(qtbot, explorer):
    explorer.endpoint_a.kind.setCurrentText("Dataset image")
    explorer.endpoint_a.number.setValue(10**6)
    qtbot.mouseClick(explorer.interpolate_button, Qt.MouseButton.LeftButton)
    assert "#1000000 is beyond it" in explorer.latency_label.text()
    explorer.endpoint_a.kind.setCurrentText("Gallery selection")
    explorer.gallery_images = lambda: []
    qtbot.mouseClick(explorer.interpolate_button, Qt.MouseButton.LeftButton)
    assert "select tiles in the gallery first" in explorer.latency_label.text()
    assert not explorer.interpolate_jobs.is_busy()


def test_a_family_without_a_latent_says_why(qtbot, window, tmp_path, dataset_cache):
    from genstudio.core.data import load_source
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime.training import Trainer

    run = tmp_path / "pixelcnn-run"
    settings = TrainSettings(family="pixelcnn", data="builtin:shapes", size=8, steps=1, batch=4,
                             family_config={"width": 6, "layers": 1, "kernel": 3, "head_width": 6}, sample_every=0, checkpoint_every=0,
                             eval_images=0)
    for _event in Trainer(settings, str(run), dataset=load_source("builtin:shapes", 8, cache_dir=dataset_cache)).run():
        pass
    window.ask_run_folder = lambda: str(run)
    window.gallery.count_spin.setValue(1)
    window.open_action.trigger()
    qtbot.waitUntil(lambda: "has no latent space" in window.explorer.caption.text(), timeout=30_000)
    assert "one subpixel at a time" in window.explorer.caption.text()
    assert not window.explorer.randomise_button.isEnabled()
    assert not window.explorer.interpolate_button.isEnabled()
