"""What the window remembers between launches: its size and splitters, the family and dataset
chosen, the Gallery's seed and count, the runs ticked in Compare, the run open and the runs
opened recently. One small JSON file in the data folder (GENSTUDIO_HOME moves it); a missing
or damaged file means "as on a first launch", never a refusal to start."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genstudio.core.runs.atomic import write_text_atomic
from genstudio.core.runs.paths import data_home

log = logging.getLogger(__name__)

MAX_RECENT_RUNS = 8


@dataclass
class Remembered:
    geometry: str = ""                                    # QWidget.saveGeometry(), hex
    splitters: dict[str, str] = field(default_factory=dict)  # splitter name → saveState(), hex
    tab: int = 0
    family: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)    # DatasetRequest: source, size, channels
    gallery_seed: int = 0
    gallery_count: int = 0                                # 0: the Gallery's default
    compare_ticked: list[str] = field(default_factory=list)
    open_run: str = ""                                    # a run folder; "" for the shipped default
    recent_runs: list[str] = field(default_factory=list)  # newest first

    def add_recent_run(self, path: str) -> None:
        self.recent_runs = [path, *(p for p in self.recent_runs if p != path)][:MAX_RECENT_RUNS]


def remembered_path() -> Path:
    return data_home() / "window.json"


def load_remembered() -> Remembered:
    """The last launch's state; fields of the wrong type are dropped one by one."""
    try:
        values = json.loads(remembered_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Remembered()
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", remembered_path(), exc)
        return Remembered()
    if not isinstance(values, dict):
        return Remembered()
    defaults = Remembered()
    kept = {f.name: values[f.name] for f in dataclasses.fields(Remembered)
            if f.name in values and type(values[f.name]) is type(getattr(defaults, f.name))}
    return Remembered(**kept)


def save_remembered(remembered: Remembered) -> None:
    try:
        write_text_atomic(remembered_path(), json.dumps(dataclasses.asdict(remembered), indent=1) + "\n")
    except OSError as exc:  # a read-only home: the next launch starts as a first one
        log.warning("could not remember the window in %s: %s", remembered_path(), exc)
