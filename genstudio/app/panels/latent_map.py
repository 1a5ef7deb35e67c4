"""The 2-D latent map: encoded training images as points coloured by class.

Hovering a point previews its image, clicking a point decodes its latent, and a left-button
click or drag in the plane decodes the latent under the pointer, continuously. The wheel zooms
and a right-button drag pans (pyqtgraph's own gestures), so the left button is free for picking.
One ScatterPlotItem holds every point: thousands stay smooth."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QStackedLayout, QVBoxLayout, QWidget

# Distinct colours for classes (cycled beyond ten); one neutral colour without classes.
CLASS_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
NO_CLASS_COLOUR = "#4e79a7"
MAX_LEGEND_ENTRIES = 12
POINT_SIZE = 6


class _PickingViewBox(pg.ViewBox):
    """Left click / drag report the plane position instead of panning."""

    picked = Signal(float, float)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - pyqtgraph API
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()  # right drag: pyqtgraph's pan below, via the default handler
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        self._emit(ev.scenePos())

    def mouseClickEvent(self, ev):  # noqa: N802 - pyqtgraph API
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._emit(ev.scenePos())
        else:
            super().mouseClickEvent(ev)

    def _emit(self, scene_pos) -> None:
        point = self.mapSceneToView(scene_pos)
        self.picked.emit(point.x(), point.y())


class LatentMapView(QWidget):
    point_clicked = Signal(int)           # row of the encoded set
    plane_picked = Signal(float, float)   # a left click or drag off the points
    point_hovered = Signal(int)           # row under the pointer; −1 when none

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view_box = _PickingViewBox()
        self.view_box.setMouseMode(pg.ViewBox.PanMode)
        self.plot = pg.PlotWidget(viewBox=self.view_box, background="w")
        self.plot.setObjectName("latentMap")
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.scatter = pg.ScatterPlotItem(size=POINT_SIZE, pen=None, hoverable=True, tip=None,
                                          hoverPen=pg.mkPen("k", width=1.5), hoverSize=POINT_SIZE + 4)
        self.plot.addItem(self.scatter)
        self.marker = pg.ScatterPlotItem(size=16, symbol="star", pen=pg.mkPen("k", width=1.2),
                                         brush=pg.mkBrush("#ffd400"))
        self.marker.setZValue(10)
        self.plot.addItem(self.marker)
        # Translucent, in the corner with the fewest points (set_map), and draggable: it must
        # not hide the points it names.
        self.legend = self.plot.addLegend(offset=(5, 5), labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255, 170))
        self._legend_items: list[pg.ScatterPlotItem] = []
        self.message = QLabel(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self.message.setObjectName("latentMapMessage")
        self._stack = QStackedLayout()
        self._stack.addWidget(self.message)
        self._stack.addWidget(self.plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._stack)
        self.points = np.zeros((0, 2), np.float32)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.scatter.sigHovered.connect(self._on_hovered)
        self.view_box.picked.connect(self.plane_picked)
        self._hovered = -1
        self.show_message("The map appears once training images are encoded.")

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self._stack.setCurrentWidget(self.message)

    def set_map(self, points: np.ndarray, labels: np.ndarray, class_names: list[str],
                axis_names: tuple[str, str]) -> None:
        self.points = np.asarray(points, np.float32)
        colours = [pg.mkBrush(CLASS_COLOURS[i % len(CLASS_COLOURS)]) for i in range(max(1, len(class_names)))]
        brushes = ([colours[label] for label in labels] if class_names
                   else [pg.mkBrush(NO_CLASS_COLOUR)] * len(points))
        self.scatter.setData(x=self.points[:, 0], y=self.points[:, 1], brush=brushes,
                             data=np.arange(len(points)))
        self.legend.clear()
        self._legend_items = []
        for i, name in enumerate(class_names[:MAX_LEGEND_ENTRIES]):
            item = pg.ScatterPlotItem(size=POINT_SIZE, pen=None, brush=colours[i])
            self._legend_items.append(item)  # kept alive: the legend only draws its sample
            self.legend.addItem(item, name)
        self.plot.setLabel("bottom", axis_names[0])
        self.plot.setLabel("left", axis_names[1])
        self.marker.setData([], [])
        self.view_box.autoRange(padding=0.05)
        self.legend.setOffset(_emptiest_corner(self.points))
        self._stack.setCurrentWidget(self.plot)

    def set_marker(self, x: float | None, y: float | None) -> None:
        """Where the explorer's current latent falls in the plane (None: hide)."""
        self.marker.setData([] if x is None else [x], [] if y is None else [y])

    def _on_clicked(self, _item, points, _event) -> None:
        if len(points):
            self.point_clicked.emit(int(points[0].data()))

    def _on_hovered(self, _item, points, _event) -> None:
        row = int(points[0].data()) if len(points) else -1
        if row != self._hovered:
            self._hovered = row
            self.point_hovered.emit(row)


def _emptiest_corner(points: np.ndarray, share: float = 0.35) -> tuple[int, int]:
    """The legend offset (pyqtgraph: +x from the left, −x from the right, +y from the top) of
    the plot corner whose outer `share` of each axis holds the fewest points."""
    if len(points) == 0:
        return (5, 5)
    low, high = points.min(axis=0), points.max(axis=0)
    unit = (points - low) / np.maximum(high - low, 1e-12)  # [0, 1]; y grows upwards
    left, right = unit[:, 0] < share, unit[:, 0] > 1 - share
    top, bottom = unit[:, 1] > 1 - share, unit[:, 1] < share
    corners = {(5, 5): left & top, (-5, 5): right & top, (5, -5): left & bottom, (-5, -5): right & bottom}
    return min(corners, key=lambda corner: int(corners[corner].sum()))
