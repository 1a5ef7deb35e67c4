"""Loading a folder of images: scan, look up the cache, decode what is missing, report skips."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from . import cache
from .dataset import DatasetCancelled, DatasetError, ImageDataset, SkippedFile, count_by_category
from .decode import MAX_PIXELS, SkipImage, decode_image, pillow_warnings_as_skips
from .scan import FolderScan, printable, scan_folder

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]

BACKGROUND = "white"  # what transparent pixels are composited on; part of the cache key


def load_folder(
    folder: str | os.PathLike[str],
    size: int,
    *,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    should_stop: ShouldStop | None = None,
) -> ImageDataset:
    """The folder's images as uint8 (N, size, size, 3) RGB, decoded or from the cache."""
    scan = scan_folder(folder)
    if not scan.entries:
        raise DatasetError(_nothing_found(scan))
    root = cache.cache_root(cache_dir)
    key = cache.make_key(_key_payload(scan, size))
    dataset = _from_cache(root, key, scan, size)
    if dataset is None:
        dataset = _decode_all(scan, size, progress, should_stop)
        if not any(s.category == "unreadable" for s in dataset.skipped):
            _to_cache(root, key, dataset)  # an unreadable file may be readable next time
    elif progress is not None:
        progress(len(scan.entries), len(scan.entries))  # so a progress bar still completes
    dataset.skipped = sorted(scan.skipped + dataset.skipped, key=lambda s: s.path)
    return dataset


def _key_payload(scan: FolderScan, size: int) -> dict:
    """Everything the decoded result depends on: any added, removed, renamed, touched or
    re-classed file, or any other setting, gives a different key."""
    files = [
        [
            list(e.parts),
            scan.class_names[e.class_index] if scan.class_names else "",
            e.size,
            e.mtime_ns,
        ]
        for e in scan.entries
    ]
    return {
        "kind": "folder",
        "size": size,
        "background": BACKGROUND,
        "max_pixels": MAX_PIXELS,
        "files": files,
    }


def _decode_all(scan: FolderScan, size: int, progress, should_stop) -> ImageDataset:
    labels, files, skipped = [], [], []
    total = len(scan.entries)
    # Decoded straight into one array (a list of images and np.stack would hold them twice).
    buffer = np.empty((total, size, size, 3), np.uint8)
    decoded = 0
    step = max(1, total // 100)  # report about every 1% so a big folder does not flood the GUI
    with pillow_warnings_as_skips():
        for done, entry in enumerate(scan.entries):
            if should_stop is not None and should_stop():
                raise DatasetCancelled()
            if progress is not None and done % step == 0:
                progress(done, total)
            try:
                buffer[decoded] = decode_image(entry.path, size)
            except SkipImage as exc:
                skipped.append(SkippedFile(entry.rel, exc.args[0]))
                continue
            decoded += 1
            labels.append(entry.class_index)
            files.append(entry.rel)
    if progress is not None:
        progress(total, total)
    if not decoded:
        raise DatasetError(_all_bad(scan, skipped))
    # A view when nothing (or little) was skipped; a copy frees the room of many skipped files.
    images = buffer[:decoded] if decoded > 0.9 * total else buffer[:decoded].copy()
    class_names, label_array = _drop_empty_classes(scan.class_names, np.array(labels, np.int64))
    return ImageDataset(
        images=images,
        labels=label_array,
        class_names=class_names,
        source=scan.root,
        skipped=skipped,
        files=files,
    )


def _drop_empty_classes(names: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """A class whose files were all skipped would be a label no model can learn; remove it and
    renumber the rest so labels stay 0..num_classes-1."""
    if not names:
        return [], labels
    used = np.unique(labels)
    remap = np.zeros(len(names), np.int64)
    remap[used] = np.arange(len(used))
    return [names[i] for i in used], remap[labels]


def _from_cache(root, key: str, scan: FolderScan, size: int) -> ImageDataset | None:
    entry = cache.load_entry(root, key, ["images"])
    if entry is None:
        return None
    arrays, meta = entry
    images = arrays["images"]
    try:
        labels = np.asarray(meta["labels"], dtype=np.int64)
        files = [str(f) for f in meta["files"]]
        skipped = [SkippedFile(str(p), str(r)) for p, r in meta["skipped"]]
        class_names = [str(c) for c in meta["class_names"]]
    except (KeyError, TypeError, ValueError):
        return None
    n = len(files)
    if images.dtype != np.uint8 or images.shape != (n, size, size, 3) or labels.shape != (n,):
        return None
    return ImageDataset(images, labels, class_names, scan.root, skipped, files=files)


def _to_cache(root, key: str, dataset: ImageDataset) -> None:
    meta = {
        "labels": dataset.labels.tolist(),
        "class_names": dataset.class_names,
        "files": dataset.files,
        "skipped": [[s.path, s.reason] for s in dataset.skipped],
    }
    cache.save_entry(root, key, {"images": dataset.images}, meta)


def _nothing_found(scan: FolderScan) -> str:
    where = printable(scan.root)
    if scan.skipped:
        return f"No usable images in {where}: {_count_skips(scan.skipped)}."
    noun = "file" if scan.ignored == 1 else "files"
    others = f" ({scan.ignored} other {noun} ignored)" if scan.ignored else ""
    return f"No images found in {where}{others}."


def _all_bad(scan: FolderScan, decode_skips: list[SkippedFile]) -> str:
    return (
        f"No usable images in {printable(scan.root)}: {_count_skips(scan.skipped + decode_skips)}."
    )


def _count_skips(skipped: list[SkippedFile]) -> str:
    noun = "file" if len(skipped) == 1 else "files"
    return f"{len(skipped)} {noun} skipped ({count_by_category(skipped)})"
