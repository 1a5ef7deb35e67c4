"""On-disk cache of decoded datasets: one .npy per array plus a JSON sidecar, keyed by content.

An entry is `<key>.<array>.npy` files and `<key>.json`; the JSON is written last, so an entry
whose JSON exists is complete. Every file is written to a temporary name in the same folder and
moved into place with os.replace, so a crash or a second process never leaves a half-written
file under a real name. Anything that does not read back cleanly is treated as a miss and
rebuilt; pickles are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Bump when decoding or rendering changes what an entry would contain, to orphan old entries.
LOADER_VERSION = 1

ENV_VAR = "GENSTUDIO_CACHE_DIR"


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The datasets folder: cache_dir as given, else $GENSTUDIO_CACHE_DIR/datasets, else the
    platform's user cache folder for genstudio + /datasets."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser() / "datasets"
    import platformdirs  # imported here: only needed when no folder was given

    return Path(platformdirs.user_cache_dir("genstudio")) / "datasets"


def make_key(payload: Any) -> str:
    """sha256 of a JSON-able description of everything the entry depends on."""
    blob = json.dumps({"loader_version": LOADER_VERSION, "payload": payload}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def load_entry(root: Path, key: str, names: list[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    """The arrays `names` and the metadata of entry `key`, or None on a miss or a bad entry."""
    try:
        meta = json.loads((root / f"{key}.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        # mmap first so a damaged header fails before we read megabytes; then copy into
        # memory: callers get writable arrays (torch.from_numpy warns on read-only ones) and
        # no open mapping pins the file (which would block os.replace on Windows).
        arrays = {}
        for name in names:
            mapped = np.load(root / f"{key}.{name}.npy", mmap_mode="r", allow_pickle=False)
            arrays[name] = np.array(mapped)
            del mapped
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        return None
    return arrays, meta


def save_entry(root: Path, key: str, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """Write entry `key`; False (and no entry) if the cache folder is not writable."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            _write_atomic(
                root / f"{key}.{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False)
            )
        text = json.dumps({**meta, "key": key}, ensure_ascii=True)
        _write_atomic(root / f"{key}.json", lambda f: f.write(text.encode("ascii")))
    except OSError:
        return False
    return True


def _write_atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
