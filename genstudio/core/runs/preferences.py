"""Preferences the app and the CLI share: one small JSON file in the data folder.

Only settings that must mean the same thing in both live here (e.g. which Inception weights
file to use for FID); window geometry and the like stay with the app. A missing or unreadable
file means "all defaults": a preference is never worth refusing to start over."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .paths import data_home

log = logging.getLogger(__name__)

INCEPTION_WEIGHTS = "inception_weights"  # path of the Inception-v3 file chosen by the user


def preferences_path() -> Path:
    return data_home() / "preferences.json"


def load_preferences() -> dict[str, Any]:
    path = preferences_path()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable preferences %s: %s", path, exc)
        return {}
    return values if isinstance(values, dict) else {}


def get_preference(key: str, default: Any = None) -> Any:
    return load_preferences().get(key, default)


def set_preference(key: str, value: Any) -> None:
    """Store `value` under `key` (None removes it); written atomically."""
    values = load_preferences()
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    write_text_atomic(preferences_path(), json.dumps(values, indent=2, sort_keys=True) + "\n")
