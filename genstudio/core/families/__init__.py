"""Registry of model families, by name, in the order the app lists them.

Families are imported lazily so that listing them costs nothing; each module's FAMILY class
carries its title, summary and capabilities.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import (
    MAX_SEED,
    Capability,
    CapabilityError,
    Family,
    ImageSpec,
    LogProbKind,
    SampleProgress,
    SamplingCancelled,
    bits_per_dim,
    config_from_dict,
)

# name → the module that defines FAMILY, the Family subclass
FAMILIES: dict[str, str] = {
    "vae": "genstudio.core.families.vae",
    "gan": "genstudio.core.families.gan",
    "flow": "genstudio.core.families.flow",
    "diffusion": "genstudio.core.families.diffusion",
    "flow-matching": "genstudio.core.families.flow_matching",
    "pixelcnn": "genstudio.core.families.pixelcnn",
    "ebm": "genstudio.core.families.ebm",
}


class UnknownFamilyError(ValueError):
    pass


def family_class(name: str) -> type[Family]:
    module = FAMILIES.get(name)
    if module is None:
        raise UnknownFamilyError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    cls = importlib.import_module(module).FAMILY
    assert cls.name == name, f"{module}.FAMILY is {cls.name!r}, registered as {name!r}"
    return cls


def stored_family_config(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """A saved run's knob values, completed for knobs added since it was saved: a Config's
    EARLIER_VALUES name the value that rebuilds the model such a run was trained as (a new
    default may build another, which its weights would not fit). An unknown family's values are
    returned as they are."""
    try:
        earlier = getattr(family_class(name).Config, "EARLIER_VALUES", {})
    except UnknownFamilyError:
        return values
    return {**earlier, **values}


def available_families() -> list[str]:
    return list(FAMILIES)


def suggested_knobs(name: str, spec: ImageSpec, device: torch.device | str,
                    given: dict[str, Any]) -> dict[str, Any]:
    """What a new run of family `name` takes from Family.suggested_config for its images and
    device: the suggested knobs the person did not set in `given`."""
    suggestion = family_class(name).suggested_config(spec, torch.device(device))
    return {knob: value for knob, value in suggestion.items() if knob not in given}


def create_family(
    name: str,
    spec: ImageSpec,
    config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Family:
    """Build a family with its networks initialised deterministically from `seed`."""
    cls = family_class(name)
    cfg = config_from_dict(cls.Config, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(spec, cfg, torch.device(device), seed)


__all__ = [
    "FAMILIES", "MAX_SEED", "Capability", "CapabilityError", "Family", "ImageSpec", "LogProbKind",
    "SampleProgress", "SamplingCancelled", "UnknownFamilyError", "available_families", "bits_per_dim", "create_family", "family_class",
    "stored_family_config", "suggested_knobs",
]
