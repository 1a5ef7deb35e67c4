"""Sample quality and likelihood of a family after a fixed CPU budget, by the protocol of
docs/benchmarks.md, beside the per-pixel baseline.

    .venv/bin/python -m benchmarks.quality --family vae --data fashion-mnist [--minutes 10]
    .venv/bin/python -m benchmarks.quality --family vae --data builtin:shapes --size 32
    .venv/bin/python -m benchmarks.quality --evaluate RUN_DIR --data fashion-mnist   # no training

Training goes through the same core Trainer the CLI uses (torch.set_num_threads(2), no
evaluation during the budget), stopped when the wall-clock budget is spent. Then:
- `--samples` generated images vs the reference: for mnist / fashion-mnist the first 1000
  test images (BENCHMARKS.md), for any other source its held-out tenth;
- features from ../shared/models/inception-v3-fid.pt when present (else the offline extractor,
  and the table says so): FID, KID×10³, precision/recall (k=3);
- held-out bits/dim from the family's tightest likelihood figure, and the per-pixel baseline's;
- the same sample-quality figures for per-pixel independent samples (the baseline row), and for
  as many training images as samples (the real-vs-real floor: what a model that reproduced its
  training images would score at this count).
Prints a table and writes benchmark-result.json and a sample grid beside the run it trained, or,
with --evaluate, in WORK/evaluated/RUN_NAME (the evaluated run's folder is left as it was: it
may be a shipped model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.real_data import INCEPTION, load_idx_split, write_idx_folder
from genstudio.cli import _parse_options as _options  # the CLI's KEY=VALUE parsing
from genstudio.core.data import load_source
from genstudio.core.metrics.baseline import PixelCategorical
from genstudio.core.metrics.evaluate import (
    EvalSettings,
    evaluate_family,
    generate_uint8,
    reference_split,
    sample_quality,
)
from genstudio.core.metrics.features import InceptionExtractor, RandomConvExtractor
from genstudio.core.runs.images import make_grid, save_png
from genstudio.core.runs.run import UNLIMITED_STEPS, TrainSettings, load_run
from genstudio.core.runtime.training import StepLogged, Trainer, TrainingFinished

IDX_DATASETS = ("mnist", "fashion-mnist")
QUALITY = ("fid", "kid", "precision", "recall")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="vae")
    parser.add_argument("--data", default="fashion-mnist",
                        help="mnist, fashion-mnist (from ../shared/datasets) or any genstudio source")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    parser.add_argument("--batch", type=int, default=TrainSettings().batch,
                        help="images per step (default: the product's own default, %(default)s)")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--conditional", action="store_true", help="condition on the class subfolders")
    parser.add_argument("--samples", type=int, default=1000,
                        help="generated images for FID/KID/precision/recall (0: skip them; a PixelCNN "
                             "samples one subpixel per network pass)")
    parser.add_argument("--extractor", default="auto", help="auto (shared Inception if present), offline, or a file")
    parser.add_argument("--work", default="/tmp/genstudio-bench", help="folder for data and runs")
    parser.add_argument("--evaluate", metavar="RUN", help="skip training; evaluate this run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bpd-images", type=int, default=1000,
                        help="held-out images for the likelihood (0: skip; a diffusion bound costs "
                             "T network passes per image)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    source, reference, reference_name = _source_and_reference(args.data, args.size, work)
    if args.evaluate:
        run_dir, trained = Path(args.evaluate), {}
        out_dir = work / "evaluated" / run_dir.resolve().name
    else:
        run_dir = work / "runs" / f"{args.family}-{_slug(args.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
        trained = train_for(args.family, source, args.size, args.batch, _options(args.options),
                            args.minutes * 60, run_dir, args.conditional)
        out_dir = run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = _extractor(args.extractor)
    result = evaluate(run_dir, source, reference, extractor, args.samples, args.bpd_images, out_dir)
    result.update(trained, reference=reference_name, data=args.data)
    (out_dir / "benchmark-result.json").write_text(json.dumps(result, indent=2))
    print(f"result and sample grid in {out_dir}", file=sys.stderr)
    _print_table(result)
    return 0


def _source_and_reference(data: str, size: int, work: Path) -> tuple[str, np.ndarray, str]:
    """(training source, reference uint8 (N, H, W, C), description of the reference)."""
    if data in IDX_DATASETS:
        if size != 28:
            raise SystemExit("the BENCHMARKS.md protocol for mnist/fashion-mnist is 28 px")
        folder = write_idx_folder(data, work / "data" / f"{data}-train")
        test, _labels = load_idx_split(data, "t10k")
        return str(folder), test[:1000, :, :, None], f"{data} test, first 1000"
    dataset = load_source(data, size, None)
    reference, _labels, _train, split = reference_split(dataset, 1000)
    return data, reference, f"{data}, {len(reference)} {split} images"


def train_for(family: str, source: str, size: int, batch: int, options: dict[str, Any],
              budget_s: float, run_dir: Path, conditional: bool = False) -> dict[str, Any]:
    """Train with the run's own time limit (TrainSettings.minutes, `train --minutes`): the
    budget covers the training loop, not loading the data, and ends the run as Stop does."""
    settings = TrainSettings(family=family, data=source, size=size, steps=UNLIMITED_STEPS, batch=batch,
                             family_config=options, conditional=conditional, sample_every=0, checkpoint_every=0,
                             eval_images=0, log_every=10, minutes=budget_s / 60)
    step, images_per_sec, wall = 0, 0.0, 0.0
    print(f"training {family} on {source} for {budget_s / 60:.1f} min → {run_dir}", file=sys.stderr)
    for event in Trainer(settings, run_dir).run():
        if isinstance(event, StepLogged):
            step, images_per_sec, wall = event.step, event.images_per_sec, event.elapsed_seconds
        elif isinstance(event, TrainingFinished):
            step = event.step
    images = step * batch
    dataset_size = len(load_source(source, size, None))
    return {"steps": step, "train_seconds": round(wall, 1), "images_per_sec": round(images_per_sec, 1),
            "epochs": round(images / (0.9 * dataset_size), 2), "batch": batch, "options": options,
            "conditional": conditional}


def evaluate(run_dir: Path, source: str, reference: np.ndarray, extractor, samples: int,
             bpd_images: int = 1000, out_dir: Path | None = None) -> dict[str, Any]:
    """The run's figures; its sample grid goes to out_dir (default: the run's folder)."""
    loaded = load_run(run_dir, device="cpu")
    family = loaded.family
    spec = family.spec
    dataset = load_source(source, spec.size, spec.channels)
    figures, baseline_figures, floor_figures, sample_seconds = {}, {}, {}, 0.0
    if samples > 0:
        t0 = time.perf_counter()
        fake = generate_uint8(family, samples, seed=0)
        sample_seconds = time.perf_counter() - t0
        save_png((out_dir or run_dir) / "benchmark-samples.png", make_grid(fake[:100], 10), {"run": loaded.name})
        print(f"features with {extractor.name}…", file=sys.stderr)
        real_features = extractor.extract(reference)
        figures = sample_quality(real_features, extractor.extract(fake), set(QUALITY), seed=0)
        _ref, _labels, train, _split = reference_split(dataset, 1000)
        baseline = PixelCategorical.fit(train).sample(samples, seed=0)
        baseline_figures = sample_quality(real_features, extractor.extract(baseline), set(QUALITY), seed=0)
        seen = train[np.random.default_rng(0).choice(len(train), min(samples, len(train)), replace=False)]
        floor_figures = sample_quality(real_features, extractor.extract(seen), set(QUALITY), seed=0)
        floor_figures["images"] = len(seen)
    likelihood = (evaluate_family(family, dataset, EvalSettings(metrics=("bpd",), reference=bpd_images))
                  if bpd_images >= 2 else {"baseline_bpd": None})
    return {"run": str(run_dir), "family": family.name, "step": loaded.step, "extractor": extractor.name, "samples": samples,
            "sample_seconds": round(sample_seconds, 2), **figures,
            "eval_bpd": likelihood.get("eval_bpd"), "bpd_kind": likelihood.get("bpd_kind"),
            "eval_bpd_se": likelihood.get("eval_bpd_se"), "baseline_bpd": likelihood["baseline_bpd"],
            **{f"baseline_{k}": v for k, v in baseline_figures.items()},
            **{f"floor_{k}": v for k, v in floor_figures.items()}}


def _extractor(choice: str):
    if choice == "offline":
        return RandomConvExtractor()
    if choice == "auto":
        if INCEPTION.is_file():
            return InceptionExtractor(INCEPTION)
        print(f"{INCEPTION} is absent: using the offline extractor (figures not comparable with "
              "BENCHMARKS.md)", file=sys.stderr)
        return RandomConvExtractor()
    return InceptionExtractor(choice)


def _print_table(r: dict[str, Any]) -> None:
    print(f"\n{r['family']} on {r['data']}: {r.get('train_seconds', '?')} s of training, "
          f"{r.get('steps', r['step'])} steps ({r.get('epochs', '?')} epochs, {r.get('images_per_sec', '?')} img/s, "
          f"batch {r.get('batch', '?')}); {r['samples']} samples vs {r['reference']}; {r['extractor']}")
    print("| model | FID | KID×10³ | precision | recall | held-out bits/dim |")
    print("|---|---|---|---|---|---|")
    error = f" ± {r['eval_bpd_se']:.2g} s.e." if r.get("eval_bpd_se") is not None else ""
    bpd = f"{r['eval_bpd']:.3f}{error} ({r['bpd_kind']})" if r.get("eval_bpd") is not None else "–"
    baseline_bpd = f"{r['baseline_bpd']:.3f} (exact)" if r["baseline_bpd"] is not None else "–"
    if not r["samples"]:
        print(f"| {r['family']} | – | – | – | – | {bpd} |\n| per-pixel baseline | – | – | – | – | {baseline_bpd} |")
        return
    print(f"| {r['family']} | {r['fid']:.1f} | {r['kid'] * 1e3:.1f} | {r['precision']:.2f} | {r['recall']:.2f} | {bpd} |")
    print(f"| per-pixel baseline | {r['baseline_fid']:.1f} | {r['baseline_kid'] * 1e3:.1f} | "
          f"{r['baseline_precision']:.2f} | {r['baseline_recall']:.2f} | {baseline_bpd} |")
    print(f"| real vs real: {r['floor_images']} training images | {r['floor_fid']:.1f} | {r['floor_kid'] * 1e3:.1f} | "
          f"{r['floor_precision']:.2f} | {r['floor_recall']:.2f} | – |")


def _slug(data: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in data.removeprefix("builtin:").rstrip("/").split("/")[-1])


if __name__ == "__main__":
    sys.exit(main())
