"""Generating and exporting images from a loaded run (used by the gallery and the CLI)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..families import SampleProgress
from ..runs.images import make_grid, save_png, to_uint8
from ..runs.run import LoadedRun


class SamplingError(ValueError):
    pass


def label_index(loaded: LoadedRun, label: str | None) -> int | None:
    """Class name → index, with a clear error for unknown names or unconditional models."""
    if label is None:
        return None
    if not loaded.family.spec.num_classes:
        raise SamplingError(f"run {loaded.name} is not class-conditional; --label cannot be used")
    if label not in loaded.class_names:
        raise SamplingError(f"unknown label {label!r}; the run knows: {', '.join(loaded.class_names)}")
    return loaded.class_names.index(label)


SAMPLING_BATCH = 256  # images made at once by generate_in_batches: memory stays flat in n
MAX_GRID = 4096       # images one grid PNG may hold


def generate(loaded: LoadedRun, n: int, seed: int, label: int | None = None,
             options: dict[str, Any] | None = None, progress: SampleProgress | None = None) -> np.ndarray:
    """n samples as (N, H, W, C) uint8 in one pass; the same run, n, seed, label and options
    give the same pixels. `options` are the family's sampling knobs by name (e.g.
    {"sampler": "ddim"})."""
    if n < 1:
        raise SamplingError("the number of samples must be at least 1")
    family = loaded.family
    typed = _typed_options(family, options)
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    family.eval_mode()
    with torch.no_grad():
        images = family.sample(n, seed=seed, labels=labels, options=typed, progress=progress)
    return to_uint8(images)


def generate_in_batches(loaded: LoadedRun, n: int, seed: int, label: int | None = None,
                        options: dict[str, Any] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """n samples as (index of the first, (B, H, W, C) uint8) batches of at most SAMPLING_BATCH,
    so that any n fits in memory. The first batch is generate(…, min(n, SAMPLING_BATCH), seed);
    batch k > 0 is drawn with batch_seed(seed, k), so the same arguments give the same pixels
    and no two (seed, k) share a batch's noise."""
    _typed_options(loaded.family, options)  # a bad option fails before any work
    for k, start in enumerate(range(0, n, SAMPLING_BATCH)):
        yield start, generate(loaded, min(SAMPLING_BATCH, n - start), batch_seed(seed, k), label, options)


def batch_seed(seed: int, k: int) -> int:
    """The seed of batch k of a long sampling: `seed` itself for the first; above 2**32 (so
    never a seed a person can type) and distinct for every (seed, k) for the rest."""
    return seed if k == 0 else 2**32 + seed * 1_000_003 + k


def _typed_options(family: Any, options: dict[str, Any] | None) -> Any:
    try:
        return family.sample_options(options)
    except (TypeError, ValueError) as exc:
        raise SamplingError(str(exc)) from exc


def provenance(loaded: LoadedRun, seed: int | None, **extra: object) -> dict[str, object]:
    """Text metadata written into every exported PNG (no seed: the images came from elsewhere,
    e.g. an interpolation between two files)."""
    seeded = {} if seed is None else {"seed": seed}
    return {"family": loaded.family.name, "run": loaded.name, "step": loaded.step, **seeded, **extra}


def export_stem(loaded: LoadedRun, seed: int) -> str:
    """The start of exported samples' file names: which run and seed made them."""
    return f"{loaded.name}-seed{seed}"


_KEPT_BESIDE = re.compile(r"-\d{4}-\d+\.png$")


def kept_beside(path: Path) -> bool:
    """Whether export_images named this file -2, -3, … because its own name was taken."""
    return bool(_KEPT_BESIDE.search(path.name))


def export_images(images: np.ndarray, out_dir: str | os.PathLike, metadata: dict[str, object], stem: str,
                  indices: list[int] | None = None, scale: int = 1, first_index: int = 0,
                  overwrite: bool = False) -> list[Path]:
    """Write the chosen images (default: all) as STEM-NNNN.png with metadata, numbered from
    `first_index` (a later batch of a long sampling); returns paths. A file already there is
    kept unless `overwrite`: the image goes to STEM-NNNN-2.png (-3, …) instead."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices if indices is not None else range(len(images)):
        number = first_index + i
        name = f"{stem}-{number:04d}"
        for copy in itertools.count(1):
            path = out / (f"{name}.png" if copy == 1 else f"{name}-{copy}.png")
            try:
                save_png(path, images[i], {**metadata, "index": number}, scale=scale, replace=overwrite)
                break
            except FileExistsError:
                continue
        paths.append(path)
    return paths


def export_grid(images: np.ndarray, path: str | os.PathLike, metadata: dict[str, object],
                columns: int | None = None) -> Path:
    save_png(path, make_grid(images, columns), {**metadata, "count": len(images)})
    return Path(path)
