"""Inpainting a person's image with any family that declares INPAINT: masks, candidates, and
the guarantee that known pixels come back unchanged.

A mask here is a bool array (H, W) at the model's resolution, True where pixels are to be
filled (the CLI's convention: white = fill, black = keep). Families take the opposite, a
keep-mask, since that is what their algorithms clamp to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data import load_grey_levels
from ..families import Capability, Family, SampleProgress
from ..runs.images import make_grid, save_png, to_pil, to_uint8
from .masks import MaskHistory

MASK_THRESHOLD = 128  # grey levels at or above this count as "fill"


class InpaintError(ValueError):
    """Bad input to inpainting, with a message meant for the user."""


def load_mask(path: str | os.PathLike[str], size: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as bool (size, size), True = fill (white). The mask is cropped and scaled the
    way its image is (centre crop to a square, then resize), with nearest-neighbour so that it
    stays a mask; `image_size` (the image file's width, height) must match the mask's when
    given, since otherwise the two crops would not line up. Grey levels are read at the file's
    bit depth (core.data.load_grey_levels)."""
    grey = load_grey_levels(path, "mask")
    if image_size is not None and grey.size != tuple(image_size) and grey.size != (size, size):
        raise InpaintError(f"the mask is {grey.size[0]}×{grey.size[1]} px but the image is "
                           f"{image_size[0]}×{image_size[1]}; make them the same size "
                           f"(or the mask {size}×{size}, the model's)")
    fitted = ImageOps.fit(grey, (size, size), Image.Resampling.NEAREST)
    return np.asarray(fitted) >= MASK_THRESHOLD


def inpaint_candidates(family: Family, image: np.ndarray, fill: np.ndarray, n: int, seed: int,
                       label: int | None = None, progress: SampleProgress | None = None) -> np.ndarray:
    """`n` fills of `image` (uint8 (H, W, C) at the model's size) where `fill` is True, candidate
    k drawn with seed + k: (n, H, W, C) uint8. Known pixels are copied from the image, so they
    are preserved exactly whatever the family's arithmetic."""
    if Capability.INPAINT not in family.capabilities:
        raise InpaintError(f"{family.title} cannot inpaint")
    spec = family.spec
    if image.shape != (spec.size, spec.size, spec.channels):
        raise InpaintError(f"an image of shape {image.shape} given to a model of "
                           f"{spec.size}×{spec.size}×{spec.channels}")
    if fill.shape != (spec.size, spec.size):
        raise InpaintError(f"a mask of shape {fill.shape} for images of {spec.size}×{spec.size}")
    if not fill.any():
        raise InpaintError("the mask marks nothing to fill (white = fill, black = keep)")
    if n < 1:
        raise InpaintError("ask for at least 1 candidate")
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255.0)[None]
    keep = torch.from_numpy(~fill)[None, None]
    labels = torch.full((1,), label or 0, dtype=torch.long) if spec.num_classes else None
    family.eval_mode()
    candidates = []
    for k in range(n):
        reported = []

        def overall(step: int, total: int, images, k: int = k, reported: list = reported) -> None:
            # One scale for the whole job: candidate k's steps follow the k before it.
            reported.append(step)
            progress(k * total + step, n * total, images)

        filled = to_uint8(family.inpaint(x, keep, seed + k, labels,
                                         progress=None if progress is None else overall))[0]
        candidates.append(np.where(fill[:, :, None], filled, image))
        if progress is not None and not reported:
            progress(k + 1, n, None)  # a one-pass method: count candidates instead
    return np.stack(candidates)


def fit_to_model(image: np.ndarray, fill: np.ndarray, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and its mask for a model of another resolution or colour count, so families
    trained at different sizes can fill the same hole side by side: the image resampled with
    Lanczos and converted (RGB ↔ grey), the mask resampled nearest-neighbour so it stays a mask."""
    picture = to_pil(image).convert("L" if channels == 1 else "RGB")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(picture, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    hole = Image.fromarray(fill.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return pixels, np.asarray(hole) >= MASK_THRESHOLD


HOLE_TINT = np.array([230, 40, 90], dtype=np.float32)  # the overlay colour of the hole, as in the canvas
HOLE_ALPHA = 0.55


def show_hole(image: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """RGB uint8 of the image with the hole tinted, as the canvas overlays it."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    tinted = rgb.astype(np.float32) * (1 - HOLE_ALPHA) + HOLE_TINT * HOLE_ALPHA
    return np.where(fill[:, :, None], tinted.round(), rgb).astype(np.uint8)


def mask_image(fill: np.ndarray) -> np.ndarray:
    """The mask as a grey image in the file convention (white = fill, black = keep), (H, W, 1)."""
    return (fill.astype(np.uint8) * 255)[:, :, None]


def before_after(image: np.ndarray, fill: np.ndarray, result: np.ndarray, padding: int = 2) -> np.ndarray:
    """One RGB strip: the image, the image with its hole marked, and the result."""
    rgb = [show_hole(image, np.zeros_like(fill)), show_hole(image, fill), show_hole(result, np.zeros_like(fill))]
    return make_grid(np.stack(rgb), columns=3, padding=padding, background=255)


def export_inpainting(path: str | os.PathLike[str], image: np.ndarray, fill: np.ndarray, result: np.ndarray,
                      metadata: dict[str, object], scale: int = 1) -> list[Path]:
    """Write the result to `path` (.png), and beside it STEM-mask.png (white = fill, so
    `genstudio inpaint --mask` takes it back) and STEM-before-after.png; each carries the
    metadata (family, run, seed, method …). Returns the three paths."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InpaintError(f"{out.name}: export inpainting as .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    mask_path = out.with_name(f"{out.stem}-mask.png")
    strip_path = out.with_name(f"{out.stem}-before-after.png")
    # Replacing `path` (asked in the save dialog) replaces its companions; a new name must not
    # replace files that merely look like companions.
    taken = [p.name for p in (mask_path, strip_path) if p.exists()] if not out.exists() else []
    if taken:
        raise InpaintError(f"{' and '.join(taken)} already there; export under another name")
    meta = {**metadata, "filled_pixels": int(fill.sum())}
    save_png(out, result, meta, scale=scale)
    save_png(mask_path, mask_image(fill), {**meta, "mask": "white = fill, black = keep"}, scale=scale)
    save_png(strip_path, before_after(image, fill, result), {**meta, "panels": "input | hole | result"},
             scale=scale)
    return [out, mask_path, strip_path]


__all__ = ["HOLE_ALPHA", "HOLE_TINT", "MASK_THRESHOLD", "InpaintError", "before_after", "export_inpainting",
           "fit_to_model", "inpaint_candidates", "load_mask", "mask_image", "show_hole"]


# -- a person's inpainting session -------------------------------------------------------------


@dataclass(frozen=True)
class _Refit:
    """The picture a model change resampled (`from_*`) and what it made of them."""

    from_original: np.ndarray
    from_image: np.ndarray
    from_mask: np.ndarray
    image: np.ndarray
    mask: np.ndarray


class InpaintSession:
    """The picture a person is inpainting, without Qt: the image as loaded and where it came
    from, the image being worked on (a chosen candidate replaces it), the images Back returns
    to, the mask with its undo history, and the last fill. The Inpaint tab renders it."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.original: np.ndarray | None = None   # the image as it was loaded
        self.original_source = ""
        self.image: np.ndarray | None = None      # the image being worked on
        self.source = ""                          # where it came from, for the metadata
        self.earlier: list[np.ndarray] = []       # what Back returns to
        self.history: MaskHistory | None = None
        self.result: Any = None                   # the last fill's candidates
        self._refit: _Refit | None = None

    def start(self, image: np.ndarray, source: str) -> None:
        """A new picture (uint8 (H, W, C) at the model's size) with an empty mask."""
        self.earlier.clear()
        self._show(image, source, original=image)

    def continue_from(self, candidate: np.ndarray, source: str) -> None:
        """Work on from a candidate: it becomes the image, and the mask is cleared (undoably)
        so that the next region can be painted; Back returns to the image before."""
        assert self.image is not None and self.history is not None
        self.earlier.append(self.image)
        self._show(candidate, source)
        self.history.clear()

    def back(self) -> bool:
        if not self.earlier:
            return False
        self._show(self.earlier.pop(), self.source)
        return True

    def revert(self) -> bool:
        """Back to the image as loaded; the mask stays."""
        if self.original is None:
            return False
        self.earlier.clear()
        self._show(self.original, self.original_source)
        return True

    @property
    def can_revert(self) -> bool:
        return self.image is not None and self.image is not self.original

    def refit(self, size: int, channels: int) -> bool:
        """Resample the picture and its mask for a model of another size or colour count (a new
        picture, so the fill's result goes). A picture untouched since the last refit starts
        again from what that refit started from, so that a trip through a smaller model does
        not leave the image blurred and the mask grown. False: there was no picture."""
        if self.image is None or self.original is None or self.history is None:
            return False
        original, image, mask = self.original, self.image, self.history.mask.copy()
        last = self._refit
        if last is not None and image is last.image and np.array_equal(mask, last.mask):
            original, image, mask = last.from_original, last.from_image, last.from_mask
        fitted_original, _ = fit_to_model(original, mask, size, channels)
        fitted, fitted_mask = fit_to_model(image, mask, size, channels)
        self.earlier.clear()
        self._show(fitted, self.source, original=fitted_original)
        self.history.replace(fitted_mask)
        self._refit = _Refit(original, image, mask, fitted, fitted_mask.copy())
        return True

    def _show(self, image: np.ndarray, source: str, original: np.ndarray | None = None) -> None:
        if original is not None:  # a new picture: a fresh mask, no fill yet
            self.original, self.original_source = original, source
            self.history = MaskHistory(image.shape[0])
            self.result = None
        self.image, self.source = image, source
