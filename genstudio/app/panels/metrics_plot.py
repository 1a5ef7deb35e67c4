"""Live training curves: one per metric, created once and refreshed on a timer.

What is plotted (points, smoothing, which curves are shown) is a core Curves object
(core/runs/curves.py); this widget draws it and turns the person's clicks into its calls. A
log-y toggle and EMA smoothing help read noisy or decaying curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.runs.curves import DEFAULT_SMOOTHING, Curves

from ..layout import FlowLayout

REFRESH_MS = 100                       # at most 10 redraws a second, however fast steps come
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#bcbd22", "#393b79", "#7f7f7f", "#637939", "#e7969c", "#8c6d31", "#6baed6", "#31a354")


@dataclass
class _Drawn:
    """The two plot items (raw and smoothed) and the toggle of one metric."""

    raw: pg.PlotDataItem
    smooth: pg.PlotDataItem
    checkbox: QCheckBox


def fit_view(view: pg.ViewBox, xs: list[float], ys: list[float], log_y: bool = False) -> None:
    """Auto-range, except that an axis whose values are all one number (a first point) gets a
    span around it: pyqtgraph pads it by a hair and labels ticks like 7.91734011515361."""
    view.enableAutoRange()
    view.updateAutoRange()  # now, not at the next paint: clipToView cuts curves to the old view
    for values, set_range, is_y in ((xs, view.setXRange, False), (ys, view.setYRange, True)):
        finite = [v for v in values if math.isfinite(v) and not (is_y and log_y and v <= 0)]
        if not finite or max(finite) - min(finite) > 1e-9 * max(1.0, abs(max(finite))):
            continue
        centre = math.log10(finite[0]) if is_y and log_y else finite[0]
        half = max(abs(centre) * 0.05, 0.5) if is_y and not log_y else 1.0
        set_range(centre - half, centre + half, padding=0)


class MetricsPlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("metricsPlot")
        self.curves = Curves()
        self._drawn: dict[str, _Drawn] = {}
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._build_plot()
        self._build_controls()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addLayout(self.controls)

    def _build_plot(self) -> None:
        self.plot = pg.PlotWidget(background=self.palette().base().color())
        self.plot.setObjectName("metricsPlotWidget")
        self.plot.setAccessibleName("Training curves")
        self.plot.setMinimumHeight(160)  # however many rows of metric toggles wrap below it
        item = self.plot.getPlotItem()
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", "step")
        item.setMenuEnabled(False)
        self.legend = item.addLegend(offset=(-10, 10))

    def _build_controls(self) -> None:
        # One toggle per metric, wrapping onto further lines: evaluations add a dozen metrics,
        # and a single row would either force the window wider or hide boxes behind a scroll bar.
        self.metric_toggles = QWidget(objectName="metricToggles")
        self.metric_row = FlowLayout(self.metric_toggles)
        self.metric_row.addWidget(QLabel("Show:"))
        size_policy = self.metric_toggles.sizePolicy()
        size_policy.setHeightForWidth(True)
        self.metric_toggles.setSizePolicy(size_policy)
        self.log_check = QCheckBox("log y", objectName="logYCheck", accessibleName="Logarithmic y axis")
        self.log_check.setToolTip("Logarithmic y axis (for positive, decaying curves)")
        self.log_check.toggled.connect(self._set_log)
        self.smoothing = QSlider(Qt.Orientation.Horizontal, objectName="smoothingSlider",
                                 accessibleName="Smoothing")
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(round(DEFAULT_SMOOTHING * 100))
        self.smoothing.setMaximumWidth(140)
        self.smoothing.setToolTip("Exponential moving average of the curves (0: raw)")
        self.smoothing.valueChanged.connect(self._set_smoothing)
        self.smoothing_label = QLabel(f"smoothing {DEFAULT_SMOOTHING:.2f}")
        self.controls = QHBoxLayout()
        self.controls.addWidget(self.metric_toggles, 1, Qt.AlignmentFlag.AlignTop)
        self.controls.addWidget(self.log_check, 0, Qt.AlignmentFlag.AlignTop)
        self.controls.addWidget(self.smoothing_label, 0, Qt.AlignmentFlag.AlignTop)
        self.controls.addWidget(self.smoothing, 0, Qt.AlignmentFlag.AlignTop)

    # -- data in ------------------------------------------------------------------------------
    def add_record(self, step: int, metrics: dict[str, float]) -> None:
        for name in self.curves.add_record(step, metrics):
            self._draw_new(name)
        self._sync_toggles()
        if not self._timer.isActive():
            self._timer.start()

    def load_history(self, records: list[dict[str, Any]]) -> None:
        """Show a finished or re-opened run's metrics.jsonl."""
        self._remove_drawn()
        self.curves.load_history(records)
        for name in self.curves.curves:
            self._draw_new(name)
        self._sync_toggles()
        self.refresh()

    def clear(self) -> None:
        self._remove_drawn()
        self.curves.clear()

    def set_first_shown(self, names: tuple[str, ...]) -> None:
        """Metrics to show when a run's first records arrive (a family's plotted_metrics)."""
        self.curves.first_shown = tuple(names)

    def _remove_drawn(self) -> None:
        for name in list(self._drawn):
            drawn = self._drawn.pop(name)
            self.plot.removeItem(drawn.raw)
            self.plot.removeItem(drawn.smooth)
            self.legend.removeItem(drawn.smooth)
            self.metric_row.removeWidget(drawn.checkbox)
            drawn.checkbox.deleteLater()

    def _draw_new(self, name: str) -> None:
        index = len(self._drawn)
        # Past the palette, spread further hues so two metrics never share a colour.
        colour = COLOURS[index] if index < len(COLOURS) else pg.intColor(index * 5, hues=23).name()
        raw = self.plot.plot(pen=pg.mkPen(pg.mkColor(colour).lighter(160), width=1), connect="finite")
        smooth = self.plot.plot(pen=pg.mkPen(colour, width=2), name=name, connect="finite")
        checkbox = QCheckBox(name, objectName=f"metric_{name}", accessibleName=f"Show {name}")
        checkbox.setChecked(name in self.curves.shown)
        checkbox.toggled.connect(lambda on, n=name: self._toggled(n, on))
        self.metric_row.addWidget(checkbox)
        self._drawn[name] = _Drawn(raw, smooth, checkbox)
        self._apply_visibility(name)

    def _sync_toggles(self) -> None:
        """The checkboxes as the curves' shown set says (it may show defaults on new metrics)."""
        for name, drawn in self._drawn.items():
            if drawn.checkbox.isChecked() != (name in self.curves.shown):
                drawn.checkbox.setChecked(name in self.curves.shown)

    def _toggled(self, name: str, on: bool) -> None:
        self.curves.set_shown(name, on)
        self._apply_visibility(name)

    # -- presentation -------------------------------------------------------------------------
    def refresh(self) -> None:
        shown = [name for name in self._drawn if name in self.curves.shown]
        for name in shown:
            curve, drawn = self.curves.curves[name], self._drawn[name]
            x = np.asarray(curve.steps)
            drawn.raw.setData(x, np.asarray(curve.values))
            drawn.smooth.setData(x, np.asarray(curve.smoothed))
            drawn.raw.setVisible(self.curves.alpha > 0)
            symbol = "o" if len(x) == 1 else None  # a line through one point draws nothing
            if drawn.smooth.opts["symbol"] != symbol:
                drawn.smooth.setSymbol(symbol)
        curves = [self.curves.curves[name] for name in shown]
        fit_view(self.plot.getPlotItem().getViewBox(), [v for c in curves for v in c.steps],
                 [v for c in curves for v in (*c.values, *c.smoothed)], self.log_check.isChecked())

    def _apply_visibility(self, name: str) -> None:
        drawn = self._drawn[name]
        shown = name in self.curves.shown
        drawn.smooth.setVisible(shown)
        drawn.raw.setVisible(shown and self.curves.alpha > 0)
        self.legend.removeItem(drawn.smooth)
        if shown:
            self.legend.addItem(drawn.smooth, name)
        self.refresh()

    def _set_log(self, on: bool) -> None:
        self.plot.getPlotItem().setLogMode(y=on)
        self.refresh()

    def _set_smoothing(self, value: int) -> None:
        self.curves.set_smoothing(value / 100)
        self.smoothing_label.setText(f"smoothing {self.curves.alpha:.2f}")
        self.refresh()

    # -- queries (tests, export) --------------------------------------------------------------
    def metric_names(self) -> list[str]:
        return list(self.curves.curves)

    def shown_metrics(self) -> list[str]:
        return [name for name in self.curves.curves if name in self.curves.shown]

    def set_shown(self, name: str, shown: bool) -> None:
        self._drawn[name].checkbox.setChecked(shown)

    def history(self, name: str) -> tuple[list[float], list[float]]:
        """Every recorded (step, raw value) of a metric, shown or not."""
        curve = self.curves.curves[name]
        return list(curve.steps), list(curve.values)

    def curve_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The smoothed curve as drawn (empty until the next refresh)."""
        x, y = self._drawn[name].smooth.getData()
        return (np.asarray([]), np.asarray([])) if x is None else (x, y)
