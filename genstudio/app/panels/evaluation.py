"""Evaluating runs from the app: choose metrics, sample count and feature extractor, watch the
progress, read the figures and look at the closest sample/training pairs side by side.

Everything slow (loading runs and data, sampling, features, downloading or checking Inception
weights) runs in TaskRunner jobs (see jobs.py); this dialog submits them and shows what comes
back. The figures are appended to each run's metrics.jsonl, so the comparison table shows them.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.metrics.evaluate import (
    METRICS,
    EvalSettings,
    describe_evaluation,
    minimum_images,
)
from genstudio.core.metrics.features import (
    DEFAULT_WEIGHTS,
    INCEPTION_ENV,
    KNOWN_WEIGHTS,
    RandomConvExtractor,
    cached_inception_path,
    find_inception,
)
from genstudio.core.metrics.memorisation import NEAR_COPY_RMS
from genstudio.core.runs.preferences import INCEPTION_WEIGHTS, set_preference

from .. import file_dialogs, jobs
from ..imaging import scaled_pixmap
from ..layout import push_button
from ..workers import TaskRunner

DEFAULT_METRICS = ("bpd", "fid", "kid", "precision", "recall", "memorisation")
OFFLINE, INCEPTION = "offline", "inception"
PAIR_TILE_PX = 84     # each image of a pair is enlarged to about this size
ERROR_COLOUR = "#c62828"


class EvaluationDialog(QDialog):
    """Non-modal: the window stays usable while runs are evaluated."""

    evaluated = Signal(list)  # [jobs.RunEvaluation], after their records were written

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("evaluationDialog")
        self.setWindowTitle("Evaluate runs")
        self.runs: tuple[str, ...] = ()
        self.results: list[jobs.RunEvaluation] = []
        self.inception_available = False  # find_inception() found weights (refresh_extractor)
        self.eval_jobs = TaskRunner(self)
        self.weights_jobs = TaskRunner(self)   # checking a chosen file, or downloading one
        self.runners = (self.eval_jobs, self.weights_jobs)
        self._build()
        for runner in self.runners:
            runner.busy_changed.connect(self._update_buttons)
            runner.message.connect(self._show_stage)
            runner.progress.connect(self._show_progress)
        self.eval_jobs.succeeded.connect(self._on_evaluated)
        self.eval_jobs.failed.connect(lambda cause, _d: self._finish(f"Evaluation stopped: {cause}", error=True))
        self.weights_jobs.succeeded.connect(self._on_weights_ready)
        self.weights_jobs.failed.connect(lambda cause, _d: self._finish(cause, error=True))
        self.refresh_extractor()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.runs_label = QLabel(objectName="evaluationRuns", wordWrap=True)
        self.metric_boxes = {name: QCheckBox(name, objectName=f"evaluationMetric_{name}") for name in METRICS}
        for name, box in self.metric_boxes.items():
            box.setChecked(name in DEFAULT_METRICS)
            box.toggled.connect(self._follow_metrics)
        self.metric_boxes["bpd"].setToolTip("Bits/dim of held-out images (exact, bound or unnormalised, as the family gives)")
        self.metric_boxes["memorisation"].setToolTip("Each sample's nearest training image; the closest pairs are shown below")
        self.samples_spin = _spin("evaluationSamples", 2, 50_000, 1000, "Generated images compared with the reference")
        self.reference_spin = _spin("evaluationReference", 2, 50_000, 1000, "At most this many held-out images")
        self.seed_spin = _spin("evaluationSeed", 0, 2**31 - 1, 0, "Seeds the samples: the same seed gives the same figures")
        self.data_edit = QLineEdit(objectName="evaluationData", placeholderText="each run's own data (its held-out tenth)")
        self.data_edit.setToolTip("Reference images: a folder or builtin:NAME; empty for each run's own data")
        self.extractor_combo = QComboBox(objectName="evaluationExtractor", accessibleName="Feature extractor")
        self.extractor_combo.addItem(f"Offline: {RandomConvExtractor.name}", OFFLINE)
        self.extractor_combo.addItem("Inception-v3 pool3 (standard FID)", INCEPTION)
        self.extractor_combo.currentIndexChanged.connect(self._update_buttons)
        self.inception_label = QLabel(objectName="evaluationInceptionStatus", wordWrap=True)
        self.inception_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.choose_button = push_button(
            "Use a file…", "evaluationChooseWeights",
            "Point genstudio at Inception-v3 weights you already have (TorchScript)",
            self.ask_weights_file)
        self.sha_edit = QLineEdit(objectName="evaluationSha256", placeholderText="SHA-256 of the file (64 hex digits)")
        self.sha_edit.textChanged.connect(self._update_buttons)
        known = KNOWN_WEIGHTS[DEFAULT_WEIGHTS]
        self.sha_edit.setToolTip(
            f"{known.source}: no checksum is published for {known.filename}, so the download is "
            "accepted only if it matches the SHA-256 you paste here (e.g. `sha256sum` of a copy you trust).")
        if known.sha256:
            self.sha_edit.setText(known.sha256)
        self.download_button = push_button(
            "Download", "evaluationDownload",
            f"Download {known.filename} into {cached_inception_path().parent}",
            self.download_weights)
        self.progress_bar = QProgressBar(objectName="evaluationProgress", textVisible=True)
        self.stage_label = QLabel(objectName="evaluationStage", wordWrap=True)
        self.evaluate_button = push_button(
            "Evaluate", "evaluationStart",
            "Measure the runs and record the figures in their metrics.jsonl",
            self.start)
        self.evaluate_button.setDefault(True)
        self.cancel_button = push_button(
            "Cancel", "evaluationCancel", "Stop the evaluation or download", self.cancel)
        self.close_button = push_button("Close", "evaluationClose", "Close this dialog", self.close)
        self.results_label = QLabel(objectName="evaluationResults", wordWrap=True)
        self.results_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pairs_area = QWidget(objectName="evaluationPairs")
        self.pairs_layout = QVBoxLayout(self.pairs_area)
        self._lay_out()
        self._follow_metrics()

    def _lay_out(self) -> None:
        metrics = QGridLayout()
        for i, box in enumerate(self.metric_boxes.values()):
            metrics.addWidget(box, i // 4, i % 4)
        form = QFormLayout()
        form.addRow("Runs", self.runs_label)
        form.addRow("Metrics", metrics)
        form.addRow("Samples", self.samples_spin)
        form.addRow("Reference images", self.reference_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Reference data", self.data_edit)
        extractor = QGroupBox("Feature extractor (FID, KID, precision/recall, density/coverage)")
        column = QVBoxLayout(extractor)
        column.addWidget(self.extractor_combo)
        column.addWidget(self.inception_label)
        download = QHBoxLayout()
        download.addWidget(self.choose_button)
        download.addWidget(self.sha_edit, 1)
        download.addWidget(self.download_button)
        column.addLayout(download)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress_bar, 1)
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        results = QWidget()
        results_column = QVBoxLayout(results)
        results_column.addWidget(self.results_label)
        results_column.addWidget(self.pairs_area)
        results_column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(results)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(extractor)
        layout.addLayout(buttons)
        layout.addWidget(self.stage_label)
        layout.addWidget(scroll, 1)
        self.resize(760, 720)

    # -- what to evaluate ---------------------------------------------------------------------
    def set_runs(self, paths: list[str]) -> None:
        self.runs = tuple(paths)
        names = [Path(p).name for p in paths]
        self.runs_label.setText(", ".join(names) if names else "none: tick runs in the list first")
        self._update_buttons()

    def settings(self) -> EvalSettings:
        metrics = tuple(name for name, box in self.metric_boxes.items() if box.isChecked())
        return EvalSettings(metrics=metrics, samples=self.samples_spin.value(),
                            reference=self.reference_spin.value(),
                            extractor=self.extractor_combo.currentData(), seed=self.seed_spin.value())

    def start(self) -> None:
        if not self.runs or self.busy():
            return
        try:
            settings = self.settings()
        except ValueError as exc:
            self._finish(str(exc), error=True)
            return
        self.results_label.setText("")
        self._clear_pairs()
        self._show_stage("starting…")
        request = jobs.EvaluationRequest(self.runs, settings, self.data_edit.text().strip() or None)
        self.eval_jobs.submit(partial(jobs.evaluate_runs, request))

    def cancel(self) -> None:
        for runner in self.runners:
            if runner.is_busy():
                runner.cancel()
        self._finish("Cancelled.")

    def busy(self) -> bool:
        return any(runner.is_busy() for runner in self.runners)

    # -- Inception weights --------------------------------------------------------------------
    def refresh_extractor(self) -> None:
        try:
            path = find_inception()
        except FileNotFoundError as exc:  # $GENSTUDIO_INCEPTION names a missing file
            self.inception_label.setText(html.escape(str(exc)))
            path = None
        if path is not None:
            self.inception_label.setText(f"Inception-v3 weights: <b>{html.escape(str(path))}</b>")
            self.extractor_combo.setCurrentIndex(self.extractor_combo.findData(INCEPTION))
        else:
            self.inception_label.setText(
                "No Inception-v3 weights yet: use a file you have, or download the standard ones "
                f"(NVlabs TorchScript). Until then figures use the offline extractor, which compares "
                f"only with itself. ({INCEPTION_ENV} also names a file.)")
            self.extractor_combo.setCurrentIndex(self.extractor_combo.findData(OFFLINE))
        self.inception_available = path is not None
        self._update_buttons()

    def ask_weights_file(self) -> None:
        path = self.ask_open_file()
        if path:
            self.use_weights_file(path)

    def ask_open_file(self) -> str:
        """The file dialog; tests replace this method to bypass it."""
        return file_dialogs.open_file(self, "Inception-v3 weights (TorchScript)",
                                      "TorchScript files (*.pt *.pth *.ts);;All files (*)")

    def use_weights_file(self, path: str) -> None:
        self.weights_jobs.submit(partial(jobs.check_inception_file, str(path)))

    def download_weights(self) -> None:
        self.weights_jobs.submit(partial(jobs.download_inception_weights, self.sha_edit.text().strip()))

    def _on_weights_ready(self, path: str) -> None:
        if Path(path) != cached_inception_path():
            set_preference(INCEPTION_WEIGHTS, path)  # the download is found in the cache anyway
        self.refresh_extractor()
        self._finish(f"Using the Inception-v3 weights in {path}")

    # -- progress and results -----------------------------------------------------------------
    def _show_stage(self, text: str) -> None:
        self.stage_label.setStyleSheet("")
        self.stage_label.setText(text)
        self.progress_bar.setRange(0, 0)  # busy until the stage reports counts

    def _show_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def _finish(self, text: str, error: bool = False) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0 if error else 1)
        self.stage_label.setStyleSheet(f"color: {ERROR_COLOUR}" if error else "")
        self.stage_label.setText(text)

    def _on_evaluated(self, results: list[jobs.RunEvaluation]) -> None:
        self.results = results
        lines = [f"<b>{html.escape(r.name)}</b>: {html.escape(describe_evaluation(r.figures))}"
                 + _memorisation_line(r.figures) for r in results]
        self.results_label.setText("<br><br>".join(lines))
        self._show_pairs(results)
        self._finish(f"Done: figures added to the metrics of {len(results)} run(s).")
        self.evaluated.emit(results)

    def _clear_pairs(self) -> None:
        while self.pairs_layout.count():
            item = self.pairs_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()

    def _show_pairs(self, results: list[jobs.RunEvaluation]) -> None:
        self._clear_pairs()
        for result in results:
            if result.pair_tiles:
                self.pairs_layout.addWidget(_pairs_box(result))

    def pair_count(self) -> int:
        """Pairs on screen, over all runs (for tests)."""
        return sum(len(r.pair_tiles) for r in self.results if r.pair_tiles)

    def _follow_metrics(self, *_args) -> None:
        """The counts offered are those the ticked metrics can be computed from."""
        ticked = {name for name, box in self.metric_boxes.items() if box.isChecked()}
        least = minimum_images(ticked)
        for spin in (self.samples_spin, self.reference_spin):
            spin.setMinimum(least)
            spin.setToolTip(spin.toolTip().split(" (at least")[0] + f" (at least {least} for the ticked metrics)")
        self._update_buttons()

    def _update_buttons(self, *_args) -> None:
        busy = self.busy()
        inception = self.extractor_combo.currentData() == INCEPTION
        any_metric = any(box.isChecked() for box in self.metric_boxes.values())
        self.evaluate_button.setEnabled(bool(self.runs) and any_metric and not busy
                                        and (not inception or self.inception_available))
        self.cancel_button.setEnabled(busy)
        self.choose_button.setEnabled(not busy)
        self.download_button.setEnabled(not busy and _is_sha256(self.sha_edit.text()))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        # Closing the dialog abandons its work; the threads end at the next stage or batch.
        for runner in self.runners:
            runner.cancel()
        super().closeEvent(event)


def _memorisation_line(figures: dict) -> str:
    if "memorisation_min" not in figures:
        return ""
    return (f"<br>Nearest training image: closest {figures['memorisation_min']:.3f}, median "
            f"{figures['memorisation_median']:.3f} RMS; {figures['memorisation_near_copies']:.1%} of "
            f"samples closer than {NEAR_COPY_RMS} (near copies).")


def _pairs_box(result: jobs.RunEvaluation) -> QGroupBox:
    box = QGroupBox(f"{result.name}: closest samples (top) and their nearest training images (below)")
    grid = QGridLayout(box)
    for col, ((sample, training), pair) in enumerate(zip(result.pair_tiles, result.pairs, strict=True)):
        scale = max(1, PAIR_TILE_PX // max(sample.width(), 1))
        for row, (image, what) in enumerate(((sample, f"sample {pair.sample_index}"),
                                             (training, f"training image {pair.training_index}"))):
            tile = QLabel(objectName="evaluationPairTile")
            tile.setPixmap(scaled_pixmap(image, scale))
            tile.setToolTip(what)
            grid.addWidget(tile, row, col, Qt.AlignmentFlag.AlignCenter)
        distance = QLabel(f"{pair.distance:.3f}", objectName="evaluationPairDistance")
        distance.setToolTip("RMS pixel distance on [0, 1]; below "
                            f"{NEAR_COPY_RMS} counts as a near copy")
        if pair.distance < NEAR_COPY_RMS:
            distance.setStyleSheet(f"color: {ERROR_COLOUR}; font-weight: bold")
        grid.addWidget(distance, 2, col, Qt.AlignmentFlag.AlignCenter)
    grid.setColumnStretch(len(result.pairs), 1)
    return box


def _is_sha256(text: str) -> bool:
    text = text.strip().lower()
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _spin(name: str, low: int, high: int, value: int, tooltip: str) -> QSpinBox:
    spin = QSpinBox(objectName=name)
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tooltip)
    spin.setGroupSeparatorShown(True)
    return spin
