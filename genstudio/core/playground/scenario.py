"""A playground scenario: the data (a toy and its seed, or the points themselves), the families
with their knobs, and the seed, as a JSON file that reloads exactly: the same file gives the
same points, the same initial weights and the same batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.atomic import write_text_atomic
from .families import PLANE_FAMILIES
from .toys import TOYS

FORMAT = "genstudio-playground-scenario"
VERSION = 1
MAX_POINTS = 100_000


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Scenario:
    toy: str | None = "8gaussians"   # None: the points are the person's own
    points: np.ndarray | None = None  # (N, 2), for drawn or loaded data
    toy_points: int = 20_000          # points drawn from the toy
    seed: int = 0
    families: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → knobs that differ from defaults

    def __post_init__(self) -> None:
        if (self.toy is None) == (self.points is None):
            raise ScenarioError("a scenario has either a toy or its own points, not both or neither")
        if self.toy is not None and self.toy not in TOYS:
            raise ScenarioError(f"no toy called {self.toy!r}; the toys are {', '.join(TOYS)}")
        if self.points is not None:
            points = np.asarray(self.points, dtype=np.float64)
            if points.ndim != 2 or points.shape[1] != 2 or not 2 <= len(points) <= MAX_POINTS:
                raise ScenarioError(f"a scenario's points are 2 to {MAX_POINTS:,} x,y pairs, not {points.shape}")
            if not np.isfinite(points).all():
                raise ScenarioError("a scenario's points must be finite numbers")
            object.__setattr__(self, "points", points)
        for name, knobs in self.families.items():
            if name not in PLANE_FAMILIES:
                raise ScenarioError(f"no 2-D family called {name!r}; there are {', '.join(PLANE_FAMILIES)}")
            try:
                PLANE_FAMILIES[name].Config(**knobs)
            except (TypeError, ValueError) as exc:
                raise ScenarioError(f"{name}: {exc}") from None

    def data(self) -> np.ndarray:
        """(N, 2) the training points: the toy's draw from the seed, or the scenario's own."""
        if self.points is not None:
            return self.points
        return TOYS[self.toy].sample(self.toy_points, np.random.default_rng(self.seed))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "toy": self.toy,
                "points": None if self.points is None else self.points.tolist(),
                "toy_points": self.toy_points, "seed": self.seed,
                "families": {name: dict(knobs) for name, knobs in self.families.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scenario:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ScenarioError("not a genstudio playground scenario")
        if data.get("version") != VERSION:
            raise ScenarioError(f"a scenario of version {data.get('version')!r}; this genstudio reads version {VERSION}")
        families = data.get("families", {})
        if not isinstance(families, dict) or not all(isinstance(k, dict) for k in families.values()):
            raise ScenarioError("a scenario's families are a mapping of names to knobs")
        points = data.get("points")
        return cls(toy=data.get("toy"), points=None if points is None else np.asarray(points, dtype=np.float64),
                   toy_points=int(data.get("toy_points", 20_000)), seed=int(data.get("seed", 0)),
                   families={name: {k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()}
                             for name, knobs in families.items()})

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_json(data)
