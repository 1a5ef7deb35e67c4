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
    the family reports (for a VAE: elbo and iwae); {} when the family has no likelihood. A
    figure the family gives as P ≥ 2 independent estimates per image (Hutchinson's probes) also
    gets "<name>_bpd_se", the standard error of its bits/dim from the probes' spread (the
    estimator's own noise, not the spread over images), and "<name>_probes" = P. An
    unnormalized log-density (an energy-based model's −E(x)) has no unit to convert: it is
    reported as the mean energy, {"energy": −mean log p̃(x)}, never as bits/dim.
    quick: the family's cheap figure for live plots (see Family.likelihood_bounds).
    progress(done_images, total) after each batch."""
    if Capability.LOG_PROB not in family.capabilities or len(images) == 0:
        return {}
    totals: dict[str, float] = {}
    variances: dict[str, float] = {}  # Σ over images of Var(per-image mean of the estimates)
    probes: dict[str, int] = {}
    family.eval_mode()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].float().div(255.0)
            y = None if labels is None else labels[start:start + batch]
            for name, log_prob in family.likelihood_bounds(x, y, quick=quick).items():
                log_prob = log_prob.double()
                if log_prob.dim() == 2:
                    probes[name] = log_prob.shape[1]
                    if probes[name] >= 2:
                        variances[name] = (variances.get(name, 0.0)
                                           + (log_prob.var(dim=1) / probes[name]).sum().item())
                    log_prob = log_prob.mean(dim=1)
                totals[name] = totals.get(name, 0.0) + log_prob.sum().item()
            if progress is not None:
                progress(min(start + batch, len(images)), len(images))
    family.train_mode()
    dims, n = family.spec.dims, len(images)
    figures: dict[str, float] = {}
    if family.log_prob_kind is LogProbKind.UNNORMALIZED:
        for name, total in totals.items():
            figures["energy" if name == "log_prob" else f"{name}_energy"] = -total / n
        return figures
    nats_per_bpd = dims * math.log(2.0)
    for name, total in totals.items():
        nats = total / n
        figures[f"{name}_nats"] = nats
        figures[f"{name}_bpd"] = -nats / nats_per_bpd
        if name in probes:
            figures[f"{name}_probes"] = probes[name]
        if name in variances:
            figures[f"{name}_bpd_se"] = math.sqrt(variances[name]) / n / nats_per_bpd
    return figures

