"""Likelihood figures of a family on a set of 8-bit images, in nats/image and bits/dim."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..families import Capability, Family, LogProbKind


def evaluate_likelihood(family: Family, images: torch.Tensor, labels: torch.Tensor | None = None,
                        batch: int = 64, quick: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Mean of each of the family's likelihood bounds over `images` ((N, C, H, W) uint8).

    Returns {"<name>_nats": nats per image, "<name>_bpd": bits per dimension} for every bound
    the family reports (for a VAE: elbo and iwae); {} when the family has no likelihood. An
    unnormalized log-density (an energy-based model's −E(x)) has no unit to convert: it is
    reported as the mean energy, {"energy": −mean log p̃(x)}, never as bits/dim.
    quick: the family's cheap figure for live plots (see Family.likelihood_bounds).
    progress(done_images, total) after each batch."""
    if Capability.LOG_PROB not in family.capabilities or len(images) == 0:
        return {}
    totals: dict[str, float] = {}
    family.eval_mode()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].float().div(255.0)
            y = None if labels is None else labels[start:start + batch]
            for name, log_prob in family.likelihood_bounds(x, y, quick=quick).items():
                totals[name] = totals.get(name, 0.0) + log_prob.double().sum().item()
            if progress is not None:
                progress(min(start + batch, len(images)), len(images))
    family.train_mode()
    dims, n = family.spec.dims, len(images)
    figures: dict[str, float] = {}
    if family.log_prob_kind is LogProbKind.UNNORMALIZED:
        for name, total in totals.items():
            figures["energy" if name == "log_prob" else f"{name}_energy"] = -total / n
        return figures
    for name, total in totals.items():
        nats = total / n
        figures[f"{name}_nats"] = nats
        figures[f"{name}_bpd"] = -nats / (dims * math.log(2.0))
    return figures

