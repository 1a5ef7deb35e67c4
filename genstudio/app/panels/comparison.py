"""Comparing runs: tick runs on the left, read one metric's curves and a table of final figures.

Reading run folders (summaries, the comparison table) happens in TaskRunner jobs; this view only
submits them and displays what comes back, dropping stale results. Exports write what is shown.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPixmap, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.runs.paths import runs_dir
from genstudio.core.trained.compare import (
    BASELINE_FAMILY,
    ComparisonTable,
    RunError,
    RunSummary,
    compare_runs,
    list_runs,
    summarize_run,
    table_to_csv,
)

from .. import file_dialogs
from ..layout import push_button
from ..workers import Job, TaskRunner
from .evaluation import EvaluationDialog
from .metrics_plot import COLOURS, fit_view

# The metric plotted first: the one the most ticked runs share, and among those the first here.
PREFERRED_METRICS = ("bpd", "fid", "eval_bpd", "loss", "g_loss")
BOOKKEEPING = ("images_per_sec", "time")  # plotted only when asked for
SYMBOLS_UP_TO = 12   # curves with few points (evaluations) get markers, or one point is invisible
RUN_LIST_WIDTH = 240
RUN_COLUMN_WIDTH = 220  # at most; longer run names are elided in the middle (full name in the tooltip)
HEADERS = {"bpd_se": "bpd ± (s.e.)", "bpd_kind": "bpd kind", "bpd_images": "bpd on", "samples": "samples", "kid": "kid ×10³"}
# column -> (scale, decimals); every other column is shown as text.
NUMBER_FORMATS = {"bpd": (1, 3), "bpd_se": (1, 4), "fid": (1, 1), "kid": (1e3, 2), "precision": (1, 2),
                  "recall": (1, 2), "density": (1, 2), "coverage": (1, 2)}
BASELINE_COLOUR = "#808080"
ERROR_COLOUR = "#c62828"


@dataclass
class RunListing:
    """What a scan found: a summary per readable run, and the folders it had to skip."""

    summaries: list[RunSummary]
    added: str | None = None            # the folder the user asked to add, now in summaries
    skipped: list[str] = field(default_factory=list)


def scan_runs(extra: list[str], added: str | None, job: Job) -> RunListing:
    """Summaries of the runs under the runs folder, the extra folders, and `added` (which must
    be a run: its RunError reaches the user)."""
    summaries: dict[str, RunSummary] = {}
    added_path = None
    if added is not None:
        first = summarize_run(added)
        summaries[added_path := first.path] = first
    skipped = []
    for path in [*list_runs(), *extra]:
        if job.cancelled():
            break
        try:
            summary = summarize_run(path)
        except (RunError, OSError, ValueError) as exc:  # a damaged run, a folder deleted meanwhile
            skipped.append(f"{path}: {exc}")
            continue
        summaries.setdefault(summary.path, summary)
    return RunListing(list(summaries.values()), added_path, skipped)


def format_cell(column: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if column in NUMBER_FORMATS and isinstance(value, (int, float)):
        scale, decimals = NUMBER_FORMATS[column]
        return f"{value * scale:.{decimals}f}"
    if column == "step" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


class ComparisonView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("comparisonView")
        self.summaries: dict[str, RunSummary] = {}   # by path, of every listed run
        self.table: ComparisonTable | None = None     # the table on screen
        self._extra: list[str] = []                   # folders added from outside the runs folder
        self._to_tick: set[str] = set()               # ticked when the list next shows them
        self._curves: dict[str, pg.PlotDataItem] = {}  # by path, for the ticked runs
        self._colours: dict[str, str] = {}             # by path: a run keeps its colour while ticked
        self.list_jobs = TaskRunner(self)
        self.table_jobs = TaskRunner(self)
        self.evaluation = EvaluationDialog(self)
        self.evaluation.evaluated.connect(lambda _results: self.refresh())
        self.runners = (self.list_jobs, self.table_jobs, *self.evaluation.runners)
        self._build()
        self.list_jobs.succeeded.connect(self._on_listed)
        self.list_jobs.failed.connect(lambda cause, _details: self.show_message(cause, error=True))
        self.table_jobs.succeeded.connect(self.show_table)
        self.table_jobs.failed.connect(lambda cause, _details: self.show_message(
            f"Could not compare the runs: {cause}", error=True))

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.run_list = QListWidget(objectName="comparisonRuns", accessibleName="Runs to compare")
        # Keys move through the list and Space ticks: where the keyboard is must show.
        self.run_list.setStyleSheet("QListWidget:focus { border: 2px solid palette(highlight); }")
        self.run_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.run_list.itemChanged.connect(self._on_checks_changed)
        self.refresh_button = push_button("Refresh", "comparisonRefresh",
                                          f"List the runs in {runs_dir()} again", self.refresh)
        self.add_button = push_button("Add run folder…", "comparisonAddRun",
                                      "Add a run kept outside the runs folder", self.ask_add_run)
        self.evaluate_button = push_button(
            "Evaluate…", "comparisonEvaluate",
            "Measure the ticked runs: likelihood, FID/KID, precision/recall, memorisation (Ctrl+E)",
            self.open_evaluation)
        self.metric_combo = QComboBox(objectName="comparisonMetric", accessibleName="Metric to plot")
        self.metric_combo.currentTextChanged.connect(lambda _text: self._draw_curves())
        # Kept while other runs are ticked only once a person has chosen it; until then the
        # metric follows the ticked runs (a GAN ticked first must not hide a VAE ticked next).
        self.metric_chosen = False
        self.metric_combo.activated.connect(lambda _index: setattr(self, "metric_chosen", True))
        self.csv_button = push_button("Export CSV…", "comparisonExportCsv",
                                      "Save the table as a CSV file", self.export_csv)
        self.png_button = push_button("Export PNG…", "comparisonExportPng",
                                      "Save the plot and the table as one PNG image", self.export_png)
        self.plot = self._build_plot()
        self.table_widget = _table()
        self.extractor_label = _label("comparisonExtractor")
        self.notes_label = _label("comparisonNotes")
        self.message = _label("comparisonMessage")
        self._lay_out()
        self._update_buttons()

    def _build_plot(self) -> pg.PlotWidget:
        plot = pg.PlotWidget(background=self.palette().base().color())
        plot.setObjectName("comparisonPlot")
        plot.setAccessibleName("Metric curves of the ticked runs")
        item = plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", "step")
        item.setMenuEnabled(False)
        text = self.palette().text().color()
        base = self.palette().base().color()
        base.setAlpha(220)  # curves stay faintly visible under the legend
        self.legend = item.addLegend(offset=(-10, 10), labelTextColor=text, brush=pg.mkBrush(base),
                                     pen=pg.mkPen(self.palette().mid().color()))
        return plot

    def _lay_out(self) -> None:
        buttons = _row(self.refresh_button, self.add_button, self.evaluate_button)
        left = _column(QLabel("Runs (tick to compare)"), (self.run_list, 1), buttons)
        left.setMinimumWidth(RUN_LIST_WIDTH)
        top = _row(QLabel("Metric"), self.metric_combo, 1, self.csv_button, self.png_button)
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(left)
        upper.addWidget(_column(top, (self.plot, 1)))
        upper.setStretchFactor(1, 1)
        upper.setCollapsible(0, False)
        self.table_area = _column(self.extractor_label, (self.table_widget, 1), self.notes_label)
        # The table spans the full width: its thirteen columns need it more than the plot does.
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(upper)
        splitter.addWidget(self.table_area)
        splitter.setSizes([420, 260])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.message)

    # -- the run list -------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.refresh()  # runs trained since the tab was last shown appear

    def refresh(self) -> None:
        self.list_jobs.submit(partial(scan_runs, list(self._extra), None))

    def ask_add_run(self) -> None:
        path = self.ask_run_folder()
        if path:
            self.add_run(path)

    def ask_run_folder(self) -> str:
        """The Add run folder dialog; tests replace this method to bypass it."""
        return file_dialogs.choose_folder(self, "Add a genstudio run folder", file_dialogs.RUNS)

    def add_run(self, path: str | Path) -> None:
        self.show_message(f"Reading {path}…")
        self.list_jobs.submit(partial(scan_runs, list(self._extra), str(path)))

    def tick_when_listed(self, paths: list[str]) -> None:
        """Tick these runs once the list shows them (the last launch's ticks)."""
        self._to_tick = set(paths)
        self._extra += [p for p in paths if Path(p).parent != runs_dir() and Path(p).is_dir() and p not in self._extra]

    def _on_listed(self, listing: RunListing) -> None:
        checked = set(self.checked_paths()) | self._to_tick
        self._to_tick = set()
        if listing.added:
            self._extra.append(listing.added)
            checked.add(listing.added)
        self.summaries = {s.path: s for s in listing.summaries}
        self.run_list.blockSignals(True)
        self.run_list.clear()
        for summary in listing.summaries:
            self.run_list.addItem(_run_item(summary, summary.path in checked))
        self.run_list.blockSignals(False)
        if listing.added:
            self.show_message(f"Added {listing.added}")
        elif listing.skipped:
            self.show_message("Skipped unreadable folders: " + "; ".join(listing.skipped), error=True)
        elif not listing.summaries:
            self.show_message(f"No runs in {runs_dir()} yet: train a model, or add a run folder.")
        else:
            self.show_message("")
        self._on_checks_changed()

    def checked_paths(self) -> list[str]:
        items = (self.run_list.item(row) for row in range(self.run_list.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items
                if item.checkState() == Qt.CheckState.Checked]

    def set_checked(self, path: str | Path, checked: bool) -> None:
        for row in range(self.run_list.count()):
            item = self.run_list.item(row)
            if Path(item.data(Qt.ItemDataRole.UserRole)) == Path(path).absolute():
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def _on_checks_changed(self, *_args) -> None:
        paths = self.checked_paths()
        self._update_curves(paths)
        self._update_metrics(paths)
        self._draw_curves()
        self._update_buttons()
        if paths:
            self.table_jobs.submit(partial(_compare, paths))
        else:
            self.table_jobs.cancel()  # a table still being computed is no longer wanted
            self.show_table(None)

    # -- the plot -----------------------------------------------------------------------------
    def _update_curves(self, paths: list[str]) -> None:
        for path in [p for p in self._curves if p not in paths]:
            curve = self._curves.pop(path)
            self._colours.pop(path)
            self.legend.removeItem(curve)
            self.plot.removeItem(curve)
        for path in paths:
            if path not in self._curves:
                used = set(self._colours.values())
                colour = next((c for c in COLOURS if c not in used), COLOURS[len(used) % len(COLOURS)])
                self._colours[path] = colour
                self._curves[path] = self.plot.plot(
                    pen=pg.mkPen(colour, width=2), name=self.summaries[path].name, connect="finite",
                    symbolBrush=colour, symbolPen=colour, symbolSize=6)

    def _update_metrics(self, paths: list[str]) -> None:
        names = sorted({name for path in paths for name in self.summaries[path].curves})
        current = self.metric_combo.currentText()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems(names)
        chosen = self.metric_chosen and current in names
        keep = current if chosen else _default_metric([self.summaries[p].curves for p in paths])
        if keep:
            self.metric_combo.setCurrentText(keep)
        self.metric_combo.blockSignals(False)

    def _draw_curves(self) -> None:
        metric = self.metric_combo.currentText()
        self.plot.getPlotItem().setLabel("left", metric)
        xs, ys = [], []
        for path, curve in self._curves.items():
            steps, values = self.summaries[path].curves.get(metric, ([], []))
            curve.setSymbol("o" if len(steps) <= SYMBOLS_UP_TO else None)
            curve.setData(np.asarray(steps, dtype=float), np.asarray(values, dtype=float))
            xs += steps
            ys += values
        fit_view(self.plot.getPlotItem().getViewBox(), xs, ys)

    def curve_data(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """The drawn curve of a ticked run (for tests)."""
        x, y = self._curves[path].getData()
        return (np.asarray([]), np.asarray([])) if x is None else (x, y)

    def curve_count(self) -> int:
        return len(self._curves)

    # -- the table ----------------------------------------------------------------------------
    def show_table(self, table: ComparisonTable | None) -> None:
        self.table = table
        widget = self.table_widget
        widget.clear()
        widget.setRowCount(0)
        columns = table.columns if table else []
        widget.setColumnCount(len(columns))
        widget.setHorizontalHeaderLabels([HEADERS.get(c, c) for c in columns])
        for row in table.rows if table else []:
            self._add_table_row(columns, row)
        self._size_columns(columns, table)
        if table is None:
            self.extractor_label.setText("Tick runs on the left to compare them.")
        elif table.extractor:
            self.extractor_label.setText(f"FID, KID, precision, recall, density and coverage measured "
                                         f"with <b>{html.escape(table.extractor)}</b> (comparable within this table only).")
        else:
            self.extractor_label.setText("No sample-quality figures: none of these runs was evaluated "
                                         "with a feature extractor.")
        self.notes_label.setText("<br>".join(f"• {html.escape(note)}" for note in table.notes) if table else "")
        self._update_buttons()

    def _add_table_row(self, columns: list[str], row: dict[str, Any]) -> None:
        index = self.table_widget.rowCount()
        self.table_widget.insertRow(index)
        baseline = row.get("family") == BASELINE_FAMILY
        for col, column in enumerate(columns):
            item = QTableWidgetItem(format_cell(column, row.get(column)))
            item.setToolTip(str(row.get(column) if row.get(column) is not None else ""))
            if column in NUMBER_FORMATS or column == "step":
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if baseline:
                font = QFont(item.font())
                font.setItalic(True)
                item.setFont(font)
                item.setForeground(QColor(BASELINE_COLOUR))
            self.table_widget.setItem(index, col, item)

    def _size_columns(self, columns: list[str], table: ComparisonTable | None) -> None:
        widget = self.table_widget
        widget.resizeColumnsToContents()
        if "run" in columns:
            widget.setColumnWidth(0, min(widget.columnWidth(0), RUN_COLUMN_WIDTH))
        if "extractor" in columns:
            # Never mixed, and named in the label above; the CSV keeps the column.
            widget.setColumnHidden(columns.index("extractor"), bool(table and table.extractor))

    def table_texts(self) -> list[list[str]]:
        """The table's cells as shown, row by row (for tests)."""
        widget = self.table_widget
        return [[widget.item(r, c).text() for c in range(widget.columnCount())]
                for r in range(widget.rowCount())]

    # -- exports ------------------------------------------------------------------------------
    def export_csv(self, path: str | Path | None = None) -> bool:
        if self.table is None:
            return False
        path = path or self.ask_save_file("Export the comparison table", "comparison.csv", "CSV files (*.csv)")
        if not path:
            return False
        try:
            Path(path).write_text(table_to_csv(self.table), encoding="utf-8")
        except OSError as exc:
            self.show_message(f"Could not write {path}: {exc}", error=True)
            return False
        self.show_message(f"Saved the table to {path}")
        return True

    def export_png(self, path: str | Path | None = None) -> bool:
        if not self.checked_paths():
            return False
        path = path or self.ask_save_file("Export the comparison as an image", "comparison.png",
                                          "PNG images (*.png)")
        if not path:
            return False
        if not _stacked([self.plot.grab(), self.table_area.grab()], self.palette().window().color()).save(str(path), "PNG"):
            self.show_message(f"Could not write {path}", error=True)
            return False
        self.show_message(f"Saved the plot and table to {path}")
        return True

    def ask_save_file(self, title: str, name: str, filters: str) -> str:
        """The export file dialog; tests replace this method to bypass it."""
        return file_dialogs.save_file(self, title, name, filters)

    def open_evaluation(self) -> None:
        """Show the evaluation dialog for the ticked runs (it stays open beside the window)."""
        if not self.checked_paths():
            return
        if not self.evaluation.busy():
            self.evaluation.set_runs(self.checked_paths())
        self.evaluation.show()
        self.evaluation.raise_()

    def _update_buttons(self) -> None:
        self.evaluate_button.setEnabled(bool(self._curves))
        self.csv_button.setEnabled(self.table is not None)
        self.png_button.setEnabled(bool(self._curves))

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet(f"color: {ERROR_COLOUR}" if error else "")
        self.message.setText(text)


def _stacked(parts: list[QPixmap], background: QColor) -> QImage:
    """The parts one above the other, in device pixels (a HiDPI grab keeps its resolution)."""
    images = [part.toImage() for part in parts]
    out = QImage(max(i.width() for i in images), sum(i.height() for i in images), QImage.Format.Format_RGB32)
    out.fill(background)
    painter, y = QPainter(out), 0
    for image in images:
        image.setDevicePixelRatio(1)
        painter.drawImage(0, y, image)
        y += image.height()
    painter.end()
    return out


def _compare(paths: list[str], job: Job) -> ComparisonTable:
    return compare_runs(paths)


def _run_item(summary: RunSummary, checked: bool) -> QListWidgetItem:
    item = QListWidgetItem(f"{summary.name}\n{summary.family} · {summary.data} · step {summary.step:,}")
    item.setData(Qt.ItemDataRole.UserRole, summary.path)
    item.setToolTip(summary.path)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
    item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
    return item


def _table() -> QTableWidget:
    table = QTableWidget(objectName="comparisonTable", accessibleName="Comparison table")
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    table.setWordWrap(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _column(*parts) -> QWidget:
    """A widget stacking widgets, layouts and (widget, stretch) pairs without margins."""
    column = QWidget()
    layout = QVBoxLayout(column)
    layout.setContentsMargins(0, 0, 0, 0)
    for part in parts:
        part, stretch = part if isinstance(part, tuple) else (part, 0)
        if isinstance(part, QWidget):
            layout.addWidget(part, stretch)
        else:
            layout.addLayout(part, stretch)
    return column


def _row(*parts) -> QHBoxLayout:
    """A row of widgets; an int is a stretch."""
    row = QHBoxLayout()
    for part in parts:
        if isinstance(part, int):
            row.addStretch(part)
        else:
            row.addWidget(part)
    return row


def _label(name: str) -> QLabel:
    label = QLabel(objectName=name, wordWrap=True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _default_metric(curves_per_run: list[dict]) -> str | None:
    """A model metric (not bookkeeping such as images/s) that the most runs have, preferring
    PREFERRED_METRICS in that order: a GAN beside a VAE opens on a curve both have."""
    counts: dict[str, int] = {}
    for curves in curves_per_run:
        for name in curves:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None

    def rank(name: str) -> tuple:
        preferred = PREFERRED_METRICS.index(name) if name in PREFERRED_METRICS else len(PREFERRED_METRICS)
        return (name in BOOKKEEPING, -counts[name], preferred, name)

    return min(counts, key=rank)
