"""Each 2-D family's own view, as plain arrays a panel draws over the plane: what makes that
family what it is (GAN Lab's discriminator and generator manifold, a VAE's latent plane, a
flow's warped grid, a velocity or score field with its trajectories, an autoregressive
model's conditionals, an EBM's Langevin chains). One function per family, chosen in EXTRAS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .families.autoregressive import PlaneAutoregressive
from .families.base import PlaneFamily
from .families.diffusion import PlaneDiffusion
from .families.ebm import PlaneEBM
from .families.flow import PlaneFlow
from .families.flow_matching import PlaneFlowMatching
from .families.gan import PlaneGAN
from .families.vae import PlaneVAE
from .grid import Grid

LINES = 9            # latent or noise grid lines per direction
ARROWS = 17          # arrows per side of a field
TRAJECTORIES = 24    # paths or chains drawn
ELLIPSES = 40        # posterior ellipses drawn
SLICES = 81          # conditionals computed across the plane, one of them shown under the cursor


@dataclass(frozen=True)
class ExtraView:
    title: str                          # what the view shows, one line
    image: np.ndarray | None = None     # (R, R) in [0, 1], rows y ascending, on the grid
    lines: np.ndarray | None = None     # (K, 2) polylines separated by rows of NaN
    arrows: np.ndarray | None = None    # (M, 4) x, y, dx, dy
    points: np.ndarray | None = None    # (M, 2)
    outlines: np.ndarray | None = None  # (K, 2) closed curves (a VAE's posteriors), drawn apart from `lines`
    frames: tuple[np.ndarray, ...] = ()  # polylines shown one after another (a flow's layers), as `lines`
    slice_at: np.ndarray | None = None  # (S,) values a of x₁ …
    slice_values: np.ndarray | None = None  # (V,) … values of x₂ …
    slices: np.ndarray | None = None    # (S, V) … and p(x₂ | x₁ = a) there: the slice under the cursor


def _polylines(paths: list[np.ndarray]) -> np.ndarray:
    """One (K, 2) array of the paths, each followed by a row of NaN (pyqtgraph's connect='finite')."""
    gap = np.full((1, 2), np.nan)
    return np.concatenate([part for path in paths for part in (path, gap)])


def _square_lines(extent: float) -> list[np.ndarray]:
    """LINES horizontal and LINES vertical lines across [−extent, extent]², 50 points each."""
    along, across = np.linspace(-extent, extent, 50), np.linspace(-extent, extent, LINES)
    return ([np.stack([along, np.full(50, c)], 1) for c in across]
            + [np.stack([np.full(50, c), along], 1) for c in across])


def _field(grid: Grid, field: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(ARROWS², 4) arrows of `field` on a coarse grid, scaled so the longest spans one spacing."""
    axis = np.linspace(-grid.extent, grid.extent, ARROWS + 2)[1:-1]
    x, y = np.meshgrid(axis, axis)
    points = np.stack([x.ravel(), y.ravel()], 1)
    vectors = field(points)
    longest = np.linalg.norm(vectors, axis=1).max()
    vectors = vectors * (axis[1] - axis[0]) / max(longest, 1e-12)
    return np.concatenate([points, vectors], 1)


def _gan(family: PlaneGAN, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    scores = family.discriminate(grid.centres()).reshape(grid.resolution, grid.resolution)
    image = 1 / (1 + np.exp(-scores)) if family.config.loss == "non-saturating" else scores
    image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    manifold = [family.generate(line) for line in _square_lines(2.5)]
    return ExtraView("discriminator (bright: real) and the generator's image of a latent grid",
                     image=image, lines=_polylines(manifold))


def _vae(family: PlaneVAE, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    means, stds = family.encode(data[:500])
    manifold = [family.decode_mean(line) for line in _square_lines(2.5)]
    turn = np.linspace(0, 2 * np.pi, 25)[:, None]
    circle = np.concatenate([np.cos(turn), np.sin(turn)], 1)
    ellipses = [mean + 2 * std * circle for mean, std in zip(means[:ELLIPSES], stds[:ELLIPSES], strict=True)]
    return ExtraView("latent plane: the data's posterior means, 2σ ellipses of some (yellow); "
                     "the decoder's image of a latent grid (cyan)",
                     lines=_polylines(manifold), points=means, outlines=_polylines(ellipses))


def _flow(family: PlaneFlow, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    lines = _square_lines(2.5)
    stages = [family.through_layers(line) for line in lines]   # per line: noise, then after each layer
    frames = tuple(_polylines([stage[k] for stage in stages]) for k in range(len(family.layers) + 1))
    return ExtraView(f"a noise grid pushed through the {len(family.layers)} layers in turn",
                     lines=frames[-1], frames=frames)


def _flow_matching(family: PlaneFlowMatching, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    paths = family.paths(TRAJECTORIES, seed=1)
    return ExtraView(f"the velocity field at t = {t:.2f} and paths from noise",
                     arrows=_field(grid, lambda p: family.velocity(p, t)),
                     lines=_polylines([paths[:, i] for i in range(TRAJECTORIES)]))


def _diffusion(family: PlaneDiffusion, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    paths = family.paths(TRAJECTORIES, seed=1)
    return ExtraView(f"the score ∇log p_t at t = {t:.2f} (t = 1: noise) and probability-flow paths from noise",
                     arrows=_field(grid, lambda p: family.score(p, t)),
                     lines=_polylines([paths[:, i] for i in range(TRAJECTORIES)]))


def slice_line(a: float, values: np.ndarray, density: np.ndarray) -> np.ndarray:
    """(V, 2) a conditional p(x₂ | x₁ = a) drawn standing on the line x₁ = a, its peak 0.8 wide."""
    return np.stack([a + 0.8 * density / max(density.max(), 1e-12), values], 1)


def _autoregressive(family: PlaneAutoregressive, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    values = np.linspace(-grid.extent, grid.extent, 200)
    at = np.linspace(-grid.extent, grid.extent, SLICES)
    slices = np.stack([family.conditional_slice(a, values) for a in at])
    shown = range(10, SLICES - 10, 10)   # seven, x₁ = −3 … 3, until the cursor picks one
    return ExtraView("slices p(x₂ | x₁ = a): move the cursor over the plane to choose a",
                     lines=_polylines([slice_line(at[i], values, slices[i]) for i in shown]),
                     slice_at=at, slice_values=values, slices=slices)


def _ebm(family: PlaneEBM, grid: Grid, data: np.ndarray, t: float) -> ExtraView:
    energies = family.energies(grid.centres()).reshape(grid.resolution, grid.resolution)
    image = (energies.max() - energies) / max(energies.max() - energies.min(), 1e-12)
    chains = family.chains(TRAJECTORIES, family.config.sgld_steps * 5, seed=1)
    return ExtraView("the energy landscape (bright: low) and Langevin chains from noise", image=image,
                     lines=_polylines([chains[:, i] for i in range(TRAJECTORIES)]))


EXTRAS: dict[type[PlaneFamily], Callable[..., ExtraView]] = {
    PlaneGAN: _gan, PlaneVAE: _vae, PlaneFlow: _flow, PlaneFlowMatching: _flow_matching,
    PlaneDiffusion: _diffusion, PlaneAutoregressive: _autoregressive, PlaneEBM: _ebm,
}


def extra_view(family: PlaneFamily, grid: Grid, data: np.ndarray, t: float = 0.5) -> ExtraView:
    """The family's own view; `t` is the time of a field (flow matching and diffusion)."""
    return EXTRAS[type(family)](family, grid, data, t)
