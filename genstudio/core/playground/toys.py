"""The 2-D playground's data: toy distributions, points a person drew, or a CSV of x,y.

Every toy lives in about [−3.5, 3.5]², inside the playground's default grid (grid.DEFAULT_EXTENT),
and draws from a numpy Generator, so a scenario's seed reproduces its data. A toy whose density
is known in closed form gives it (`log_density`), so the yardstick's KL is exact for it; the
others are scored against a kernel estimate of many of their samples (grid.data_density).
Mixture toys give their modes (`modes`, `mode_scale`), which the mode counter checks.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runs.atomic import write_text_atomic

Sampler = Callable[[int, np.random.Generator], np.ndarray]   # (n, rng) → (n, 2) float64
LogDensity = Callable[[np.ndarray], np.ndarray]              # (M, 2) → (M,) log p in nats


@dataclass(frozen=True)
class Toy:
    name: str
    title: str
    sample: Sampler
    log_density: LogDensity | None = None   # exact, where it is known
    modes: np.ndarray | None = None         # (K, 2) centres of a mixture's components
    mode_scale: float = 0.0                 # their standard deviation


# -- the toys --------------------------------------------------------------------------------------

EIGHT_RADIUS, EIGHT_STD = 2.5, 0.15
EIGHT_CENTRES = EIGHT_RADIUS * np.stack([np.cos(np.arange(8) * math.pi / 4), np.sin(np.arange(8) * math.pi / 4)], 1)


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    return EIGHT_CENTRES[rng.integers(0, 8, n)] + EIGHT_STD * rng.standard_normal((n, 2))


def gaussian_mixture_log_density(points: np.ndarray, centres: np.ndarray, std: float) -> np.ndarray:
    """log of the equal-weight mixture of isotropic Gaussians N(centre, std²·I)."""
    squared = ((points[:, None, :] - centres[None]) ** 2).sum(-1)             # (M, K)
    log_components = -squared / (2 * std**2) - math.log(2 * math.pi * std**2)
    peak = log_components.max(1, keepdims=True)
    return (peak + np.log(np.exp(log_components - peak).mean(1, keepdims=True)))[:, 0]


def _two_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    upper = rng.random(n) < 0.5
    angle = rng.random(n) * math.pi
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x - 0.5, y - 0.25], 1) * 2.0
    return points + 0.1 * rng.standard_normal((n, 2))


def _swiss_roll(n: int, rng: np.random.Generator) -> np.ndarray:
    turn = 1.5 * math.pi * (1 + 2 * rng.random(n))
    points = np.stack([turn * np.cos(turn), turn * np.sin(turn)], 1) / 4.5
    return points + 0.08 * rng.standard_normal((n, 2))


CHECKER_SIDE = 1.5  # a 4 × 4 board of squares this wide, half of them filled


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    column = rng.integers(0, 4, n)
    row = 2 * rng.integers(0, 2, n) + (column % 2)          # filled squares: row + column even… or odd
    corner = (np.stack([column, row], 1) - 2) * CHECKER_SIDE
    return corner + CHECKER_SIDE * rng.random((n, 2))


def _checkerboard_log_density(points: np.ndarray) -> np.ndarray:
    cell = np.floor(points / CHECKER_SIDE) + 2                # board squares 0..3 on each axis
    inside = ((cell >= 0) & (cell <= 3)).all(1)
    filled = inside & ((cell[:, 1] - cell[:, 0]) % 2 == 0)
    return np.where(filled, -math.log(8 * CHECKER_SIDE**2), -np.inf)


RING_RADII, RING_STD = (1.0, 2.0, 3.0), 0.08


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radii = np.asarray(RING_RADII)
    # Points proportional to a ring's length, so the density along every ring is the same.
    radius = radii[rng.choice(len(radii), n, p=radii / radii.sum())]
    angle = rng.random(n) * 2 * math.pi
    return np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None] + RING_STD * rng.standard_normal((n, 2))


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    along = np.sqrt(rng.random(n)) * 3 * math.pi          # more points further out, where the arm is longer
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    points = arm * np.stack([-np.cos(along) * along, np.sin(along) * along], 1) / 3.0
    return points + 0.1 * rng.standard_normal((n, 2))


PINWHEEL_ARMS = 5


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    """Johnson et al. 2016's pinwheel: Gaussian blobs stretched along x, bent more the
    further out they lie, and rotated to one of five angles."""
    arm = rng.integers(0, PINWHEEL_ARMS, n)
    blob = rng.standard_normal((n, 2)) * np.array([0.3, 0.05]) + np.array([1.0, 0.0])
    angle = arm * 2 * math.pi / PINWHEEL_ARMS + 0.25 * np.exp(blob[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = np.stack([cos * blob[:, 0] - sin * blob[:, 1], sin * blob[:, 0] + cos * blob[:, 1]], 1)
    return 2.0 * rotated


TOYS: dict[str, Toy] = {toy.name: toy for toy in (
    Toy("8gaussians", "8 Gaussians", _eight_gaussians,
        lambda points: gaussian_mixture_log_density(points, EIGHT_CENTRES, EIGHT_STD), EIGHT_CENTRES, EIGHT_STD),
    Toy("moons", "Two moons", _two_moons),
    Toy("swissroll", "Swiss roll", _swiss_roll),
    Toy("checkerboard", "Checkerboard", _checkerboard, _checkerboard_log_density),
    Toy("rings", "Concentric rings", _rings),
    Toy("spirals", "Two spirals", _two_spirals),
    Toy("pinwheel", "Pinwheel", _pinwheel),
)}


def toy(name: str) -> Toy:
    if name not in TOYS:
        raise ValueError(f"no toy called {name!r}; the toys are {', '.join(TOYS)}")
    return TOYS[name]


# -- points from a file -------------------------------------------------------------------------------


class PointsError(ValueError):
    """A points file that cannot be read as x,y rows; the message says where."""


def load_points_csv(path: str | Path, limit: int = 100_000) -> np.ndarray:
    """(N, 2) float64 from a CSV of x,y rows: a header row is skipped, any other row that is not
    two finite numbers is an error naming its line."""
    rows: list[tuple[float, float]] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                x, y = (float(cell) for cell in row[:2]) if len(row) >= 2 else (math.nan, math.nan)
            except ValueError:
                if number == 1 and not rows:
                    continue  # a header
                raise PointsError(f"{path}: line {number} is not two numbers: {','.join(row)[:60]!r}") from None
            if not (math.isfinite(x) and math.isfinite(y)):
                raise PointsError(f"{path}: line {number} needs two finite numbers, x and y")
            rows.append((x, y))
            if len(rows) > limit:
                raise PointsError(f"{path}: more than {limit:,} points; the playground trains on at most that many")
    if len(rows) < 2:
        raise PointsError(f"{path}: needs at least two x,y rows, found {len(rows)}")
    return np.asarray(rows, dtype=np.float64)


def save_points_csv(path: str | Path, points: np.ndarray) -> None:
    """x,y rows under a header, written whole or not at all."""
    lines = ["x,y"] + [f"{x:.9g},{y:.9g}" for x, y in points]
    write_text_atomic(path, "\n".join(lines) + "\n")
