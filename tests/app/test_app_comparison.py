"""The Compare tab: runs listed, curves per ticked run, the table of final figures, exports."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from app_helpers import SIZE, TINY_MODEL
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from genstudio.app.panels import ComparisonView
from genstudio.core.compare import BASELINE_FAMILY, COLUMNS
from genstudio.core.data import load_source
from genstudio.core.paths import runs_dir
from genstudio.core.run import TrainSettings
from genstudio.core.training import Trainer

EXTRACTOR = "random-conv-v1 (offline, 512-d)"
NAMES = ("20260101-000000-vae-shapes", "20260101-000100-vae-shapes", "20260101-000200-vae-shapes")


def evaluation(fid: float, bpd: float) -> dict:
    return {"step": 20, "fid": fid, "kid": 0.01, "precision": 0.5, "recall": 0.4, "eval_bpd": bpd,
            "bpd_kind": "bound", "baseline_bpd": 5.1, "extractor": EXTRACTOR, "reference_images": 50,
            "reference_split": "held-out", "eval_source": "builtin:shapes"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_cache) -> list[Path]:
    """Three tiny runs made headlessly once; the first two get a (fake) evaluation record."""
    root = tmp_path_factory.mktemp("compare-runs")
    dataset = load_source("builtin:shapes", SIZE, cache_dir=dataset_cache)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed, name in enumerate(NAMES):
            settings = TrainSettings(data="builtin:shapes", size=SIZE, steps=20, batch=16, seed=seed,
                                     family_config=dict(TINY_MODEL), sample_every=0,
                                     checkpoint_every=0, eval_images=0)
            for _event in Trainer(settings, str(root / name), dataset=dataset).run():
                pass
    finally:
        torch.set_num_threads(before)
    for name, figures in zip(NAMES, (evaluation(12.5, 3.2), evaluation(40.25, 4.0)), strict=False):
        with open(root / name / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(figures) + "\n")
    return [root / name for name in NAMES]


@pytest.fixture
def runs(app_dirs, trained) -> list[str]:
    """The runs copied into this test's runs folder (GENSTUDIO_HOME), as absolute paths."""
    copies = []
    for source in trained:
        target = runs_dir() / source.name
        shutil.copytree(source, target)
        copies.append(str(target.absolute()))
    return copies


@pytest.fixture
def view(qtbot, runs) -> ComparisonView:
    widget = ComparisonView()
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    with qtbot.waitSignal(widget.list_jobs.succeeded, timeout=10_000):
        widget.show()  # showing the view lists the runs
    yield widget
    qtbot.waitUntil(lambda: not any(r.is_busy() for r in widget.runners), timeout=10_000)


def tick(qtbot, view, path, checked=True) -> None:
    with qtbot.waitSignal(view.table_jobs.succeeded, timeout=10_000):
        view.set_checked(path, checked)


def test_runs_are_listed_with_family_data_and_step(view, runs):
    items = [view.run_list.item(row) for row in range(view.run_list.count())]
    assert sorted(item.data(Qt.ItemDataRole.UserRole) for item in items) == sorted(runs)
    for item in items:
        assert "vae · builtin:shapes · step 20" in item.text()
        assert item.checkState() == Qt.CheckState.Unchecked
    assert view.checked_paths() == [] and view.curve_count() == 0
    assert "Tick runs" in view.extractor_label.text()
    assert not view.csv_button.isEnabled() and not view.png_button.isEnabled()


def test_two_ticked_runs_give_two_curves_and_a_formatted_table(qtbot, view, runs):
    first, second, _ = runs
    tick(qtbot, view, first)
    tick(qtbot, view, second)
    assert view.curve_count() == 2
    assert view.metric_combo.currentText() == "bpd"
    metrics = [view.metric_combo.itemText(i) for i in range(view.metric_combo.count())]
    assert {"bpd", "loss", "eval_bpd", "fid", "kid"} <= set(metrics)
    steps, _values = view.curve_data(first)
    assert list(steps) == [10, 20]
    headers = [view.table_widget.horizontalHeaderItem(c).text() for c in range(len(COLUMNS))]
    assert headers[COLUMNS.index("kid")] == "kid ×10³"
    texts = view.table_texts()
    assert [row[0] for row in texts][-1] == "—"  # runs in list order, then the baseline
    rows = {row["run"]: row for row in (dict(zip(COLUMNS, t, strict=True)) for t in texts)}
    one, two, baseline = rows[Path(first).name], rows[Path(second).name], rows["—"]
    assert len(rows) == 3
    assert (one["bpd"], one["fid"], one["kid"], one["step"]) == ("3.200", "12.5", "10.00", "20")
    assert (one["precision"], one["recall"], one["density"]) == ("0.50", "0.40", "")
    assert (two["bpd"], two["fid"]) == ("4.000", "40.2")
    assert (baseline["family"], baseline["bpd"]) == (BASELINE_FAMILY, "5.100")
    baseline_cell = view.table_widget.item(2, COLUMNS.index("bpd"))
    assert baseline_cell.font().italic() and not view.table_widget.item(0, 0).font().italic()
    assert EXTRACTOR in view.extractor_label.text()
    view.metric_combo.setCurrentText("fid")
    assert [list(a) for a in view.curve_data(first)] == [[20], [12.5]]


def test_unticking_removes_the_curve_and_the_row(qtbot, view, runs):
    first, second, third = runs
    for path in runs:
        tick(qtbot, view, path)
    assert view.curve_count() == 3 and len(view.table_texts()) == 4
    assert f"{Path(third).name} has no evaluation yet" in view.notes_label.text()
    tick(qtbot, view, second, checked=False)
    assert view.curve_count() == 2 and second not in view._curves
    assert sorted(row[0] for row in view.table_texts()) == sorted([Path(first).name, Path(third).name, "—"])
    view.set_checked(first, False)
    view.set_checked(third, False)
    assert view.curve_count() == 0 and view.table_texts() == []
    assert not view.csv_button.isEnabled()


def test_exports_write_the_table_as_csv_and_the_view_as_png(qtbot, view, runs, tmp_path):
    tick(qtbot, view, runs[0])
    tick(qtbot, view, runs[1])
    view.ask_save_file = lambda *_args: str(tmp_path / "table.csv")
    qtbot.mouseClick(view.csv_button, Qt.MouseButton.LeftButton)
    parsed = list(csv.reader(io.StringIO((tmp_path / "table.csv").read_text(encoding="utf-8"))))
    assert parsed[0] == COLUMNS and len(parsed) == 4
    assert sorted(float(row[COLUMNS.index("fid")]) for row in parsed[1:3]) == [12.5, 40.25]  # unrounded
    assert parsed[3][COLUMNS.index("family")] == BASELINE_FAMILY
    view.ask_save_file = lambda *_args: str(tmp_path / "view.png")
    qtbot.mouseClick(view.png_button, Qt.MouseButton.LeftButton)
    image = QImage(str(tmp_path / "view.png"))
    assert not image.isNull() and image.width() > 400 and image.height() > 300
    assert "view.png" in view.message.text()


def test_a_folder_that_is_not_a_run_is_refused_with_a_message(qtbot, view, tmp_path):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    with qtbot.waitSignal(view.list_jobs.failed, timeout=10_000):
        view.add_run(folder)
    assert "is not a genstudio run" in view.message.text()
    assert view.run_list.count() == 3


def test_a_run_kept_elsewhere_is_added_and_ticked(qtbot, view, trained, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained[0], elsewhere)
    view.ask_run_folder = lambda: str(elsewhere)
    with qtbot.waitSignal(view.table_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(view.add_button, Qt.MouseButton.LeftButton)
    assert view.run_list.count() == 4
    assert view.checked_paths() == [str(elsewhere.absolute())]
    with qtbot.waitSignal(view.list_jobs.succeeded, timeout=10_000):
        qtbot.mouseClick(view.refresh_button, Qt.MouseButton.LeftButton)
    assert view.run_list.count() == 4 and view.checked_paths() == [str(elsewhere.absolute())]


def test_ctrl_3_shows_the_compare_tab_with_the_runs(qtbot, window, runs):
    with qtbot.waitSignal(window.comparison.list_jobs.succeeded, timeout=10_000):
        qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.comparison
    assert window.comparison.run_list.count() == 3
