"""Access to the real datasets in ../shared/datasets (never copied into the repo).

MNIST and Fashion-MNIST come as gzipped IDX files; `write_idx_folder` writes them out as a
folder of PNGs (one subfolder per class) so benchmarks exercise the same folder loader a user's
images go through."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = SHARED / "datasets"
INCEPTION = SHARED / "models" / "inception-v3-fid.pt"

FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    if magic == 0x801:
        return np.frombuffer(data, dtype=np.uint8, offset=8)
    raise ValueError(f"{path} is not an IDX image or label file (magic {magic:#x})")


def load_idx_split(name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,)) of mnist / fashion-mnist, split train or t10k."""
    folder = DATASETS / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is absent: the real datasets live beside the checkout")
    return (read_idx(folder / f"{split}-images-idx3-ubyte.gz"),
            read_idx(folder / f"{split}-labels-idx1-ubyte.gz"))


def write_idx_folder(name: str, out: Path, limit: int | None = None, split: str = "train") -> Path:
    """Write a split as PNGs under out/<class>/NNNNN.png (skips work already done)."""
    images, labels = load_idx_split(name, split)
    names = FASHION_CLASSES if name == "fashion-mnist" else [str(d) for d in range(10)]
    count = len(images) if limit is None else min(limit, len(images))
    marker = out / f".complete-{count}"
    if marker.exists():
        return out
    for i in range(count):
        folder = out / names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    marker.touch()
    return out
