"""Datasets: a folder of the user's images or a procedural built-in, as one uint8 array.

    ds = load_source("builtin:shapes", size=32)        # or a folder path
    ds.images  # (N, 32, 32, C) uint8;  ds.labels, ds.class_names, ds.skipped, ds.describe()

numpy + Pillow only (no torch, no Qt) so it imports fast and runs headless.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image

from .builtin import BUILTIN_DATASETS, load_builtin
from .dataset import DatasetCancelled, DatasetError, ImageDataset, SkippedFile, to_channels
from .decode import (
    MAX_PIXELS,
    SkipImage,
    decode_grey_levels,
    decode_image,
    image_size_upright,
    pillow_warnings_as_skips,
)
from .folder import load_folder
from .scan import FolderScan, scan_folder
from .split import Split, held_out_split

MIN_SIZE, MAX_SIZE = 8, 256
T = TypeVar("T")
BUILTIN_PREFIX = "builtin:"

__all__ = [
    "BUILTIN_DATASETS",
    "MAX_PIXELS",
    "DatasetCancelled",
    "DatasetError",
    "FolderScan",
    "ImageDataset",
    "SkippedFile",
    "Split",
    "held_out_split",
    "image_file_size",
    "load_grey_levels",
    "load_image",
    "load_source",
    "scan_folder",
]


def load_source(
    source: str | os.PathLike[str],
    size: int = 32,
    channels: int | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImageDataset:
    """Load "builtin:NAME" or a folder as size×size images with `channels` (None: 1 if every
    image is grey, else 3). Raises DatasetError with a sentence for the user; a folder's bad
    files are skipped and listed in .skipped instead. progress(done, total) is called about
    every 1%; should_stop() returning True cancels with DatasetCancelled."""
    size = _checked_size(size)
    if channels not in (None, 1, 3):
        raise DatasetError(f"Channels must be 1 (grey), 3 (RGB) or automatic, got {channels!r}.")
    options = {"progress": progress, "cache_dir": cache_dir, "should_stop": should_stop}
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        rgb = load_builtin(source[len(BUILTIN_PREFIX) :], size, **options)
    else:
        rgb = load_folder(source, size, **options)
    return dataclasses.replace(rgb, images=to_channels(rgb.images, channels))


def _checked_size(size: int) -> int:
    try:
        size = operator.index(size)
    except TypeError:
        raise DatasetError(f"Image size must be a whole number of pixels, got {size!r}.") from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DatasetError(f"Image size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}.")
    return size


def load_image(path: str | os.PathLike[str], size: int, channels: int) -> np.ndarray:
    """One image file as uint8 (size, size, channels), prepared exactly as a folder's images
    are (first frame, upright, alpha over white, centre-cropped, resized); raises DatasetError
    with the reason when the file cannot be used."""
    size = _checked_size(size)
    rgb = _read_file(path, "image", lambda p: decode_image(p, size))
    return to_channels(rgb[None], channels)[0]


def load_grey_levels(path: str | os.PathLike[str], what: str = "mask") -> Image.Image:
    """An image file (a mask) as 8-bit grey at its own size, upright, opened like any image of
    the program (allow-listed formats, the pixel cap) and scaled by its bit depth; raises
    DatasetError naming `what` the file was meant to be."""
    return _read_file(path, what, decode_grey_levels, f"not a readable {what} image ({{}})")


def image_file_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file as shown upright, from its header; raises DatasetError."""
    return _read_file(path, "image", image_size_upright)


def _read_file(path: str | os.PathLike[str], what: str, read: Callable[[str], T], reason: str = "{}") -> T:
    """read(path) for one file a person named, its SkipImage a DatasetError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such {what} file")
    try:
        with pillow_warnings_as_skips():
            return read(path)
    except SkipImage as skip:
        raise DatasetError(f"{path}: {reason.format(skip.args[0])}") from None
