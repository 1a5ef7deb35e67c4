"""Inpainting a person's image with any family that declares INPAINT: masks, candidates, and
the guarantee that known pixels come back unchanged.

A mask here is a bool array (H, W) at the model's resolution, True where pixels are to be
filled (the CLI's convention: white = fill, black = keep). Families take the opposite, a
keep-mask, since that is what their algorithms clamp to.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data import load_grey_levels
from ..families import Capability, Family, SampleProgress
from ..runs.images import make_grid, save_png, to_pil, to_uint8

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
