"""Live training curves: one per metric, created once and refreshed on a timer.

Metrics of very different scales (a VAE's loss is thousands of nats, its bits/dim a few units)
cannot share a linear axis, so only one is shown at first ("bpd" when present) and the others
are a checkbox away; a log-y toggle and EMA smoothing help read noisy or decaying curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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

from genstudio.core.runs.run import BOOKKEEPING_KEYS

from ..layout import FlowLayout

REFRESH_MS = 100                       # at most 10 redraws a second, however fast steps come
PREFERRED_METRICS = ("bpd", "loss")    # shown first; the rest start hidden
NOT_METRICS = BOOKKEEPING_KEYS
DEFAULT_SMOOTHING = 0.6
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#bcbd22", "#393b79", "#7f7f7f", "#637939", "#e7969c", "#8c6d31", "#6baed6", "#31a354")


@dataclass
class _Series:
    """One metric's points, its EMA, and the two curves drawing them."""

    raw: pg.PlotDataItem
    smooth: pg.PlotDataItem
    checkbox: QCheckBox
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    _ema: float = 0.0
    _weight: float = 0.0

    def add(self, step: float, value: float, alpha: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if math.isfinite(value):
            # Debiased EMA (as TensorBoard): starts at the first value instead of at zero.
            self._ema = alpha * self._ema + (1 - alpha) * value
            self._weight = alpha * self._weight + (1 - alpha)
        self.smoothed.append(self._ema / self._weight if self._weight else math.nan)

    def resmooth(self, alpha: float) -> None:
        steps, values = self.steps, self.values
        self.steps, self.values, self.smoothed = [], [], []
        self._ema = self._weight = 0.0
        for step, value in zip(steps, values, strict=True):
            self.add(step, value, alpha)


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
        self._series: dict[str, _Series] = {}
        self._alpha = DEFAULT_SMOOTHING
        self._first_shown: tuple[str, ...] = ()  # the family's plotted_metrics
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
        new = [name for name in metrics if name not in self._series]
        for name, value in metrics.items():
            series = self._series.get(name) or self._new_series(name)
            series.add(float(step), float(value), self._alpha)
        if new and not self.shown_metrics():  # a user who hid every curve is not overruled
            for name in self._default_metrics():
                self.set_shown(name, True)
        if not self._timer.isActive():
            self._timer.start()

    def load_history(self, records: list[dict[str, Any]]) -> None:
        """Show a finished or re-opened run's metrics.jsonl."""
        self.clear()
        for record in records:
            metrics = {k: v for k, v in record.items()
                       if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.add_record(int(record.get("step", 0)), metrics)
        self.refresh()

    def clear(self) -> None:
        for name in list(self._series):
            series = self._series.pop(name)
            self.plot.removeItem(series.raw)
            self.plot.removeItem(series.smooth)
            self.legend.removeItem(series.smooth)
            self.metric_row.removeWidget(series.checkbox)
            series.checkbox.deleteLater()

    def _new_series(self, name: str) -> _Series:
        index = len(self._series)
        # Past the palette, spread further hues so two metrics never share a colour.
        colour = COLOURS[index] if index < len(COLOURS) else pg.intColor(index * 5, hues=23).name()
        raw = self.plot.plot(pen=pg.mkPen(pg.mkColor(colour).lighter(160), width=1), connect="finite")
        smooth = self.plot.plot(pen=pg.mkPen(colour, width=2), name=name, connect="finite")
        checkbox = QCheckBox(name, objectName=f"metric_{name}", accessibleName=f"Show {name}")
        checkbox.toggled.connect(lambda _on, n=name: self._apply_visibility(n))
        self.metric_row.addWidget(checkbox)
        series = self._series[name] = _Series(raw, smooth, checkbox)
        self._apply_visibility(name)
        return series

    def set_first_shown(self, names: tuple[str, ...]) -> None:
        """Metrics to show when a run's first records arrive (a family's plotted_metrics)."""
        self._first_shown = tuple(names)

    def _default_metrics(self) -> list[str]:
        family_choice = [name for name in self._first_shown if name in self._series]
        if family_choice:
            return family_choice
        preferred = [name for name in PREFERRED_METRICS if name in self._series]
        return preferred[:1] or [next(iter(self._series))]

    # -- presentation -------------------------------------------------------------------------
    def refresh(self) -> None:
        shown = [series for series in self._series.values() if series.checkbox.isChecked()]
        for series in shown:
            x = np.asarray(series.steps)
            series.raw.setData(x, np.asarray(series.values))
            series.smooth.setData(x, np.asarray(series.smoothed))
            series.raw.setVisible(self._alpha > 0)
            symbol = "o" if len(x) == 1 else None  # a line through one point draws nothing
            if series.smooth.opts["symbol"] != symbol:
                series.smooth.setSymbol(symbol)
        fit_view(self.plot.getPlotItem().getViewBox(), [v for s in shown for v in s.steps],
                 [v for s in shown for v in (*s.values, *s.smoothed)], self.log_check.isChecked())

    def _apply_visibility(self, name: str) -> None:
        series = self._series[name]
        shown = series.checkbox.isChecked()
        series.smooth.setVisible(shown)
        series.raw.setVisible(shown and self._alpha > 0)
        self.legend.removeItem(series.smooth)
        if shown:
            self.legend.addItem(series.smooth, name)
        self.refresh()

    def _set_log(self, on: bool) -> None:
        self.plot.getPlotItem().setLogMode(y=on)
        self.refresh()

    def _set_smoothing(self, value: int) -> None:
        self._alpha = value / 100
        self.smoothing_label.setText(f"smoothing {self._alpha:.2f}")
        for series in self._series.values():
            series.resmooth(self._alpha)
        self.refresh()

    # -- queries (tests, export) --------------------------------------------------------------
    def metric_names(self) -> list[str]:
        return list(self._series)

    def shown_metrics(self) -> list[str]:
        return [n for n, s in self._series.items() if s.checkbox.isChecked()]

    def set_shown(self, name: str, shown: bool) -> None:
        self._series[name].checkbox.setChecked(shown)

    def history(self, name: str) -> tuple[list[float], list[float]]:
        """Every recorded (step, raw value) of a metric, shown or not."""
        series = self._series[name]
        return list(series.steps), list(series.values)

    def curve_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The smoothed curve as drawn (empty until the next refresh)."""
        x, y = self._series[name].smooth.getData()
        return (np.asarray([]), np.asarray([])) if x is None else (x, y)
