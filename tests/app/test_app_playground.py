"""The Playground tab: two families train side by side and both show; drawn points train the
families and Undo takes a stroke back; a scenario saved from the tab opens again."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import shiboken6
from app_helpers import close_and_delete
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from genstudio.app.panels import PlaygroundPanel
from genstudio.app.panels.playground import KnobsDialog
from genstudio.core.playground.live import VIEW_SAMPLES
from genstudio.core.playground.scenario import Scenario


@pytest.fixture
def panel():
    """A Playground tab of its own, deleted at the end and its garbage collected here, on the
    GUI thread: pyqtgraph's parentless menus collected later by a worker thread's garbage
    collection deadlock against the GUI thread (app_helpers.close_and_delete says how)."""
    panel = PlaygroundPanel()
    yield panel
    panel.stop(wait_ms=30_000)
    panel.close()
    shiboken6.delete(panel)
    gc.collect()


def only(panel: PlaygroundPanel, *names: str) -> None:
    for name, tick in panel.ticks.items():
        tick.setChecked(name in names)


def test_the_tab_trains_two_families_and_shows_both(qtbot, panel):
    only(panel, "flow", "autoregressive")
    panel.show()
    qtbot.waitUntil(lambda: panel.thread is not None, timeout=5000)
    qtbot.waitUntil(lambda: {name for name, view in panel.views.items() if view.steps > 50 and view.kl is not None}
                    == {"flow", "autoregressive"}, timeout=60_000)
    assert set(panel.panels) == {"flow", "autoregressive"}
    for family_panel in panel.panels.values():
        assert "KL" in family_panel.status.text() and "steps" in family_panel.status.text()
        assert family_panel.image.image is not None
        lit = (family_panel.samples.image[..., 3] > 0).sum()   # each sample lights the pixel it falls in
        assert 0.5 * VIEW_SAMPLES < lit <= VIEW_SAMPLES
        assert not family_panel.play.isEnabled() and family_panel.pause.isEnabled()
    assert panel.table.rowCount() == 2
    for row in range(2):   # every property measured or said: precision, recall, sampling time, latent, likelihood
        assert all(panel.table.item(row, column).text() for column in (0, 1, 2, 3, 5, 6, 7, 8, 9))
        assert 0 <= float(panel.table.item(row, 5).text()) <= 1
    flow = panel.panels["flow"]
    assert flow.lines.xData is None or len(flow.lines.xData) == 0
    flow.own_view.setChecked(True)   # a noise grid pushed through the layers, instead of the samples
    qtbot.waitUntil(lambda: flow.lines.xData is not None and len(flow.lines.xData) > 100, timeout=10_000)
    assert flow.samples.image is None
    assert "layers" in flow.plot.toolTip()
    flow.own_view.setChecked(False)
    regressive = panel.panels["autoregressive"]
    regressive.own_view.setChecked(True)
    qtbot.waitUntil(lambda: regressive.caption.text().startswith("seven slices"), timeout=10_000)
    box = regressive.plot.getPlotItem().vb
    regressive.plot.scene().sigMouseMoved.emit(box.mapViewToScene(QPointF(1.52, 0.0)))   # the cursor at x₁ = 1.5
    assert regressive.caption.text() == "p(x₂ | x₁ = 1.5)"
    assert np.nanmin(regressive.lines.xData) == pytest.approx(1.5, abs=1e-3)   # the slice stands on x₁ = 1.5
    regressive.own_view.setChecked(False)
    panel.panels["flow"].pause.click()
    qtbot.waitUntil(lambda: not panel.views["flow"].running, timeout=10_000)
    paused_at = panel.views["flow"].steps
    panel.panels["flow"].step.click()
    qtbot.waitUntil(lambda: panel.views["flow"].steps == paused_at + 1, timeout=10_000)
    with qtbot.waitSignal(panel.ended, timeout=30_000):
        panel.stop()
    assert not panel.is_running()


def test_drawn_points_train_and_undo_takes_a_stroke_back(qtbot, panel, tmp_path):
    only(panel, "flow")
    panel.show()
    panel.data_choice.setCurrentIndex(panel.data_choice.findData("own"))
    assert panel.brush_view.drawing and panel.thread is None   # nothing to train on yet
    for i, x in enumerate(np.linspace(-2, 2, 8)):   # a stroke as the brush signal reports it
        panel.brush_view.brushed.emit(float(x), 1.0, False, i == 0)
    assert len(panel.own_points) == 80
    panel.brush_view.brushed.emit(2.0, 1.0, True, True)        # right button: erase around (2, 1)
    erased = len(panel.own_points)
    assert erased < 80
    panel.undo_points()
    assert len(panel.own_points) == 80
    panel.undo_points()                                          # the whole first stroke at once
    assert len(panel.own_points) == 0
    for i, x in enumerate(np.linspace(-2, 2, 8)):
        panel.brush_view.brushed.emit(float(x), 1.0, False, i == 0)
    assert panel.data_status.text().startswith("80 points")
    qtbot.waitUntil(lambda: "flow" in panel.views and panel.views["flow"].steps > 0
                    and panel.views["flow"].kl is not None, timeout=30_000)

    panel.scenario().save(tmp_path / "drawn.json")   # what Save scenario… writes
    loaded = Scenario.load(tmp_path / "drawn.json")
    assert np.array_equal(loaded.points, panel.own_points)
    with qtbot.waitSignal(panel.ended, timeout=30_000):
        panel.stop()


def test_a_scenario_opened_in_the_tab_is_the_one_it_saves(qtbot, panel, tmp_path):
    scenario = Scenario(toy="spirals", seed=9, families={"gan": {"loss": "hinge", "d_steps": 2}, "ebm": {}})
    panel.load_scenario(scenario)
    assert panel.data_choice.currentData() == "spirals" and panel.ticked() == ["gan", "ebm"]
    panel.scenario().save(tmp_path / "again.json")
    again = Scenario.load(tmp_path / "again.json")
    assert (again.toy, again.seed, again.families) == ("spirals", 9, scenario.families)
    panel.stop()


def test_the_window_makes_the_playground_only_when_it_is_first_shown(qtbot, window):
    assert window.playground is None                      # no plots (nor their menus) until asked
    qtbot.keyClick(window, Qt.Key.Key_6, Qt.KeyboardModifier.ControlModifier)
    assert window.playground is not None and window.tabs.currentWidget() is window.playground_page
    panel = window.playground
    window.tabs.setCurrentIndex(0)
    assert window.open_playground() is panel               # made once
    panel.stop()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=30_000)
    close_and_delete(qtbot, window)   # now, then its plots' garbage on this (the GUI) thread
    gc.collect()


def test_a_familys_knobs_are_edited_in_a_form_that_refuses_what_its_config_refuses(qtbot, panel):
    dialog = KnobsDialog("ebm", {"sgld_steps": 8}, panel)
    assert dialog.form.editors["sgld_steps"].value() == 8
    dialog.form.editors["restart"].setText("2")   # a share of chains: at most 1
    said = []

    def answer():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, answer)
            return
        said.append(box.text())
        box.close()
    QTimer.singleShot(20, answer)
    dialog.accept()
    assert "restart" in said[0] and dialog.result() != QDialog.DialogCode.Accepted
    dialog.form.editors["restart"].setText("0.1")
    dialog.form.editors["width"].setValue(32)
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.knobs == {"sgld_steps": 8, "restart": 0.1, "width": 32}   # only what differs from the defaults


def test_new_knobs_start_that_family_again_and_the_scenario_keeps_them(qtbot, panel):
    only(panel, "autoregressive", "flow")
    panel.show()
    qtbot.waitUntil(lambda: all(name in panel.views and panel.views[name].steps > 50
                                for name in ("autoregressive", "flow"))
                    and len(panel.views["autoregressive"].history) >= 2, timeout=60_000)
    seen = []
    panel.worker.view_ready.connect(lambda view: seen.append((view.name, view.steps)))
    flow_before = panel.views["flow"].steps
    panel.set_knobs("autoregressive", {"conditional": "nade"})
    qtbot.waitUntil(lambda: ("autoregressive", 0) in seen, timeout=10_000)   # fresh weights
    curve = panel.kl_curves["autoregressive"].xData   # the old model's KL gone from the chart
    assert curve is None or len(curve) == 0 or curve.max() <= panel.views["autoregressive"].train_seconds
    assert all(steps >= flow_before for name, steps in seen if name == "flow")   # the other trains on
    assert panel.scenario().families["autoregressive"] == {"conditional": "nade"}
    with qtbot.waitSignal(panel.ended, timeout=30_000):
        panel.stop()


def test_the_training_is_exported_as_a_gif_of_its_recorded_moments(qtbot, panel, tmp_path):
    from PIL import Image

    only(panel, "autoregressive")
    panel.show()
    qtbot.waitUntil(lambda: len(panel.recording.moments) >= 3, timeout=60_000)   # one a second
    panel.stop()
    moments = len(panel.recording.moments)
    with qtbot.waitSignal(panel.gif_jobs.succeeded, timeout=60_000):
        panel.export_gif_to(str(tmp_path / "training.gif"))
    assert panel.export_status.text().startswith("Wrote")
    with Image.open(tmp_path / "training.gif") as gif:
        assert gif.n_frames == moments and gif.width > 1.5 * gif.height   # the data and the family side by side
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=30_000)
