"""Where genstudio keeps things: runs and caches, in the platform's usual folders.

GENSTUDIO_HOME moves everything (runs) under one folder; GENSTUDIO_CACHE_DIR moves caches.
Tests set both to temporary folders."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import platformdirs


def data_home() -> Path:
    override = os.environ.get("GENSTUDIO_HOME")
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir("genstudio"))


def runs_dir() -> Path:
    return data_home() / "runs"


def cache_dir() -> Path:
    override = os.environ.get("GENSTUDIO_CACHE_DIR")
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("genstudio"))


def new_run_dir(family: str, data: str) -> Path:
    """A fresh, readable, unique run folder name: 20261122-153000-vae-shapes."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", data.removeprefix("builtin:").rstrip("/\\").split("/")[-1]).strip("-")
    base = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{family}-{slug[:40] or 'data'}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
