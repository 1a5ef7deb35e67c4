"""Inpainting error of trained runs on held-out images, beside a mean-colour fill.

    .venv/bin/python -m benchmarks.inpainting RUN_DIR [RUN_DIR ...] [--images 50] [--seed 0] [--threads 1]
    .venv/bin/python -m benchmarks.inpainting /tmp/genstudio-bench/runs/*-fashion-mnist-* --images 50
    .venv/bin/python -m benchmarks.inpainting RUN_DIR --images 20 --pixelcnn-sweeps 1   # fewer MH sweeps
    .venv/bin/python -m benchmarks.inpainting RUN_DIR --batch 8   # family.inpaint on 8 images at once
    .venv/bin/python -m benchmarks.inpainting FM_RUN --fm-option solver=euler --fm-option steps=100
    .venv/bin/python -m benchmarks.inpainting --show /tmp/genstudio-bench/inpainting.json   # table again

No training. For each run (loaded on the CPU, torch.set_num_threads(--threads)):
- held-out images, the first --images of the reference set benchmarks/quality.py uses: for
  mnist / fashion-mnist (a run trained on the folder quality.py writes, data/<name>-train) the
  test images; for any other source its held-out tenth (reference_split);
- two kinds of mask, True = fill, the same for every family at a given size: "centre", a
  centred square of side size//2 (a quarter of the area), and "random", rectangles and thick
  strokes from numpy default_rng(seed + i) covering 25–40% of image i;
- the family's fill, by default one image at a time through inpaint_candidates (n=1,
  seed=seed+i), or with --batch B by family.inpaint on B images at once (seed = seed + index
  of the first) with the known pixels copied back the same way;
- the mean-colour baseline: the hole filled with the mean colour of the image's known pixels
  (the bar the issue sets); and a stricter one, the smooth fill (families.base.smooth_fill,
  the harmonic interpolation of the known pixels, no model), to show what a model adds beyond
  carrying the hole's edges inwards.
Errors are on the masked subpixels only, on the [0, 1] scale: RMSE per image averaged over
images, PSNR from the MSE pooled over all images, and the paired per-image difference of RMSE
(model − baseline, mean ± standard error) with the count of images the model fills better. Also the seconds of fill per image, and two
checks of the known pixels: what the family itself returns there (its contract: bit for bit)
and what the final image holds (must be identical). Prints a table and writes the result JSON
to --out with, beside it, a PNG per run and mask: rows of original | masked input (hole in
magenta) | fill for the first 8 images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.real_data import FASHION_CLASSES, load_idx_split
from genstudio.cli import _parse_options as _options  # the CLI's KEY=VALUE parsing
from genstudio.core.data import load_source
from genstudio.core.families import Capability
from genstudio.core.families.base import smooth_fill
from genstudio.core.families.flow_matching import InpaintOptions
from genstudio.core.metrics.evaluate import reference_split
from genstudio.core.runs.images import make_grid, save_png, to_uint8
from genstudio.core.runs.run import LoadedRun, load_run
from genstudio.core.trained.inpainting import inpaint_candidates

IDX_DATASETS = ("mnist", "fashion-mnist")
MASKS = ("centre", "random")
REFERENCE_LIMIT = 1000          # as in benchmarks/quality.py
RANDOM_COVERAGE = (0.25, 0.40)  # fraction of the pixels a random mask fills
GRID_ROWS = 8
HOLE_COLOUR = (255, 0, 255)     # how the masked input shows its hole in the PNGs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR")
    parser.add_argument("--show", metavar="JSON", help="print the table of a result file written before, and stop")
    parser.add_argument("--images", type=int, default=50, help="held-out images per run and mask")
    parser.add_argument("--seed", type=int, default=0, help="random masks and fills use seed + image index")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1,
                        help="images per family.inpaint call (1: inpaint_candidates, one at a time)")
    parser.add_argument("--masks", default=",".join(MASKS), help="comma-separated, of: " + ", ".join(MASKS))
    parser.add_argument("--pixelcnn-sweeps", type=int, default=None,
                        help="Metropolis-Hastings sweeps for PixelCNN runs (default: the run's config)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip checking that --batch / overrides reproduce inpaint_candidates on image 0")
    parser.add_argument("--fm-option", action="append", default=[], metavar="KEY=VALUE", dest="fm_options",
                        help="a flow-matching InpaintOptions field (solver, steps, resamples), e.g. solver=euler")
    parser.add_argument("--out", default="/tmp/genstudio-bench/inpainting.json",
                        help="result JSON; the PNG grids go beside it")
    args = parser.parse_args(argv)
    if args.show:
        _print_table(json.loads(Path(args.show).read_text()))
        return 0
    if not args.runs:
        parser.error("give at least one RUN_DIR (or --show JSON)")
    masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    if not masks or any(m not in MASKS for m in masks):
        raise SystemExit(f"--masks takes {', '.join(MASKS)}")
    if args.images < 1 or args.batch < 1:
        raise SystemExit("--images and --batch must be at least 1")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {"images": args.images, "seed": args.seed, "threads": args.threads,
                              "batch": args.batch, "masks": masks, "pixelcnn_sweeps": args.pixelcnn_sweeps,
                              "rows": []}
    for run_path in args.runs:
        rows = benchmark_run(Path(run_path), args, masks, out.parent)
        result["rows"].extend(rows)
        out.write_text(json.dumps(result, indent=2))  # after every run, so a long job keeps its figures
    _print_table(result)
    print(f"\nwrote {out} and the PNG grids beside it", file=sys.stderr)
    return 0


# -- held-out images ------------------------------------------------------------------------------

def held_out(loaded: LoadedRun, limit: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(first `limit` reference images, uint8 (N, H, W, C) at the model's size and channels;
    their labels as the run's class indices, or None; description), the reference set
    benchmarks/quality.py measures against."""
    spec = loaded.family.spec
    source = loaded.settings.data
    idx = next((name for name in IDX_DATASETS if Path(source).name == f"{name}-train"), None)
    if idx is not None:
        if spec.size != 28:
            raise SystemExit(f"{loaded.name}: {idx} runs are 28 px, not {spec.size}")
        test, labels = load_idx_split(idx, "t10k")
        images = test[:REFERENCE_LIMIT][:limit, :, :, None]
        names = FASHION_CLASSES if idx == "fashion-mnist" else [str(d) for d in range(10)]
        run_labels = _as_run_labels([names[k] for k in labels[:len(images)]], loaded)
        description = f"{idx} test, first {len(images)}"
    else:
        dataset = load_source(source, spec.size, spec.channels)
        reference, labels, _train, split = reference_split(dataset, REFERENCE_LIMIT)
        images = reference[:limit]
        run_labels = (_as_run_labels([dataset.class_names[k] for k in labels[:len(images)]], loaded)
                      if dataset.class_names else None)
        description = f"{source}, first {len(images)} of {len(reference)} {split} images"
    if images.shape[-1] != spec.channels:
        if images.shape[-1] == 1 and spec.channels == 3:
            images = np.repeat(images, 3, axis=-1)
        else:
            raise SystemExit(f"{loaded.name}: {images.shape[-1]}-channel data for a {spec.channels}-channel model")
    if len(images) < limit:
        print(f"{loaded.name}: only {len(images)} held-out images", file=sys.stderr)
    return np.ascontiguousarray(images), (run_labels if spec.num_classes else None), description


def _as_run_labels(names: list[str], loaded: LoadedRun) -> np.ndarray | None:
    if not loaded.family.spec.num_classes:
        return None
    return np.array([loaded.class_names.index(name) for name in names], dtype=np.int64)


# -- masks ----------------------------------------------------------------------------------------

def centre_mask(size: int) -> np.ndarray:
    side = size // 2
    top = (size - side) // 2
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, top:top + side] = True
    return mask


def random_mask(size: int, seed: int) -> np.ndarray:
    """Rectangles and thick strokes until a coverage drawn in RANDOM_COVERAGE is reached; a
    shape that would take the coverage past the upper bound is redrawn (and after 100 redraws
    in a row the mask is taken as it is, once it covers the lower bound)."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(*RANDOM_COVERAGE)
    mask = np.zeros((size, size), dtype=bool)
    rows, cols = np.mgrid[0:size, 0:size]
    redrawn = 0
    while mask.mean() < target and not (redrawn >= 100 and mask.mean() >= RANDOM_COVERAGE[0]):
        shape = np.zeros_like(mask)
        if rng.random() < 0.5:
            h, w = rng.integers(size // 6, size // 2 + 1, size=2)
            top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            shape[top:top + h, left:left + w] = True
        else:  # a stroke: points within half its width of a segment
            (y0, x0), (y1, x1) = rng.uniform(0, size - 1, size=(2, 2))
            half_width = rng.uniform(1.0, max(1.5, size / 14))
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((rows - y0) * dy + (cols - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
            shape = (rows - (y0 + t * dy)) ** 2 + (cols - (x0 + t * dx)) ** 2 <= half_width ** 2
        if (mask | shape).mean() <= RANDOM_COVERAGE[1]:
            mask |= shape
            redrawn = 0
        else:
            redrawn += 1
    return mask


def masks_for(kind: str, size: int, count: int, seed: int) -> np.ndarray:
    if kind == "centre":
        return np.repeat(centre_mask(size)[None], count, axis=0)
    return np.stack([random_mask(size, seed + i) for i in range(count)])


# -- filling --------------------------------------------------------------------------------------

def _overrides(family_name: str, args: argparse.Namespace) -> dict[str, Any]:
    if family_name == "pixelcnn" and args.pixelcnn_sweeps is not None:
        return {"sweeps": args.pixelcnn_sweeps}
    if family_name == "flow-matching" and args.fm_options:
        return {"options": InpaintOptions(**_options(args.fm_options))}
    return {}


def fill_direct(family, images: np.ndarray, fills: np.ndarray, seed: int, labels: np.ndarray | None,
                overrides: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """family.inpaint on a batch, prepared as inpaint_candidates prepares one image: (the
    family's own output as uint8, that output with the known pixels copied from the images)."""
    x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float().div(255.0)
    keep = torch.from_numpy(~fills)[:, None]
    label_tensor = None
    if family.spec.num_classes:
        label_tensor = (torch.from_numpy(labels) if labels is not None
                        else torch.zeros(len(images), dtype=torch.long))
    family.eval_mode()
    raw = to_uint8(family.inpaint(x, keep, seed, label_tensor, **overrides))
    return raw, np.where(fills[..., None], raw, images)


def fill_all(family, images: np.ndarray, fills: np.ndarray, seed: int, labels: np.ndarray | None,
             batch: int, overrides: dict[str, Any], tag: str) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(fills (N, H, W, C) uint8, the family's raw outputs or None when inpaint_candidates ran,
    seconds of filling)."""
    n = len(images)
    filled = np.empty_like(images)
    raw_all = None if batch == 1 and not overrides else np.empty_like(images)
    seconds = 0.0
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        t0 = time.perf_counter()
        if raw_all is None:
            label = None if labels is None else int(labels[start])
            filled[start] = inpaint_candidates(family, images[start], fills[start], n=1,
                                               seed=seed + start, label=label)[0]
        else:
            raw, done = fill_direct(family, images[start:stop], fills[start:stop], seed + start,
                                    None if labels is None else labels[start:stop], overrides)
            raw_all[start:stop], filled[start:stop] = raw, done
        seconds += time.perf_counter() - t0
        print(f"  {tag}: {stop}/{n} images, {seconds / stop:.2f} s/image", file=sys.stderr)
    return filled, raw_all, seconds


def smooth_baseline_fill(images: np.ndarray, fills: np.ndarray) -> np.ndarray:
    """Each image's hole filled by smooth_fill, rounded to uint8."""
    x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float().div(255.0)
    keep = torch.from_numpy(~fills)[:, None].expand_as(x)
    return np.where(fills[..., None], to_uint8(smooth_fill(x, keep)), images)


def mean_colour_fill(images: np.ndarray, fills: np.ndarray) -> np.ndarray:
    """Each image's hole filled with the mean colour (per channel) of its known pixels."""
    out = images.copy()
    for i, (image, fill) in enumerate(zip(images, fills, strict=True)):
        colour = np.rint(image[~fill].reshape(-1, image.shape[-1]).astype(np.float64).mean(0))
        out[i][fill] = colour.astype(np.uint8)
    return out


# -- figures --------------------------------------------------------------------------------------

def hole_errors(filled: np.ndarray, images: np.ndarray, fills: np.ndarray) -> dict[str, Any]:
    """RMSE per image (mean over images) and PSNR of the pooled MSE, on the masked subpixels,
    [0, 1] scale; also the per-image RMSEs (for the paired comparison)."""
    diff = (filled.astype(np.float64) - images.astype(np.float64)) / 255.0
    hole = np.broadcast_to(fills[..., None], diff.shape)
    squared = np.where(hole, diff ** 2, 0.0).reshape(len(images), -1).sum(1)
    counts = hole.reshape(len(images), -1).sum(1)
    per_image = np.sqrt(squared / counts)
    pooled = squared.sum() / counts.sum()
    return {"rmse": float(per_image.mean()), "psnr": float(10 * math.log10(1.0 / max(pooled, 1e-12))),
            "per_image_rmse": per_image}


def known_violations(candidate: np.ndarray, images: np.ndarray, fills: np.ndarray) -> int:
    """Known subpixels whose value differs from the original."""
    known = np.broadcast_to(~fills[..., None], images.shape)
    return int(((candidate != images) & known).sum())


def check_against_candidates(family, image: np.ndarray, fill: np.ndarray, seed: int,
                             label: int | None, overrides: dict[str, Any]) -> bool | None:
    """Does fill_direct on one image give inpaint_candidates' result? None: not comparable
    (an override inpaint_candidates cannot pass)."""
    if overrides:
        return None
    via_candidates = inpaint_candidates(family, image, fill, n=1, seed=seed, label=label)
    labels = None if label is None else np.array([label])
    _raw, direct = fill_direct(family, image[None], fill[None], seed, labels, {})
    return bool(np.array_equal(via_candidates, direct))


def grid_rows(images: np.ndarray, fills: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """original | masked input (hole in HOLE_COLOUR) | fill, one row per image, in RGB."""
    def rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a

    masked = rgb(images).copy()
    masked[fills] = HOLE_COLOUR
    tiles = np.stack([rgb(images), masked, rgb(filled)], axis=1).reshape(-1, *masked.shape[1:])
    return make_grid(tiles, columns=3)


# -- one run --------------------------------------------------------------------------------------

def benchmark_run(run_dir: Path, args: argparse.Namespace, masks: list[str], out_dir: Path) -> list[dict[str, Any]]:
    loaded = load_run(run_dir, device="cpu")
    family = loaded.family
    family_name = loaded.settings.family
    if Capability.INPAINT not in family.capabilities:
        print(f"{loaded.name}: {family.title} cannot inpaint; skipped", file=sys.stderr)
        return []
    family.eval_mode()
    spec = family.spec
    images, labels, reference = held_out(loaded, args.images)
    overrides = _overrides(family_name, args)
    print(f"{loaded.name} ({family_name}, step {loaded.step}): {len(images)} images from {reference}"
          + (f", {overrides}" if overrides else ""), file=sys.stderr)
    matches = None
    if (args.batch > 1 or overrides) and not args.no_check:
        matches = check_against_candidates(family, images[0], centre_mask(spec.size), args.seed,
                                           None if labels is None else int(labels[0]), overrides)
        print(f"  direct path reproduces inpaint_candidates on image 0: {matches}", file=sys.stderr)
    rows = []
    for kind in masks:
        fills = masks_for(kind, spec.size, len(images), args.seed)
        filled, raw, seconds = fill_all(family, images, fills, args.seed, labels, args.batch, overrides,
                                        f"{loaded.name} {kind}")
        baseline = mean_colour_fill(images, fills)
        model, mean = hole_errors(filled, images, fills), hole_errors(baseline, images, fills)
        smooth = hole_errors(smooth_baseline_fill(images, fills), images, fills)
        png = out_dir / f"inpainting-{loaded.name}-{kind}.png"
        save_png(png, grid_rows(images[:GRID_ROWS], fills[:GRID_ROWS], filled[:GRID_ROWS]),
                 {"run": loaded.name, "mask": kind, "columns": "original | masked input | fill"}, scale=4)
        rows.append({
            "run": str(run_dir), "name": loaded.name, "family": family_name, "step": loaded.step,
            "reference": reference, "mask": kind, "images": len(images),
            "coverage": float(fills.mean()),
            "rmse_model": model["rmse"], "rmse_mean_colour": mean["rmse"],
            "psnr_model": model["psnr"], "psnr_mean_colour": mean["psnr"],
            "model_beats_baseline": model["rmse"] < mean["rmse"],
            "rmse_smooth": smooth["rmse"], "psnr_smooth": smooth["psnr"],
            "model_beats_smooth": model["rmse"] < smooth["rmse"],
            "images_model_better": int((model["per_image_rmse"] < mean["per_image_rmse"]).sum()),
            "seconds_per_image": seconds / len(images),
            "method": ("inpaint_candidates, one image at a time" if raw is None
                       else f"family.inpaint, batches of {args.batch}"),
            "overrides": {key: (dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
                          for key, value in overrides.items()},
            "matches_inpaint_candidates": matches,
            "known_violations_family": None if raw is None else known_violations(raw, images, fills),
            "known_violations_final": known_violations(filled, images, fills),
            "per_image_rmse_model": [round(float(v), 5) for v in model["per_image_rmse"]],
            "per_image_rmse_mean_colour": [round(float(v), 5) for v in mean["per_image_rmse"]],
            "png": str(png),
        })
    return rows


def _print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    print(f"\ninpainting on held-out images, seed {result['seed']}, {result['threads']} thread(s); "
          "errors on the masked subpixels, [0, 1] scale")
    print("| run | family | mask | images | hole | RMSE model | RMSE mean-colour | PSNR model | "
          "PSNR mean-colour | model beats baseline? | ΔRMSE ± SE | images model better | RMSE smooth fill | "
          "beats smooth? | s/image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = np.array(r["per_image_rmse_model"]) - np.array(r["per_image_rmse_mean_colour"])
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        print(f"| {r['name']} | {r['family']} | {r['mask']} | {r['images']} | {r['coverage']:.0%} | "
              f"{r['rmse_model']:.4f} | {r['rmse_mean_colour']:.4f} | {r['psnr_model']:.2f} | "
              f"{r['psnr_mean_colour']:.2f} | {'yes' if r['model_beats_baseline'] else 'NO'} | "
              f"{diff.mean():+.4f} ± {se:.4f} | {r['images_model_better']}/{r['images']} | "
              f"{_smooth_cells(r)} | {r['seconds_per_image']:.2f} |")
    final = sum(r["known_violations_final"] for r in rows)
    family_checked = [r for r in rows if r["known_violations_family"] is not None]
    print(f"\nknown subpixels changed in the final images: {final} (must be 0)")
    if family_checked:
        print("known subpixels changed in the families' own outputs: "
              f"{sum(r['known_violations_family'] for r in family_checked)} over {len(family_checked)} rows")
    for r in rows:
        notes = [r["method"]] + ([f"overrides {r['overrides']}"] if r["overrides"] else [])
        if r["matches_inpaint_candidates"] is not None:
            notes.append(f"reproduces inpaint_candidates: {r['matches_inpaint_candidates']}")
        print(f"- {r['name']} {r['mask']}: {'; '.join(notes)}; {r['reference']}")


def _smooth_cells(row: dict[str, Any]) -> str:
    if "rmse_smooth" not in row:  # a result file from before the smooth baseline
        return "– | –"
    return f"{row['rmse_smooth']:.4f} | {'yes' if row['model_beats_smooth'] else 'no'}"


if __name__ == "__main__":
    sys.exit(main())
