"""Peak memory of training on a big folder: Fashion-MNIST's 70,000 images written as PNGs.

    .venv/bin/python -m benchmarks.memory                          # 7,000 / 35,000 / 70,000 images
    .venv/bin/python -m benchmarks.memory --counts 7000,70000 --steps 50 --work /tmp/genstudio-mem

For each count N (the first N of train + t10k, in class subfolders; smaller folders are hard
links into the biggest, so nothing is written twice), `genstudio train --family vae --size 28`
runs in a fresh process twice: cold (an empty cache: scan, decode, cache write, then training)
and warm (the cache from the cold run). Peak RSS is the training process's own high-water
mark (VmHWM, PyTorch included; benchmarks/common.py says why not wait4's ru_maxrss); the table
prints it beside the bytes of the decoded images, so the growth with N can be read off.
Needs ../shared/datasets/fashion-mnist; says so and stops without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import run_with_peak_rss
from benchmarks.real_data import DATASETS, FASHION_CLASSES, load_idx_split

REPO = Path(__file__).resolve().parents[1]


def write_folder(work: Path, count: int) -> Path:
    """The first `count` Fashion-MNIST images (train, then t10k) as PNGs under CLASS/ folders."""
    folder = work / "fashion-70k"
    marker = folder / f".complete-{count}"
    if marker.exists():
        return folder
    train, train_labels = load_idx_split("fashion-mnist", "train")
    test, test_labels = load_idx_split("fashion-mnist", "t10k")
    images, labels = np.concatenate([train, test]), np.concatenate([train_labels, test_labels])
    for i in range(min(count, len(images))):
        sub = folder / FASHION_CLASSES[labels[i]]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(sub / f"{i:05d}.png")
    marker.touch()
    return folder


def subset(folder: Path, work: Path, count: int) -> Path:
    """A folder of the first `count` images of `folder` (hard links)."""
    out = work / f"fashion-{count}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    files = sorted(folder.glob("*/*.png"), key=lambda p: p.name)[:count]
    for path in files:
        target = out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    (out / ".complete").touch()
    return out


def train_peak_rss(data: Path, out: Path, cache: Path, steps: int, batch: int) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `genstudio train` process."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "genstudio", "train", "--family", "vae", "--data", str(data),
           "--size", "28", "--steps", str(steps), "--batch", str(batch), "--device", "cpu",
           "--sample-every", "0", "--checkpoint-every", "0", "--eval-every", "0", "--out", str(out), "--quiet"]
    env = {**os.environ, "GENSTUDIO_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    code, stderr, peak = run_with_peak_rss(cmd, env)
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"genstudio train failed on {data}: {stderr[-2000:]}")
    return peak, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="7000,35000,70000")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--work", default="/tmp/genstudio-bench/memory")
    args = parser.parse_args(argv)
    if not (DATASETS / "fashion-mnist").is_dir():
        print(f"skipped: {DATASETS / 'fashion-mnist'} is absent (the real datasets live beside the checkout)")
        return 0
    counts = sorted(int(c) for c in args.counts.split(","))
    work = Path(args.work)
    t0 = time.perf_counter()
    biggest = write_folder(work, counts[-1])
    print(f"wrote {counts[-1]:,} PNGs in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for count in counts:
        data = subset(biggest, work, count)
        cache = work / f"cache-{count}"
        shutil.rmtree(cache, ignore_errors=True)
        cold, cold_s = train_peak_rss(data, work / "run", cache, args.steps, args.batch)
        warm, warm_s = train_peak_rss(data, work / "run", cache, args.steps, args.batch)
        cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
        rows.append((count, count * 28 * 28 * 3 / 2**20, cached, cold, cold_s, warm, warm_s))
        print(f"{count:,} images: cold {cold:.0f} MiB in {cold_s:.0f} s, warm {warm:.0f} MiB in {warm_s:.0f} s",
              flush=True)
    print(f"\npeak RSS of `genstudio train --family vae --size 28 --steps {args.steps} --batch {args.batch}` "
          f"(whole process, {os.cpu_count()} CPUs, torch threads default)")
    print(f"{'images':>8} {'decoded MiB':>12} {'cache MiB':>10} {'cold RSS MiB':>13} {'cold s':>7} "
          f"{'warm RSS MiB':>13} {'warm s':>7}")
    for count, decoded, cached, cold, cold_s, warm, warm_s in rows:
        print(f"{count:>8,} {decoded:>12.0f} {cached:>10.0f} {cold:>13.0f} {cold_s:>7.0f} {warm:>13.0f} {warm_s:>7.0f}")
    if len(rows) > 1:
        (n0, *_, c0, _, w0, _), (n1, *_, c1, _, w1, _) = rows[0], rows[-1]
        print(f"from {n0:,} to {n1:,} images ({n1 / n0:.0f}×): cold RSS ×{c1 / c0:.2f}, warm RSS ×{w1 / w0:.2f}; "
              f"{(w1 - w0) / (n1 - n0) * 1000:.2f} MiB more per 1,000 images warm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
