"""An inpainting mask being edited: brush, eraser, rectangle, invert, clear, with undo and redo.

Qt-free, so the canvas widget only translates mouse and keys into these calls, and the editing
rules are tested without a window. The mask is bool (H, W) at the model's resolution, True where
pixels are to be filled (white in a mask file). Coordinates are in model pixels as floats: x
runs along a row, y down the columns, and pixel (row r, column c) has its centre at
(c + 0.5, r + 0.5), so a brush covers the pixels whose centres it reaches.

One gesture is one undo step: a brush stroke from press to release, a rectangle, an invert, a
clear, or a whole new mask. A gesture that changes nothing leaves no step behind.
"""

from __future__ import annotations

import numpy as np

UNDO_LIMIT = 200  # gestures kept; a mask of 256² bools is 64 KiB, so 200 of them are 13 MiB


class MaskHistory:
    def __init__(self, size: int, limit: int = UNDO_LIMIT):
        if size < 1:
            raise ValueError("a mask needs a positive size")
        self.size = size
        self.limit = limit
        self._mask = np.zeros((size, size), dtype=bool)
        self._undo: list[np.ndarray] = []
        self._redo: list[np.ndarray] = []
        self._before_stroke: np.ndarray | None = None
        rows, cols = np.mgrid[0:size, 0:size]
        self._centres = np.stack([cols + 0.5, rows + 0.5], axis=-1).astype(np.float64)  # (H, W, 2) as (x, y)

    # -- reading ------------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        """The current mask (a read-only view: edit through the methods, so undo sees it)."""
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def filled(self) -> int:
        return int(self._mask.sum())

    # -- brush strokes ------------------------------------------------------------------------
    def begin_stroke(self) -> None:
        self._before_stroke = self._mask.copy()

    def paint(self, start: tuple[float, float], end: tuple[float, float], radius: float,
              fill: bool = True) -> None:
        """Stamp a round brush of `radius` along the segment start → end: pixels it reaches
        become fill (brush) or keep (eraser, fill=False). Outside a stroke it is a gesture of
        its own."""
        lone = self._before_stroke is None
        if lone:
            self.begin_stroke()
        self._mask[self._reached(np.asarray(start, float), np.asarray(end, float), max(radius, 0.5))] = fill
        if lone:
            self.end_stroke()

    def end_stroke(self) -> None:
        before, self._before_stroke = self._before_stroke, None
        if before is not None:
            self._record(before)

    def _reached(self, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
        """Pixels whose centre lies within `radius` of the segment a–b."""
        ab = b - a
        length2 = float(ab @ ab)
        rel = self._centres - a
        t = np.clip((rel @ ab) / length2, 0.0, 1.0) if length2 > 0 else np.zeros(rel.shape[:2])
        nearest = a + t[..., None] * ab
        return ((self._centres - nearest) ** 2).sum(-1) <= radius * radius

    # -- whole-mask gestures ------------------------------------------------------------------
    def fill_rect(self, corner: tuple[float, float], other: tuple[float, float], fill: bool = True) -> None:
        """Set every pixel whose centre lies in the rectangle with these two opposite corners
        (any order); a rectangle narrower than a pixel still takes the pixel it lies in."""
        (x0, x1), (y0, y1) = sorted((corner[0], other[0])), sorted((corner[1], other[1]))
        c0, c1 = _span(x0, x1, self.size)
        r0, r1 = _span(y0, y1, self.size)
        before = self._mask.copy()
        self._mask[r0:r1, c0:c1] = fill
        self._record(before)

    def invert(self) -> None:
        before = self._mask.copy()
        np.logical_not(self._mask, out=self._mask)
        self._record(before)

    def clear(self) -> None:
        before = self._mask.copy()
        self._mask[:] = False
        self._record(before)

    def replace(self, mask: np.ndarray) -> None:
        """A whole new mask (e.g. loaded from a file), undoable like any gesture."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self._mask.shape:
            raise ValueError(f"a mask of shape {mask.shape} for a canvas of {self.size}×{self.size}")
        before = self._mask.copy()
        self._mask[:] = mask
        self._record(before)

    # -- history ------------------------------------------------------------------------------
    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._mask.copy())
        self._mask[:] = self._undo.pop()
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._mask.copy())
        self._mask[:] = self._redo.pop()
        return True

    def _record(self, before: np.ndarray) -> None:
        if np.array_equal(before, self._mask):
            return  # nothing changed: no empty step to undo
        self._undo.append(before)
        del self._undo[:-self.limit]
        self._redo.clear()


def _span(low: float, high: float, size: int) -> tuple[int, int]:
    """Indices [start, stop) of the pixels whose centres lie in [low, high]; at least the pixel
    `low` lies in, so a click-sized rectangle marks one pixel."""
    if high < 0 or low > size:
        return 0, 0  # wholly off the canvas
    start = max(0, int(np.ceil(low - 0.5)))
    stop = min(size, int(np.floor(high - 0.5)) + 1)
    if stop <= start:
        pixel = min(max(int(np.floor(low)), 0), size - 1)
        return pixel, pixel + 1
    return start, stop


__all__ = ["UNDO_LIMIT", "MaskHistory"]
