"""Densities on a grid over the plane, and the yardstick computed from them.

In 2-D every family's density can be evaluated at the centres of a fine grid, so all of them
can be scored the same way: each density is normalised over the grid's cells (its mass inside
the grid is kept, to be shown), and KL(p_data ‖ p_model) is the sum over cells. Where a
density has no closed form (drawn points, a GAN's samples) a kernel estimate from samples
stands in for it, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_EXTENT = 4.0      # the grid covers [−4, 4]²; every toy lies inside it
DEFAULT_RESOLUTION = 128  # cells per side


@dataclass(frozen=True)
class Grid:
    extent: float = DEFAULT_EXTENT
    resolution: int = DEFAULT_RESOLUTION

    def __post_init__(self) -> None:
        if self.extent <= 0 or self.resolution < 2:
            raise ValueError(f"a grid needs extent > 0 and at least 2 cells a side, not {self.extent}, {self.resolution}")

    @property
    def cell(self) -> float:
        return 2 * self.extent / self.resolution

    @property
    def cell_area(self) -> float:
        return self.cell**2

    @property
    def axis(self) -> np.ndarray:
        """(R,) the cells' centres along either axis, ascending."""
        return -self.extent + self.cell * (np.arange(self.resolution) + 0.5)

    def centres(self) -> np.ndarray:
        """(R·R, 2) cell centres, row by row: row i holds y = axis[i], x running along it."""
        x, y = np.meshgrid(self.axis, self.axis)
        return np.stack([x.ravel(), y.ravel()], 1)

    def histogram(self, points: np.ndarray) -> np.ndarray:
        """(R, R) counts of the points in each cell (rows y, columns x); points outside are dropped."""
        edges = np.linspace(-self.extent, self.extent, self.resolution + 1)
        counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=(edges, edges))
        return counts


@dataclass(frozen=True)
class GridDensity:
    """A density on a grid's cells, normalised to sum to 1 over them (times the cell area)."""

    grid: Grid
    log_p: np.ndarray   # (R·R,) in nats, −inf where the density is zero
    mass: float         # of the density before normalising, inside the grid (1 for an exact one that fits)
    kind: str           # how it was obtained, e.g. "exact", "kernel estimate, 20,000 samples, bandwidth 0.12"

    @property
    def image(self) -> np.ndarray:
        """(R, R) p on the cells, rows y ascending."""
        return np.exp(self.log_p).reshape(self.grid.resolution, self.grid.resolution)

    @property
    def brightness(self) -> np.ndarray:
        """(R, R) in [0, 1], rows y ascending: p scaled to its own peak and square-rooted, so thin
        tails still show (how the figure and the tab draw a density)."""
        p = self.image
        return np.sqrt(p / p.max())


def normalise(grid: Grid, log_density: np.ndarray, kind: str) -> GridDensity:
    """GridDensity from log p at grid.centres() (any constant offset is removed)."""
    log_density = np.asarray(log_density, dtype=np.float64)
    if log_density.shape != (grid.resolution**2,):
        raise ValueError(f"a density on this grid has {grid.resolution**2} values, not {log_density.shape}")
    if np.isnan(log_density).any() or np.isposinf(log_density).any():
        raise ValueError("the density has NaN or +inf values on the grid")
    peak = log_density.max()
    if not np.isfinite(peak):
        raise ValueError("the density is zero everywhere on the grid")
    log_mass = peak + math.log(np.exp(log_density - peak).sum() * grid.cell_area)
    return GridDensity(grid, log_density - log_mass, math.exp(log_mass), kind)


def scott_bandwidth(points: np.ndarray) -> float:
    """Scott's rule in 2-D: n^(−1/6) times the points' mean standard deviation."""
    return float(len(points) ** (-1 / 6) * points.std(0).mean())


def kernel_density(grid: Grid, points: np.ndarray, bandwidth: float | None = None) -> GridDensity:
    """A Gaussian kernel estimate of the points' density on the grid: their histogram smoothed
    by an isotropic Gaussian of std `bandwidth` (default Scott's rule), kept positive by a floor
    of a millionth of the mean so that a KL against it is finite."""
    if len(points) < 2:
        raise ValueError("a kernel estimate needs at least two points")
    h = scott_bandwidth(points) if bandwidth is None else bandwidth
    h = max(h, grid.cell / 2)  # no narrower than the cells can show
    counts = grid.histogram(points)
    reach = min(int(math.ceil(4 * h / grid.cell)), (grid.resolution - 1) // 2)  # np.convolve's "same" keeps the row's length
    offsets = np.arange(-reach, reach + 1) * grid.cell
    kernel = np.exp(-offsets**2 / (2 * h**2))
    kernel /= kernel.sum()
    smooth = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, counts)
    smooth = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="same"), 0, smooth)
    smooth = np.maximum(smooth, 1e-6 * smooth.mean())
    kind = f"kernel estimate, {len(points):,} samples, bandwidth {h:.3g}"
    return normalise(grid, np.log(smooth.ravel()), kind)


def kl_divergence(p: GridDensity, q: GridDensity) -> float:
    """KL(p ‖ q) in nats over the grid's cells; +inf where q is zero and p is not."""
    if p.grid != q.grid:
        raise ValueError("the two densities are on different grids")
    weight = np.exp(p.log_p) * p.grid.cell_area
    present = weight > 0
    if np.isneginf(q.log_p[present]).any():
        return math.inf
    return float((weight[present] * (p.log_p[present] - q.log_p[present])).sum())


@dataclass(frozen=True)
class ModeCoverage:
    covered: int      # modes holding at least their share (min_share of n / modes) of the samples
    modes: int
    on_modes: float   # share of the samples within 3 std of some mode ("high-quality" samples)


def count_modes(samples: np.ndarray, centres: np.ndarray, std: float, min_share: float = 0.2) -> ModeCoverage:
    """Each sample goes to its nearest mode if it lies within 3 std of it; a mode is covered if
    it holds at least min_share of an equal split of the samples (Srivastava et al. 2017
    count modes this way for their 2-D mixtures)."""
    if len(samples) == 0:
        return ModeCoverage(0, len(centres), 0.0)
    distance = np.sqrt(((samples[:, None, :] - centres[None]) ** 2).sum(-1))   # (n, K)
    nearest, near = distance.argmin(1), distance.min(1) <= 3 * std
    held = np.bincount(nearest[near], minlength=len(centres))
    covered = int((held >= min_share * len(samples) / len(centres)).sum())
    return ModeCoverage(covered, len(centres), float(near.mean()))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019's improved precision and recall, on the points themselves: each
    point's neighbourhood is the ball to its k-th nearest neighbour in its own set; precision is
    the share of `fake` inside some ball of `real` (samples that look like data), recall the
    share of `real` inside some ball of `fake` (data the model reaches). Compare only equal
    counts: both grow with the number of points."""
    def radii(points: np.ndarray) -> np.ndarray:
        distance = np.sqrt(((points[:, None, :] - points[None]) ** 2).sum(-1))
        return np.partition(distance, k, axis=1)[:, k]   # column 0 is the point itself

    def inside(points: np.ndarray, centres: np.ndarray) -> float:
        distance = np.sqrt(((points[:, None, :] - centres[None]) ** 2).sum(-1))
        return float((distance <= radii(centres)[None]).any(1).mean())

    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision and recall need more than k = {k} points in each set")
    return inside(fake, real), inside(real, fake)
