"""Image conversions, grids and PNG export with provenance metadata (Pillow + numpy only)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .atomic import write_atomic


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → (N, H, W, C) uint8, rounding to nearest."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    array = np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255)
    return array.astype(np.uint8).transpose(0, 2, 3, 1)


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2,
              background: int = 255) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (H', W', C) image, row-major."""
    n, h, w, c = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c),
                   background, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, C) uint8 → PIL image (mode L for one channel, RGB for three)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


def save_png(path: str | os.PathLike, image: np.ndarray, metadata: dict[str, Any] | None = None,
             scale: int = 1, replace: bool = True) -> None:
    """Write one (H, W, C) uint8 image as PNG atomically; metadata goes into tEXt chunks.
    `replace=False`: an existing file is kept and FileExistsError raised.

    No timestamps are written, so the same pixels and metadata give the same bytes."""
    pil = to_pil(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(f"genstudio:{key}", str(value))
    write_atomic(path, lambda tmp: pil.save(tmp, format="PNG", pnginfo=info), replace)


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    with Image.open(path, formats=("PNG",)) as im:
        text = getattr(im, "text", {}) or {}
    prefix = "genstudio:"
    return {k[len(prefix):]: v for k, v in text.items() if k.startswith(prefix)}


def save_gif(path: str | os.PathLike, frames: np.ndarray, metadata: dict[str, Any] | None = None,
             scale: int = 1, frame_ms: int = 120, bounce: bool = True) -> None:
    """Write (N, H, W, C) uint8 frames as a looping animated GIF, atomically. `bounce` plays
    the frames forward then back, so a loop has no jump; metadata goes into the GIF comment
    as "genstudio:key=value" lines. Grey stays grey; colour is quantised to one 256-colour
    palette shared by all frames, which is plenty at model resolution."""
    if len(frames) < 1:
        raise ValueError("a GIF needs at least one frame")
    order = list(range(len(frames)))
    if bounce and len(frames) > 2:
        order += order[-2:0:-1]
    # One palette for every frame (from all of them at once), so colours do not flicker.
    palette = None if frames.shape[-1] == 1 else to_pil(make_grid(frames, padding=0)).quantize(256)
    pils = []
    for i in order:
        pil = to_pil(frames[i])
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
        pils.append(pil if palette is None else pil.quantize(palette=palette, dither=Image.Dither.NONE))
    comment = "\n".join(f"genstudio:{k}={v}" for k, v in (metadata or {}).items())
    write_atomic(path, lambda tmp: pils[0].save(tmp, format="GIF", save_all=True, append_images=pils[1:],
                                                duration=frame_ms, loop=0, comment=comment,
                                                disposal=1, optimize=False))


def read_gif_metadata(path: str | os.PathLike) -> dict[str, str]:
    with Image.open(path, formats=("GIF",)) as im:
        comment = im.info.get("comment", b"")
    text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
    prefix = "genstudio:"
    pairs = (line[len(prefix):].split("=", 1) for line in text.splitlines() if line.startswith(prefix))
    return {key: value for key, value in pairs}
