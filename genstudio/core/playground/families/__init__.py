"""The 2-D families, by name (the image families' names, but `autoregressive` for PixelCNN's
kind: in the plane there are no pixels)."""

from __future__ import annotations

from typing import Any

from .autoregressive import PlaneAutoregressive
from .base import PlaneFamily
from .diffusion import PlaneDiffusion
from .ebm import PlaneEBM
from .flow import PlaneFlow
from .flow_matching import PlaneFlowMatching
from .gan import PlaneGAN
from .vae import PlaneVAE

PLANE_FAMILIES: dict[str, type[PlaneFamily]] = {cls.name: cls for cls in (
    PlaneVAE, PlaneGAN, PlaneFlow, PlaneDiffusion, PlaneFlowMatching, PlaneAutoregressive, PlaneEBM)}


def create_plane_family(name: str, knobs: dict[str, Any] | None = None, seed: int = 0) -> PlaneFamily:
    if name not in PLANE_FAMILIES:
        raise ValueError(f"no 2-D family called {name!r}; there are {', '.join(PLANE_FAMILIES)}")
    cls = PLANE_FAMILIES[name]
    return cls(cls.Config(**(knobs or {})), seed)
