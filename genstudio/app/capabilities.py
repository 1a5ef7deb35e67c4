"""Which parts of the window a family enables, read from its declared capabilities alone.

The one place that maps capabilities to panels (no `if family == "gan"` anywhere else): a part
is enabled when the family declares every capability it lists. Later panels (latent sliders,
inpainting canvas, likelihoods) add a line here."""

from __future__ import annotations

from collections.abc import Iterable

from genstudio.core.families import Capability

PANEL_REQUIREMENTS: dict[str, frozenset[Capability]] = {
    "gallery": frozenset({Capability.SAMPLE}),
    "conditional": frozenset({Capability.CONDITIONAL}),  # the class-conditional checkbox
    "explorer": frozenset({Capability.DECODE}),            # sliders, interpolation, the latent map
    "inpaint": frozenset({Capability.INPAINT}),            # the inpainting canvas
}

# How the family picker spells each capability.
CAPABILITY_LABELS: dict[Capability, str] = {
    Capability.SAMPLE: "sample",
    Capability.DECODE: "decode z",
    Capability.ENCODE: "encode x",
    Capability.LOG_PROB: "likelihood",
    Capability.INPAINT: "inpaint",
    Capability.CONDITIONAL: "class-conditional",
}


def enabled_panels(capabilities: Iterable[Capability]) -> set[str]:
    have = set(capabilities)
    return {panel for panel, needs in PANEL_REQUIREMENTS.items() if needs <= have}


def panel_enabled(panel: str, capabilities: Iterable[Capability]) -> bool:
    return PANEL_REQUIREMENTS[panel] <= set(capabilities)
