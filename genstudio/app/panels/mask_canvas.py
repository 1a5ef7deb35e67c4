"""The canvas where a person paints what to fill: the image at the model's resolution, enlarged
with square pixels, the mask over it as a tinted overlay, zoom and pan.

Mouse: left button paints with the current tool (brush, eraser, or a rectangle dragged corner to
corner); right or middle drag pans; the wheel zooms about the pointer. The editing itself (what
a stroke marks, undo and redo) is core.masks.MaskHistory; this widget only maps the pointer
into model pixels and draws.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from genstudio.core.trained.inpainting import HOLE_ALPHA, HOLE_TINT
from genstudio.core.trained.masks import MaskHistory

from ..imaging import to_qimage

BRUSH, ERASER, RECTANGLE = "brush", "eraser", "rectangle"
TOOLS = (BRUSH, ERASER, RECTANGLE)
ZOOM_STEP = 1.25        # per wheel notch or +/- key
MAX_ZOOM = 64.0         # screen pixels per model pixel
MARGIN = 8              # around the image when fitted


class MaskCanvas(QWidget):
    mask_changed = Signal()      # after every gesture, undo and redo
    pointer_moved = Signal(int, int)  # the model pixel (column, row) under the pointer

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("maskCanvas")
        self.setAccessibleName("Inpainting canvas")
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)
        self.history: MaskHistory | None = None
        self.tool = BRUSH
        self.radius = 2.0              # brush radius in model pixels
        self.overlay_visible = True
        self._image: QImage | None = None
        self._overlay: QImage | None = None
        self._zoom: float | None = None  # None: fit the widget, following resizes
        self._offset = QPointF()         # where the image's top-left corner is drawn (when zoomed)
        self._pointer: QPointF | None = None
        self._last: tuple[float, float] | None = None   # the previous brush point of a stroke
        self._rect_start: tuple[float, float] | None = None
        self._pan_from: QPointF | None = None
        self._placeholder = "Load an image to paint a mask on it"

    # -- content ------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, history: MaskHistory) -> None:
        """Show (H, W, C) uint8 with the mask in `history` (of the same size) over it."""
        if history.size != image.shape[0] or image.shape[0] != image.shape[1]:
            raise ValueError("the canvas shows square images with a mask of the same size")
        self._image = to_qimage(image)
        self.history = history
        self.refresh_mask()

    def clear(self, placeholder: str) -> None:
        self._image = self._overlay = None
        self.history = None
        self._placeholder = placeholder
        self.update()

    def refresh_mask(self) -> None:
        """Rebuild the overlay from the history's mask (after any edit) and repaint."""
        if self.history is None:
            return
        mask = self.history.mask
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask] = (*HOLE_TINT.astype(np.uint8), round(255 * HOLE_ALPHA))
        self._overlay = QImage(rgba.data, mask.shape[1], mask.shape[0], 4 * mask.shape[1],
                               QImage.Format.Format_RGBA8888).copy()
        self.update()

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay_visible = visible
        self.update()

    # -- view ---------------------------------------------------------------------------------
    def zoom(self) -> float:
        """Screen pixels per model pixel."""
        if self._zoom is not None:
            return self._zoom
        if self._image is None:
            return 1.0
        return max(0.1, min(self.width() - 2 * MARGIN, self.height() - 2 * MARGIN) / self._image.width())

    def fit(self) -> None:
        self._zoom = None
        self.update()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the model point under `anchor` (default: the centre) where it is."""
        if self._image is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        fixed = self.to_model(anchor)
        zoom = min(MAX_ZOOM, max(0.25, self.zoom() * factor))
        self._zoom = zoom
        self._offset = QPointF(anchor.x() - fixed[0] * zoom, anchor.y() - fixed[1] * zoom)
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is drawn, in widget coordinates."""
        if self._image is None:
            return QRectF()
        zoom, side = self.zoom(), self._image.width()
        if self._zoom is None:  # fitted: centred
            top_left = QPointF((self.width() - side * zoom) / 2, (self.height() - side * zoom) / 2)
        else:
            top_left = self._offset
        return QRectF(top_left, QPointF(top_left.x() + side * zoom, top_left.y() + side * zoom))

    def to_model(self, point: QPointF) -> tuple[float, float]:
        """A widget point in model pixels (x along a row, y down), unclamped."""
        rect, zoom = self.image_rect(), self.zoom()
        return (point.x() - rect.x()) / zoom, (point.y() - rect.y()) / zoom

    def from_model(self, x: float, y: float) -> QPointF:
        rect, zoom = self.image_rect(), self.zoom()
        return QPointF(rect.x() + x * zoom, rect.y() + y * zoom)

    def set_radius(self, radius: float) -> None:
        self.radius = radius
        self.update()

    # -- mouse --------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._image is None or self.history is None:
            return
        if event.button() in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self._start_pan(event.position())
        elif event.button() == Qt.MouseButton.LeftButton:
            point = self.to_model(event.position())
            if self.tool == RECTANGLE:
                self._rect_start = point
            else:
                self.history.begin_stroke()
                self._last = point
                self._stamp(point)
        self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self._pointer = event.position()
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._offset += delta
            self._pan_from = event.position()
        elif self._last is not None:
            self._stamp(self.to_model(event.position()))
        if self._image is not None:
            x, y = self.to_model(event.position())
            self.pointer_moved.emit(int(np.floor(x)), int(np.floor(y)))
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.history is None:
            return
        if event.button() in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self._pan_from = None
        elif event.button() == Qt.MouseButton.LeftButton:
            if self._rect_start is not None:
                self.history.fill_rect(self._rect_start, self.to_model(event.position()))
                self._rect_start = None
                self._mask_edited()
            elif self._last is not None:
                self._last = None
                self.history.end_stroke()
                self._mask_edited()
        self.update()

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._pointer = None
        self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt API
        notches = event.angleDelta().y() / 120
        if notches:
            self.zoom_by(ZOOM_STEP ** notches, event.position())

    def _start_pan(self, at: QPointF) -> None:
        if self._zoom is None:  # panning a fitted view: keep it where it is, then move
            self._offset = self.image_rect().topLeft()
            self._zoom = self.zoom()
        self._pan_from = at

    def _stamp(self, point: tuple[float, float]) -> None:
        assert self.history is not None and self._last is not None
        self.history.paint(self._last, point, self.radius, fill=self.tool != ERASER)
        self._last = point
        self.refresh_mask()

    def _mask_edited(self) -> None:
        self.refresh_mask()
        self.mask_changed.emit()

    # -- drawing ------------------------------------------------------------------------------
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(420, 420)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().base())
        if self._image is None:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect().adjusted(8, 8, -8, -8),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            return
        rect = self.image_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # square pixels
        painter.drawImage(rect, self._image)
        if self.overlay_visible and self._overlay is not None:
            painter.drawImage(rect, self._overlay)
        painter.setPen(QPen(self.palette().mid().color(), 1))
        painter.drawRect(rect.adjusted(-1, -1, 0, 0))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        outline = QPen(QColor(255, 255, 255), 1.5)
        if self._rect_start is not None and self._pointer is not None:
            corner = self.from_model(*self._rect_start)
            painter.setPen(outline)
            painter.drawRect(QRectF(corner, self._pointer).normalized())
        elif self._pointer is not None and self.tool != RECTANGLE:
            # The brush's footprint, black inside white so it shows on any image.
            r = self.radius * self.zoom()
            for colour, width in ((QColor(0, 0, 0), 3.0), (QColor(255, 255, 255), 1.2)):
                painter.setPen(QPen(colour, width))
                painter.drawEllipse(self._pointer, r, r)
