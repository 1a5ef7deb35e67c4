"""Evaluate a trained run: likelihood, sample quality, coverage and memorisation, one dict.

Reference images are the held-out tenth of the data source (the images the run never trained
on, when the source is its training data; tiny sources without a split use every image and the
result says "training"). The per-pixel categorical baseline is fitted on the source's train
split and measured on the same reference, so its row is directly comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data import ImageDataset, held_out_split
from ..families import Capability, Family
from ..runs.images import make_grid, to_uint8
from ..trained.likelihood import evaluate_likelihood
from .baseline import PixelCategorical
from .features import FeatureExtractor, get_extractor
from .fid import fid_from_features
from .kid import kid
from .memorisation import memorisation_report
from .prdc import density_coverage, precision_recall

METRICS = ("bpd", "fid", "kid", "precision", "recall", "density", "coverage", "memorisation")
DEFAULT_METRICS = ("fid", "kid", "precision", "recall", "bpd")
FEATURE_METRICS = frozenset({"fid", "kid", "precision", "recall", "density", "coverage"})


@dataclass(frozen=True)
class EvalSettings:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    samples: int = 1000          # generated images compared against the reference
    reference: int = 1000        # at most this many held-out images
    extractor: str = "auto"      # auto (Inception if present, else offline), inception, offline, or a path
    seed: int = 0                # seeds the generated samples (and KID's subsets)
    baseline: bool = True        # also score per-pixel independent samples (the floor row)
    quick_likelihood: bool = False  # the family's cheap likelihood figure (live plots in training)

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str) or not self.metrics:
            raise ValueError(f"metrics must be a list of names from {', '.join(METRICS)}, not {self.metrics!r}")
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        if self.samples < 2 or self.reference < 2:
            raise ValueError("evaluation needs at least 2 samples and 2 reference images")


def reference_split(data: ImageDataset, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(reference images, their labels, train images, split name) of a source; images are
    (N, H, W, C) uint8."""
    split = held_out_split(len(data))
    if split.has_test:
        test = split.test[:limit]
        return data.images[test], data.labels[test], data.images[split.train], "held-out"
    return data.images[:limit], data.labels[:limit], data.images, "training"


StageFn = Callable[[str], None]        # the stage starting now, e.g. "sampling"
CountFn = Callable[[int, int], None]   # images done of total within the current stage
StopFn = Callable[[], bool]            # True: give up at the next stage boundary


class EvaluationCancelled(RuntimeError):
    """`should_stop` asked to stop; nothing was recorded."""


@dataclass(frozen=True)
class ClosestPair:
    """A generated image beside its nearest training image, for people to judge by eye."""

    sample: np.ndarray      # (H, W, C) uint8
    training: np.ndarray    # (H, W, C) uint8
    sample_index: int       # among this evaluation's samples (same seed → same sample)
    training_index: int     # within the source's training split
    distance: float         # RMS pixel distance on the [0, 1] scale (see memorisation.py)


@dataclass
class Evaluation:
    figures: dict[str, Any]                # what metrics.jsonl records (JSON-safe)
    closest_pairs: list[ClosestPair] = field(default_factory=list)  # nearest first; [] without memorisation


def pairs_strip(pairs: list[ClosestPair], padding: int = 2) -> np.ndarray:
    """The pairs as one image: samples in the top row, each one's nearest training image below."""
    if not pairs:
        raise ValueError("no pairs to show: the evaluation did not include memorisation")
    images = np.stack([p.sample for p in pairs] + [p.training for p in pairs])
    return make_grid(images, columns=len(pairs), padding=padding)


def evaluate_family(family: Family, data: ImageDataset, settings: EvalSettings,
                    extractor: FeatureExtractor | None = None,
                    progress: StageFn | None = None) -> dict[str, Any]:
    """Every requested metric for `family` against `data` (same size and channels)."""
    return run_evaluation(family, data, settings, extractor, stage=progress).figures


def run_evaluation(family: Family, data: ImageDataset, settings: EvalSettings,
                   extractor: FeatureExtractor | None = None, stage: StageFn | None = None,
                   count: CountFn | None = None, should_stop: StopFn | None = None,
                   closest: int = 8) -> Evaluation:
    """evaluate_family, plus the `closest` sample/training pairs when memorisation is asked for.
    Reports each stage and image counts as it goes; `should_stop` is checked between stages
    and between batches of feature extraction."""
    def say(name: str) -> None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        if stage is not None:
            stage(name)

    def counted(done: int, total: int) -> None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        if count is not None:
            count(done, total)

    if (data.size, data.channels) != (family.spec.size, family.spec.channels):
        raise ValueError(f"the data is {data.size} px with {data.channels} channel(s) but the model "
                         f"makes {family.spec.size} px with {family.spec.channels}")
    reference, reference_labels, train, split = reference_split(data, settings.reference)
    _check_enough_images(set(settings.metrics), len(reference), split, settings)
    result: dict[str, Any] = {"reference_images": len(reference), "reference_split": split}
    pairs: list[ClosestPair] = []
    wanted = set(settings.metrics)
    if wanted & FEATURE_METRICS:  # before any slow work: a bad extractor choice fails at once
        extractor = extractor or get_extractor(settings.extractor)
    if "bpd" in wanted:
        say("likelihood")
        result.update(_likelihood(family, reference, reference_labels, train,
                                  settings.quick_likelihood, counted))
    if wanted & (FEATURE_METRICS | {"memorisation"}):
        say("sampling")
        samples = generate_uint8(family, settings.samples, settings.seed, progress=counted)
        result["samples"] = len(samples)
        if "memorisation" in wanted:
            say("memorisation")
            report = memorisation_report(samples, train, closest=closest)
            result.update(memorisation_min=report.min_distance, memorisation_median=report.median_distance,
                          memorisation_near_copies=report.fraction_below_threshold)
            pairs = [ClosestPair(samples[i], train[j], i, j, d) for i, j, d in report.closest]
        if extractor is not None and wanted & FEATURE_METRICS:
            result["extractor"] = extractor.name
            say(f"features of the reference images ({extractor.name})")
            reference_features = extractor.extract(reference, progress=counted)
            say(f"features of the samples ({extractor.name})")
            result.update(sample_quality(reference_features, extractor.extract(samples, progress=counted),
                                         wanted, settings.seed))
            if settings.baseline:
                say("per-pixel baseline samples")
                baseline = PixelCategorical.fit(train).sample(len(samples), seed=settings.seed)
                figures = sample_quality(reference_features, extractor.extract(baseline, progress=counted),
                                         wanted, settings.seed)
                result.update({f"baseline_{k}": v for k, v in figures.items()})
    return Evaluation(result, pairs)


# The k of each k-nearest-neighbour figure (sample_quality): every reference image needs k
# others, so a reference set of k or fewer images cannot give it.
_NEIGHBOURS = {"precision": 3, "recall": 3, "density": 5, "coverage": 5}


def minimum_images(metrics: set[str] | tuple[str, ...]) -> int:
    """The fewest samples, and reference images, that every one of `metrics` can be computed
    from: FID needs two (a covariance), a k-nearest-neighbour figure k + 1."""
    return max([2] + [k + 1 for name, k in _NEIGHBOURS.items() if name in metrics])


def _check_enough_images(wanted: set[str], count: int, split: str, settings: EvalSettings) -> None:
    """Before any slow work: too few images for a figure get a sentence naming the count that
    is short (the one asked for, or the data's held-out split), not a k-NN error from deep
    inside (a small folder's held-out tenth can be 2 images)."""
    needed = {name: k + 1 for name, k in _NEIGHBOURS.items() if name in wanted}
    too_few = sorted(name for name, n in needed.items() if count < n)
    if too_few:
        names = " and ".join(too_few)
        least = max(needed[n] for n in too_few)
        if settings.reference < least:
            raise ValueError(f"{names} need at least {least} reference images (each one's nearest "
                             f"neighbours); {settings.reference} were asked for")
        raise ValueError(f"{names} need at least {least} reference images (each one's nearest neighbours), "
                         f"but the {split} split has {count}; use a bigger dataset or leave {names} out of "
                         "the metrics")
    sample_figures = wanted & FEATURE_METRICS
    if sample_figures and settings.samples < minimum_images(sample_figures):
        raise ValueError(f"{' and '.join(sorted(sample_figures))} need at least "
                         f"{minimum_images(sample_figures)} samples; {settings.samples} were asked for")


def _likelihood(family: Family, reference: np.ndarray, labels: np.ndarray, train: np.ndarray,
                quick: bool = False, progress: CountFn | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline_bpd": PixelCategorical.fit(train).bits_per_dim(reference)}
    if Capability.LOG_PROB not in family.capabilities:
        return out
    images = torch.from_numpy(np.ascontiguousarray(reference)).permute(0, 3, 1, 2).to(family.device)
    # A class-conditional model is scored on each image's own class.
    y = torch.from_numpy(labels).to(family.device) if family.spec.num_classes else None
    figures = evaluate_likelihood(family, images, y, quick=quick, progress=progress)
    out.update(figures)
    # The headline is the tightest figure the family gives (for a VAE: the IWAE bound). Not
    # "bpd": training logs that name for its per-batch figure, a different quantity.
    bounds = [(v, k) for k, v in figures.items() if k.endswith("_bpd")]
    if bounds:  # none for an unnormalized density (an EBM's energy is not in bits)
        value, name = min(bounds)
        out["eval_bpd"] = value
        kind = family.log_prob_kind.value if family.log_prob_kind else "unknown"
        # A quick figure (e.g. the diffusion's vlb_est) is one draw of an estimate of the
        # bound, not the bound: the Compare table shows what it is.
        out["bpd_kind"] = f"{kind} estimate" if "_est_" in name else kind
        if f"{name}_se" in figures:
            out["eval_bpd_se"] = figures[f"{name}_se"]
    return out


def generate_uint8(family: Family, n: int, seed: int, batch: int = 250,
                   progress: CountFn | None = None, options: Any = None) -> np.ndarray:
    """n samples as (N, H, W, C) uint8, made `batch` at a time (bounded memory); a conditional
    family cycles through its classes. `options`: the family's SampleOptions (None: defaults)."""
    family.eval_mode()
    parts = []
    try:
        for start in range(0, n, batch):
            parts.append(to_uint8(family.sample(min(batch, n - start), seed=seed + start, options=options)))
            if progress is not None:
                progress(start + len(parts[-1]), n)
    finally:
        family.train_mode()  # also when a cancel raises out of `progress`
    return np.concatenate(parts)


def sample_quality(real: np.ndarray, fake: np.ndarray, wanted: set[str], seed: int) -> dict[str, float]:
    """The requested feature-space figures (fid, kid, precision/recall, density/coverage) of
    generated features `fake` against reference features `real`."""
    out: dict[str, float] = {}
    if "fid" in wanted:
        out["fid"] = fid_from_features(real, fake)
    if "kid" in wanted:
        out["kid"], out["kid_std"] = kid(real, fake, seed=seed)
    if wanted & {"precision", "recall"}:
        out["precision"], out["recall"] = precision_recall(real, fake, k=3)
    if wanted & {"density", "coverage"}:
        out["density"], out["coverage"] = density_coverage(real, fake, k=5)
    return out


def _standard_error(figures: dict[str, Any], name: str) -> str:
    """" ± 0.0042 (s.e., 4 probes)" for a figure estimated from independent probes, else "";
    two significant digits, since it is often far below the figure's last decimal."""
    if f"{name}_bpd_se" not in figures:
        return ""
    return f" ± {figures[name + '_bpd_se']:.2g} (s.e., {figures.get(name + '_probes', '?')} probes)"


def describe_evaluation(figures: dict[str, Any]) -> str:
    """One line for people, e.g. "On 256 held-out images: elbo 4.312, iwae 4.251 bits/dim
    (per-pixel baseline 0.937) · FID 22.0, precision 0.29, recall 0.44 (random-conv-v1 …)".
    Nats per image are in the record itself."""
    bounds = [k[:-4] for k in figures if k.endswith("_bpd") and not k.startswith(("baseline", "eval"))]
    parts = [f"{b} {figures[b + '_bpd']:.3f}" + _standard_error(figures, b) for b in bounds]
    line = f"On {figures.get('reference_images', '?')} {figures.get('reference_split', '')} images: "
    if parts:
        line += ", ".join(parts) + " bits/dim"
    elif "energy" in figures:  # an EBM: a score, not a likelihood
        line += f"mean energy {figures['energy']:.3f} (unnormalized; lower = more typical)"
    else:
        line += "no likelihood"
    if "baseline_bpd" in figures:
        line += f" (per-pixel baseline {figures['baseline_bpd']:.3f})"
    quality = [f"{name} {figures[key] * scale:.{digits}f}" for key, name, scale, digits in
               (("fid", "FID", 1, 1), ("kid", "KID×10³", 1e3, 1), ("precision", "precision", 1, 2),
                ("recall", "recall", 1, 2)) if key in figures]
    if quality:
        line += (" · " + ", ".join(quality) + f" ({figures.get('samples', '?')} samples against the "
                 f"{figures.get('reference_images', '?')} {figures.get('reference_split', '')} images; "
                 f"{figures.get('extractor', '?')})")
    return line
