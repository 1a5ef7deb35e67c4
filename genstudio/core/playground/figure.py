"""The side-by-side figure of the playground as an RGB array: the data, then one panel per
family, each its density on the grid as a heatmap with its samples over it and a caption of
what was measured (the CLI writes it as PNG; the tab exports the same)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .grid import GridDensity

# Dark to bright (a magma-like ramp), so a density's empty space stays dark under white samples.
RAMP = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                dtype=np.float64)
CAPTION_HEIGHT = 44


@dataclass(frozen=True)
class Panel:
    title: str
    density: GridDensity
    samples: np.ndarray       # (n, 2) drawn over the heatmap
    lines: tuple[str, ...]    # the caption under the title


def heatmap(density: GridDensity) -> np.ndarray:
    """(R, R, 3) uint8, y up: the density's brightness through RAMP."""
    level = density.brightness[::-1]                 # rows: y descending, as on a screen
    position = level * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(RAMP) - 2)
    frac = (position - low)[..., None]
    return (RAMP[low] * (1 - frac) + RAMP[low + 1] * frac).round().astype(np.uint8)


def render_panel(panel: Panel, scale: int = 2, max_points: int = 1000) -> Image.Image:
    grid = panel.density.grid
    size = grid.resolution * scale
    image = Image.fromarray(heatmap(panel.density)).resize((size, size), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (size, size + CAPTION_HEIGHT), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    points = panel.samples[:max_points]
    columns = (points[:, 0] + grid.extent) / (2 * grid.extent) * size
    rows = (grid.extent - points[:, 1]) / (2 * grid.extent) * size
    for x, y in zip(columns, rows, strict=True):
        if 0 <= x < size and 0 <= y < size:
            draw.point((float(x), float(y)), fill=(255, 255, 255))
    draw.text((4, size + 2), panel.title, fill=(0, 0, 0))
    for i, line in enumerate(panel.lines[:2]):
        draw.text((4, size + 16 + 13 * i), line, fill=(60, 60, 60))
    return canvas


def side_by_side(panels: list[Panel], scale: int = 2, gap: int = 6) -> np.ndarray:
    """(H, W, 3) uint8: the panels in a row."""
    images = [render_panel(panel, scale) for panel in panels]
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, max(image.height for image in images)), (255, 255, 255))
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + gap
    return np.asarray(out)


MAX_MOMENTS = 200   # a recording keeps at most this many moments, thinning older ones as it grows


@dataclass(frozen=True)
class Moment:
    seconds: float              # wall-clock seconds since the recording began
    panels: tuple[Panel, ...]


class Recording:
    """Moments of a live playground for an animated GIF: one every `interval` seconds; when
    MAX_MOMENTS are held, every other one goes and the interval doubles, so a recording of any
    length spans the whole training in bounded memory."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.moments: list[Moment] = []

    def due(self, seconds: float) -> bool:
        return not self.moments or seconds - self.moments[-1].seconds >= self.interval

    def add(self, seconds: float, panels: list[Panel]) -> None:
        if not panels or not self.due(seconds):
            return
        self.moments.append(Moment(seconds, tuple(panels)))
        if len(self.moments) > MAX_MOMENTS:
            self.moments = self.moments[::2]
            self.interval *= 2

    def snapshot(self) -> Recording:
        """A copy another thread may render while this one goes on recording."""
        copy = Recording(self.interval)
        copy.moments = list(self.moments)
        return copy

    def frames(self, scale: int = 2) -> np.ndarray:
        """(N, H, W, 3) uint8: each moment side by side, its time in the corner, padded to the
        largest (families may join between moments)."""
        images = []
        for moment in self.moments:
            image = Image.fromarray(side_by_side(list(moment.panels), scale))
            ImageDraw.Draw(image).text((4, 4), f"{moment.seconds:5.0f} s", fill=(255, 255, 255))
            images.append(np.asarray(image))
        height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
        out = np.full((len(images), height, width, 3), 255, dtype=np.uint8)
        for i, image in enumerate(images):
            out[i, :image.shape[0], :image.shape[1]] = image
        return out
