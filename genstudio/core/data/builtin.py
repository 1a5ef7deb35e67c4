"""Procedural built-in datasets with known generating factors.

Rendered in numpy with analytic anti-aliasing (each pixel is covered by the exact fraction of
the shape, so edges are smooth at any size without supersampling), from a fixed seed, so every
machine gets the same images. Factors are stored normalised to [0, 1] so the app can measure
how well a latent space recovers them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import cache
from .dataset import DatasetCancelled, DatasetError, ImageDataset

SEED = 1_234_567  # fixed: the datasets are part of the product, the same everywhere

BUILTIN_DATASETS: dict[str, str] = {
    "tins": "Biscuit tins (Generative Deep Learning, ch. 1): one tin per image whose height and "
    "width vary; 4,000 images, no classes.",
    "shapes": "Coloured circles, squares and triangles on a dark background with known size, "
    "position, rotation and hue; 6,000 images, 3 classes.",
}

_PIXEL_BUDGET = 1 << 20  # pixels rendered per chunk: bounds memory at 256 px, keeps numpy busy


@dataclass(frozen=True)
class _Spec:
    count: int
    class_names: tuple[str, ...]
    factor_names: tuple[str, ...]
    draw_factors: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    render: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (factors, labels, size)
    circular_factors: tuple[str, ...] = ()  # factors whose 0 and 1 are the same (angles, hues)


def load_builtin(
    name: str,
    size: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImageDataset:
    """Built-in dataset `name` rendered at size×size as RGB, from the cache when present."""
    spec = _SPECS.get(name)
    if spec is None:
        known = ", ".join(sorted(_SPECS))
        raise DatasetError(f"Unknown built-in dataset '{name}'; available: {known}.")
    root = cache.cache_root(cache_dir)
    key = cache.make_key(
        {"kind": "builtin", "name": name, "size": size, "seed": SEED, "count": spec.count}
    )
    entry = cache.load_entry(root, key, ["images", "labels", "factors"])
    if entry is not None and _entry_fits(entry[0], spec, size):
        arrays = entry[0]
        if progress is not None:
            progress(spec.count, spec.count)  # so a progress bar still completes
    else:
        arrays = _render_all(spec, size, progress, should_stop)
        cache.save_entry(root, key, arrays, {"name": name})
    return ImageDataset(
        images=arrays["images"],
        labels=arrays["labels"],
        class_names=list(spec.class_names),
        source=f"builtin:{name}",
        skipped=[],
        factors=arrays["factors"],
        factor_names=list(spec.factor_names),
        circular_factors=list(spec.circular_factors),
    )


def _entry_fits(arrays: dict[str, np.ndarray], spec: _Spec, size: int) -> bool:
    n, f = spec.count, len(spec.factor_names)
    return (
        arrays["images"].shape == (n, size, size, 3)
        and arrays["images"].dtype == np.uint8
        and arrays["labels"].shape == (n,)
        and arrays["labels"].dtype == np.int64
        and arrays["factors"].shape == (n, f)
        and arrays["factors"].dtype == np.float32
    )


def _render_all(spec: _Spec, size: int, progress, should_stop) -> dict[str, np.ndarray]:
    factors, labels = spec.draw_factors(np.random.default_rng(SEED), spec.count)
    factors = factors.astype(np.float32)  # float32 throughout: half the memory traffic
    images = np.empty((spec.count, size, size, 3), np.uint8)
    chunk = max(1, _PIXEL_BUDGET // (size * size))
    for start in range(0, spec.count, chunk):
        if should_stop is not None and should_stop():
            raise DatasetCancelled()
        if progress is not None:
            progress(start, spec.count)
        stop = min(start + chunk, spec.count)
        images[start:stop] = spec.render(factors[start:stop], labels[start:stop], size)
    if progress is not None:
        progress(spec.count, spec.count)
    return {"images": images, "labels": labels, "factors": factors}


# ----------------------------------------------------------------------------- tins

_WALL, _FLOOR = np.float32([196, 196, 200]), np.float32([150, 146, 142])
_TIN_BODY, _TIN_LID, _TIN_LABEL = (
    np.float32([170, 35, 40]),
    np.float32([215, 170, 70]),
    np.float32([236, 222, 180]),
)


def _tin_factors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, 2)), np.zeros(n, np.int64)  # (height, width), no classes


def _render_tins(factors: np.ndarray, _labels: np.ndarray, size: int) -> np.ndarray:
    """A cylindrical tin standing centred on a floor: body, a cream label band, a wider lid."""
    s = float(size)
    height = (0.25 + 0.55 * factors[:, 0]) * s  # tin height in pixels
    width = (0.22 + 0.50 * factors[:, 1]) * s
    bottom = np.full_like(height, 0.92 * s)
    top = bottom - height
    rows = np.arange(size)
    floor = (rows >= 0.8 * s)[:, None, None]  # (H, 1, 1)
    image = np.broadcast_to(np.where(floor, _FLOOR, _WALL), (len(factors), size, size, 3)).copy()
    lid = np.maximum(0.13 * height, 1.5)
    band_top, band_bottom = top + 0.45 * height, top + 0.75 * height
    _paint_cylinder(image, top, bottom, width, _TIN_BODY)
    _paint_cylinder(image, band_top, band_bottom, width, _TIN_LABEL)
    _paint_cylinder(image, top - 0.02 * s, top + lid, width + 0.05 * s, _TIN_LID)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _paint_cylinder(image, top, bottom, width, colour) -> None:
    """Blend an upright, centred rectangle shaded like a lit cylinder into image (N, H, W, 3)."""
    size = image.shape[1]
    left, right = (size - width) / 2, (size + width) / 2
    coverage = _span(top, bottom, size)[:, :, None] * _span(left, right, size)[:, None, :]
    across = (np.arange(size) + 0.5 - size / 2) / (width[:, None] / 2)  # -1..1 across the tin
    curve = np.sqrt(np.clip(1 - across**2, 0, 1))
    shine = 0.35 * np.exp(-(((across + 0.45) / 0.15) ** 2))  # a highlight left of centre
    shade = (0.45 + 0.55 * curve)[..., None] * colour + shine[..., None] * 255  # (N, W, 3)
    alpha = coverage[..., None]
    image *= 1 - alpha
    image += alpha * shade[:, None, :, :]


def _span(low: np.ndarray, high: np.ndarray, size: int) -> np.ndarray:
    """(N, size): the fraction of each pixel [i, i+1) that lies inside [low, high]."""
    edges = np.arange(size, dtype=np.float32)
    inside = np.minimum(high[:, None], edges + 1) - np.maximum(low[:, None], edges)
    return np.clip(inside, 0.0, 1.0)


# ----------------------------------------------------------------------------- shapes

_SHAPES_BACKGROUND = np.float32([18, 18, 26])
_SIDES = {0: 0, 1: 4, 2: 3}  # class -> polygon sides (0: circle)
# Extent per class at size factor 1, as a fraction of the image: similar visual area and
# always inside the frame, since centres stay at least 0.3 from every edge.
_RADIUS = {0: 0.21, 1: 0.195, 2: 0.15}  # circle radius, square and triangle apothem


def _shape_factors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % 3).astype(np.int64)  # balanced, shuffled
    return rng.random((n, 5)), labels  # size, x, y, rotation, hue


def _render_shapes(factors: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    scale, cx, cy, turn, hue = (factors[:, i] for i in range(5))
    s = float(size)
    centre_x, centre_y = (0.3 + 0.4 * cx) * s, (0.3 + 0.4 * cy) * s
    coords = np.arange(size, dtype=np.float32) + 0.5
    dx = coords[None, None, :] - centre_x[:, None, None]  # (N, 1, W)
    dy = coords[None, :, None] - centre_y[:, None, None]  # (N, H, 1)
    distance = np.empty((len(factors), size, size), np.float32)
    for cls, sides in _SIDES.items():
        rows = labels == cls
        extent = (0.55 + 0.45 * scale[rows]) * _RADIUS[cls] * s
        if sides == 0:
            distance[rows] = np.hypot(dx[rows], dy[rows]) - extent[:, None, None]
        else:
            # one turn of the factor spans the shape's symmetry period, so it is identifiable
            angle = turn[rows] * (2 * np.pi / sides) + np.pi / 2
            distance[rows] = _polygon_distance(dx[rows], dy[rows], extent, angle, sides)
    coverage = np.clip(0.5 - distance, 0.0, 1.0)[..., None]  # (N, H, W, 1)
    colour = _hue_to_rgb(hue).astype(np.float32)[:, None, None, :]  # (N, 1, 1, 3)
    image = _SHAPES_BACKGROUND * (1 - coverage) + colour * coverage
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _polygon_distance(dx, dy, apothem, angle, sides) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a regular polygon: the largest distance
    past any edge line. Exact along edges; slightly rounds corners, which is harmless here."""
    result = np.full(np.broadcast_shapes(dx.shape, dy.shape), -np.inf)
    for k in range(sides):
        normal = angle + 2 * np.pi * k / sides
        past_edge = dx * np.cos(normal)[:, None, None] + dy * np.sin(normal)[:, None, None]
        np.maximum(result, past_edge - apothem[:, None, None], out=result)
    return result


def _hue_to_rgb(hue: np.ndarray, saturation: float = 0.8, value: float = 0.95) -> np.ndarray:
    """(N,) hue in [0, 1) -> (N, 3) RGB 0..255, the standard HSV formula, vectorised."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    return 255 * (value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1))


_SPECS: dict[str, _Spec] = {
    "tins": _Spec(4000, (), ("height", "width"), _tin_factors, _render_tins),
    "shapes": _Spec(
        6000,
        ("circle", "square", "triangle"),
        ("size", "x", "y", "rotation", "hue"),
        _shape_factors,
        _render_shapes,
        circular_factors=("rotation", "hue"),  # a turn of rotation spans the shape's symmetry
    ),
}
