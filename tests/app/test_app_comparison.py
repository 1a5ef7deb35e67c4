"""The Compare tab: runs listed, curves per ticked run, the table of final figures, exports."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from app_helpers import SIZE, TINY_MODEL
from fakes import FakeStyleGan, save_scripted, serve_files
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel

from genstudio.app.panels import ComparisonView
from genstudio.app.panels.comparison import _default_metric
from genstudio.app.panels.evaluation import EvaluationDialog
from genstudio.core.data import load_source
from genstudio.core.metrics import features
from genstudio.core.metrics.features import INCEPTION_ENV, InceptionExtractor
from genstudio.core.runs.paths import runs_dir
from genstudio.core.runs.preferences import INCEPTION_WEIGHTS, get_preference
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.training import Trainer
from genstudio.core.trained.compare import BASELINE_FAMILY, COLUMNS

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
    # pytest-qt closes and deletes the widget before this runs; tests that start jobs late
    # call settle() themselves so that every job ends while the view is alive.
    qtbot.waitUntil(lambda: not any(r.is_busy() for r in widget.runners), timeout=30_000)


def settle(qtbot, view) -> None:
    """Wait until every job of the view (and its evaluation dialog) has ended."""
    qtbot.waitUntil(lambda: not any(r.is_busy() for r in view.runners), timeout=20_000)


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


def test_the_metric_follows_the_ticked_runs_until_a_person_chooses_one(qtbot, view, runs):
    first, _, third = runs
    gan_like = [{"step": 10, "d_loss": 1.2, "g_loss": 0.8}, {"step": 20, "d_loss": 1.1, "g_loss": 0.9}]
    Path(third, "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gan_like), encoding="utf-8")
    with qtbot.waitSignal(view.list_jobs.succeeded, timeout=10_000):
        view.refresh()
    tick(qtbot, view, third)
    assert view.metric_combo.currentText() in ("d_loss", "g_loss")
    tick(qtbot, view, first)
    assert view.metric_combo.currentText() == "bpd"  # not the first run's metric, which the second lacks
    tick(qtbot, view, first, checked=False)
    view.metric_combo.setCurrentText("g_loss")
    view.metric_combo.activated.emit(view.metric_combo.currentIndex())  # as a person's choice does
    tick(qtbot, view, first)
    assert view.metric_combo.currentText() == "g_loss"


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


def test_a_run_with_a_damaged_config_is_skipped_and_the_others_listed(qtbot, app_dirs, runs):
    Path(runs[0], "config.json").write_text("[1, 2]")
    widget = ComparisonView()
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.list_jobs.succeeded, timeout=10_000):
        widget.show()
    listed = sorted(widget.run_list.item(row).data(Qt.ItemDataRole.UserRole) for row in range(widget.run_list.count()))
    assert listed == sorted(runs[1:])
    assert "Skipped unreadable folders" in widget.message.text() and "is damaged" in widget.message.text()
    qtbot.waitUntil(lambda: not any(r.is_busy() for r in widget.runners), timeout=10_000)


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


def test_ctrl_5_shows_the_compare_tab_with_the_runs(qtbot, window, runs):
    with qtbot.waitSignal(window.comparison.list_jobs.succeeded, timeout=10_000):
        qtbot.keyClick(window, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.comparison
    assert window.comparison.run_list.count() == 3


def test_ctrl_e_with_nothing_ticked_says_what_to_do(qtbot, window, runs):
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.comparison
    assert "Tick one or more runs" in window.statusBar().currentMessage()
    assert not window.comparison.evaluation.isVisible()
    qtbot.waitUntil(lambda: not window.comparison.list_jobs.is_busy(), timeout=10_000)


# -- evaluating runs from the app -------------------------------------------------------------


def open_evaluation(qtbot, view, *paths) -> EvaluationDialog:
    for path in paths:
        tick(qtbot, view, path)
    qtbot.mouseClick(view.evaluate_button, Qt.MouseButton.LeftButton)
    dialog = view.evaluation
    assert dialog.isVisible() and sorted(dialog.runs) == sorted(paths)
    return dialog


def set_small(dialog, samples=24, reference=30, metrics=("bpd", "fid", "precision", "recall", "memorisation")):
    for name, box in dialog.metric_boxes.items():
        box.setChecked(name in metrics)
    dialog.samples_spin.setValue(samples)
    dialog.reference_spin.setValue(reference)


def test_evaluating_ticked_runs_records_figures_and_shows_the_closest_pairs(qtbot, view, runs):
    first, _, third = runs
    dialog = open_evaluation(qtbot, view, first, third)
    assert dialog.extractor_combo.currentData() == "offline"  # no Inception weights anywhere
    assert "No Inception-v3 weights yet" in dialog.inception_label.text()
    set_small(dialog)
    with qtbot.waitSignal(dialog.evaluated, timeout=60_000):
        qtbot.mouseClick(dialog.evaluate_button, Qt.MouseButton.LeftButton)
    for path in (first, third):
        record = json.loads((Path(path) / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["extractor"] == EXTRACTOR and record["samples"] == 24
        assert record["eval_source"] == "builtin:shapes" and record["reference_split"] == "held-out"
        assert math.isfinite(record["eval_bpd"]) and record["memorisation_min"] > 0
        assert Path(path).name in dialog.results_label.text()
    assert dialog.pair_count() == 16  # 8 closest pairs per run
    distances = [w.text() for w in dialog.pairs_area.findChildren(QLabel, "evaluationPairDistance")]
    assert len(distances) == 16 and all(float(d) > 0 for d in distances)
    tiles = dialog.pairs_area.findChildren(QLabel, "evaluationPairTile")
    assert len(tiles) == 32 and tiles[0].pixmap().width() >= 4 * SIZE
    assert "Done" in dialog.stage_label.text()
    qtbot.waitUntil(lambda: not dialog.busy() and dialog.evaluate_button.isEnabled(), timeout=10_000)
    # The comparison re-reads the runs: the third run, unevaluated before, now has a FID.
    qtbot.waitUntil(lambda: any(row[0] == Path(third).name and row[COLUMNS.index("fid")]
                                for row in view.table_texts()), timeout=20_000)
    settle(qtbot, view)


def test_the_dialog_offers_only_counts_the_ticked_metrics_can_use(qtbot, view, runs):
    dialog = open_evaluation(qtbot, view, runs[0])
    boxes = dialog.metric_boxes
    for name, box in boxes.items():
        box.setChecked(name in ("fid", "kid"))
    assert dialog.samples_spin.minimum() == dialog.reference_spin.minimum() == 2
    boxes["recall"].setChecked(True)
    assert dialog.samples_spin.minimum() == dialog.reference_spin.minimum() == 4
    boxes["coverage"].setChecked(True)
    dialog.reference_spin.setValue(2)
    assert dialog.reference_spin.value() == 6 and "at least 6" in dialog.reference_spin.toolTip()


def test_cancel_stops_an_evaluation_and_records_nothing(qtbot, view, runs):
    dialog = open_evaluation(qtbot, view, runs[2])
    set_small(dialog, samples=20_000, metrics=("fid",))
    before = (Path(runs[2]) / "metrics.jsonl").read_text()
    qtbot.mouseClick(dialog.evaluate_button, Qt.MouseButton.LeftButton)
    assert dialog.busy() and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: "sampling" in dialog.stage_label.text(), timeout=20_000)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert dialog.stage_label.text() == "Cancelled."
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=20_000)
    assert (Path(runs[2]) / "metrics.jsonl").read_text() == before
    assert dialog.evaluate_button.isEnabled()


def test_a_chosen_weights_file_becomes_the_inception_extractor(qtbot, view, runs, tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    dialog = open_evaluation(qtbot, view, runs[0])
    dialog.extractor_combo.setCurrentIndex(dialog.extractor_combo.findData("inception"))
    assert not dialog.evaluate_button.isEnabled()  # Inception chosen but no weights yet
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    dialog.ask_open_file = lambda: str(junk)
    with qtbot.waitSignal(dialog.weights_jobs.failed, timeout=20_000):
        qtbot.mouseClick(dialog.choose_button, Qt.MouseButton.LeftButton)
    assert "not a TorchScript file" in dialog.stage_label.text() and get_preference(INCEPTION_WEIGHTS) is None
    weights = save_scripted(FakeStyleGan(), tmp_path / "inception.pt")
    dialog.ask_open_file = lambda: str(weights)
    qtbot.waitUntil(dialog.choose_button.isEnabled, timeout=10_000)
    with qtbot.waitSignal(dialog.weights_jobs.succeeded, timeout=20_000):
        qtbot.mouseClick(dialog.choose_button, Qt.MouseButton.LeftButton)
    assert get_preference(INCEPTION_WEIGHTS) == str(weights)  # the CLI's "auto" finds it too
    assert dialog.extractor_combo.currentData() == "inception" and str(weights) in dialog.inception_label.text()
    set_small(dialog, samples=10, reference=10, metrics=("fid",))
    qtbot.waitUntil(dialog.evaluate_button.isEnabled, timeout=10_000)  # the check's thread has ended
    with qtbot.waitSignal(dialog.evaluated, timeout=60_000):
        qtbot.mouseClick(dialog.evaluate_button, Qt.MouseButton.LeftButton)
    assert dialog.results[0].figures["extractor"] == InceptionExtractor.name
    settle(qtbot, view)


def test_download_needs_a_checksum_and_keeps_only_a_verified_file(qtbot, view, runs, tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(features, "models_dir", lambda: tmp_path / "models")
    payload = save_scripted(FakeStyleGan(), tmp_path / "served.pt").read_bytes()
    with serve_files({"/inception.pt": payload}) as (url, handler):
        known = features.KNOWN_WEIGHTS[features.DEFAULT_WEIGHTS]
        monkeypatch.setitem(features.KNOWN_WEIGHTS, features.DEFAULT_WEIGHTS,
                            dataclasses.replace(known, url=f"{url}/inception.pt", sha256=None))
        dialog = open_evaluation(qtbot, view, runs[0])
        assert not dialog.download_button.isEnabled()  # no checksum typed yet
        dialog.sha_edit.setText("0" * 64)
        assert dialog.download_button.isEnabled()
        with qtbot.waitSignal(dialog.weights_jobs.failed, timeout=20_000):
            qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
        assert "checksum mismatch" in dialog.stage_label.text()
        assert not any((tmp_path / "models").glob("*"))  # nothing half-kept
        dialog.sha_edit.setText(hashlib.sha256(payload).hexdigest())
        qtbot.waitUntil(dialog.download_button.isEnabled, timeout=10_000)
        with qtbot.waitSignal(dialog.weights_jobs.succeeded, timeout=20_000):
            qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
        assert handler.requests == ["/inception.pt", "/inception.pt"]
    cached = tmp_path / "models" / known.filename
    assert cached.read_bytes() == payload and features.find_inception() == cached
    assert dialog.extractor_combo.currentData() == "inception" and str(cached) in dialog.inception_label.text()
    settle(qtbot, view)


def test_the_first_metric_shown_is_one_most_runs_share_not_bookkeeping():
    vae = {"bpd": 1, "loss": 1, "images_per_sec": 1, "time": 1}
    gan = {"d_loss": 1, "g_loss": 1, "images_per_sec": 1, "time": 1}
    diffusion = {"loss": 1, "vlb_est_bpd": 1, "grad_norm": 1, "images_per_sec": 1, "time": 1}
    assert _default_metric([vae, gan, diffusion]) == "loss"   # shared by two; bpd by one only
    assert _default_metric([vae, {**gan, "fid": 1}, {**diffusion, "fid": 1}, {"fid": 1}]) == "fid"
    assert _default_metric([vae]) == "bpd"
    assert _default_metric([{"images_per_sec": 1}]) == "images_per_sec"
    assert _default_metric([]) is None
