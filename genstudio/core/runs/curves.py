"""A run's metric curves as a person reads them, without Qt: each metric's points, its smoothed
curve, which curves are shown, and which to show first. The app's training plot draws this.

Metrics of very different scales (a VAE's loss is thousands of nats, its bits/dim a few units)
cannot share a linear axis, so only one is shown at first (the family's choice, else "bpd" or
"loss") and the others wait until asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .run import plotted_figures

PREFERRED_METRICS = ("bpd", "loss")    # shown first when the family names none
DEFAULT_SMOOTHING = 0.6


@dataclass
class Curve:
    """One metric's points and their debiased exponential moving average."""

    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    _ema: float = 0.0
    _weight: float = 0.0

    def add(self, step: float, value: float, alpha: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if math.isfinite(value):
            # Debiased (as TensorBoard's): starts at the first value instead of at zero.
            self._ema = alpha * self._ema + (1 - alpha) * value
            self._weight = alpha * self._weight + (1 - alpha)
        self.smoothed.append(self._ema / self._weight if self._weight else math.nan)

    def resmooth(self, alpha: float) -> None:
        steps, values = self.steps, self.values
        self.steps, self.values, self.smoothed = [], [], []
        self._ema = self._weight = 0.0
        for step, value in zip(steps, values, strict=True):
            self.add(step, value, alpha)


class Curves:
    """Every metric of one run, in the order first seen, with the shown ones and the smoothing."""

    def __init__(self) -> None:
        self.curves: dict[str, Curve] = {}
        self.shown: set[str] = set()
        self.alpha = DEFAULT_SMOOTHING
        self.first_shown: tuple[str, ...] = ()  # the family's plotted_metrics

    def add_record(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Add one logged step; returns the metrics seen for the first time. The first metrics
        of a run are shown by default, unless a person has hidden every curve since."""
        new = [name for name in metrics if name not in self.curves]
        for name, value in metrics.items():
            self.curves.setdefault(name, Curve()).add(float(step), float(value), self.alpha)
        if new and not self.shown:
            self.shown.update(self.default_metrics())
        return new

    def load_history(self, records: list[dict[str, Any]]) -> None:
        """A finished or re-opened run's metrics.jsonl, in place of what there was."""
        self.clear()
        for record in records:
            self.add_record(int(record.get("step", 0)), plotted_figures(record))

    def clear(self) -> None:
        self.curves.clear()
        self.shown.clear()

    def default_metrics(self) -> list[str]:
        family_choice = [name for name in self.first_shown if name in self.curves]
        if family_choice:
            return family_choice
        preferred = [name for name in PREFERRED_METRICS if name in self.curves]
        return preferred[:1] or list(self.curves)[:1]

    def set_shown(self, name: str, shown: bool) -> None:
        if shown:
            self.shown.add(name)
        else:
            self.shown.discard(name)

    def set_smoothing(self, alpha: float) -> None:
        self.alpha = alpha
        for curve in self.curves.values():
            curve.resmooth(alpha)
