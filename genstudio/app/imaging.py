"""numpy images on screen: conversion to QImage and a crisp, pixel-exact image view."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QImage, QPainter, QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QSizePolicy, QVBoxLayout, QWidget


def to_qimage(array: np.ndarray) -> QImage:
    """(H, W, C) uint8 with C in {1, 3} → a QImage that owns a copy of the pixels.

    Safe off the GUI thread (QImage is; QPixmap is not)."""
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    h, w, c = array.shape
    fmt = QImage.Format.Format_Grayscale8 if c == 1 else QImage.Format.Format_RGB888
    return QImage(array.data, w, h, array.strides[0], fmt).copy()


def scaled_pixmap(image: QImage, scale: int) -> QPixmap:
    """Enlarge by a whole factor with nearest-neighbour sampling: pixels stay square and sharp."""
    size = image.size() * max(1, scale)
    return QPixmap.fromImage(image.scaled(size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                          Qt.TransformationMode.FastTransformation))


def fit_rect(image_size: QSize, area: QRect) -> QRect:
    """The largest rectangle with the image's aspect ratio centred in `area`; a whole-number
    scale when the image is smaller than the area, so every pixel becomes an equal block."""
    w, h = image_size.width(), image_size.height()
    if w == 0 or h == 0:
        return QRect()
    scale = min(area.width() / w, area.height() / h)
    if scale >= 1:
        scale = int(scale)
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    return QRect(area.x() + (area.width() - tw) // 2, area.y() + (area.height() - th) // 2, tw, th)


class PixelView(QWidget):
    """Shows one image as large as fits, scaled with nearest-neighbour, or a placeholder text."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._image: QImage | None = None
        self._placeholder = placeholder
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(64, 64)

    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(256, 256)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        area = self.rect().adjusted(4, 4, -4, -4)
        if self._image is None or self._image.isNull():
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._placeholder)
            return
        target = fit_rect(self._image.size(), area)
        # Enlarging: nearest-neighbour keeps pixels square and crisp. Shrinking (a big grid in
        # a small pane): smooth, or whole rows and columns of pixels would simply vanish.
        shrinking = target.width() < self._image.width()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, shrinking)
        painter.drawImage(target, self._image)


class ImageDialog(QDialog):
    """A larger view of one image (double-clicked gallery tile)."""

    def __init__(self, image: QImage, title: str, caption: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.view = PixelView()
        self.view.setObjectName("enlargedImage")
        self.view.set_image(image)
        self.view.setMinimumSize(384, 384)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view)
        if caption:
            label = QLabel(caption)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(label)
        self.resize(480, 520)
