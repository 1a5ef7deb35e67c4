"""Remake the pretrained runs in pretrained/ with the project's own `genstudio train`.

    .venv/bin/python tools/make_pretrained.py                 # all of them
    .venv/bin/python tools/make_pretrained.py vae-shapes      # one
    .venv/bin/python tools/make_pretrained.py --list          # the recorded commands

Each run is trained by the command recorded below (and in pretrained/MANIFEST.json) into a
temporary folder, then shipped without its optimizer state (weights, EMA and RNG only: a third
of the size; a pretrained run is for sampling and exploring, and says so if someone tries to
resume it). Training is deterministic on the CPU for a given torch build, so the same command
reproduces the same weights there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genstudio.core.runs import pretrained  # noqa: E402
from genstudio.core.runs.images import make_grid, save_png  # noqa: E402
from genstudio.core.runs.run import load_run  # noqa: E402
from genstudio.core.trained.sampling import generate  # noqa: E402

OUT = ROOT / "pretrained"

# name → (title, `genstudio train` arguments after --out). Each checkpoint stays under 10 MB.
RUNS: dict[str, tuple[str, str]] = {
    # The defaults at 32 px, stopped by `--minutes` or `--cpu-minutes` (the step is recorded):
    # `--steps` is only a ceiling, since nothing in a run depends on its planned length.
    "vae-shapes": ("VAE · shapes 32 px",
                   "--family vae --data builtin:shapes --size 32 --steps 100000 --batch 64 --seed 0"),
    "gan-shapes": ("GAN · shapes 32 px",
                   # D twice per G step with β₁ = 0 (as SNGAN trains its critic), chosen from a short
                   # screen's samples; that screen's FID preferred the defaults (docs/families/gan.md)
                   "--family gan --data builtin:shapes --size 32 --steps 100000 --batch 64 --seed 0 "
                   "--set n_critic=2 --set adam_betas=[0.0,0.9]"),
    "flow-shapes": ("Normalizing flow · shapes 32 px",
                    "--family flow --data builtin:shapes --size 32 --steps 100000 --batch 64 --seed 0"),
    "diffusion-shapes": ("Diffusion · shapes 32 px",
                         "--family diffusion --data builtin:shapes --size 32 --steps 100000 --batch 64 "
                         "--seed 0"),
    "flow-matching-shapes": ("Flow matching · shapes 32 px",
                             "--family flow-matching --data builtin:shapes --size 32 --steps 100000 --batch 64 "
                             "--seed 0"),
    "pixelcnn-shapes": ("PixelCNN · shapes 16 px",
                        "--family pixelcnn --data builtin:shapes --size 16 --steps 100000 --batch 64 --seed 0"),
    "ebm-shapes": ("Energy-based · shapes 32 px",
                   "--family ebm --data builtin:shapes --size 32 --steps 100000 --batch 64 --seed 0 "
                   # a 500-image replay buffer keeps the checkpoint under 3 MB (the default's is 12.7)
                   "--set buffer_size=500"),
    "gan-shapes-conditional": ("Class-conditional GAN · shapes 32 px",
                               "--family gan --data builtin:shapes --size 32 --steps 100000 --batch 64 "
                               "--seed 0 --conditional --set n_critic=2 --set adam_betas=[0.0,0.9]"),
    "diffusion-shapes-conditional": ("Class-conditional diffusion (CFG) · shapes 32 px",
                                     "--family diffusion --data builtin:shapes --size 32 --steps 100000 "
                                     "--batch 64 --seed 0 --conditional"),
}


# Side outputs off: no grids, checkpoints or evaluations until the end (an evaluation draws
# samples, so its cadence is part of what reproduces the weights).
SIDE_OUTPUTS = "--sample-every 0 --checkpoint-every 0 --eval-every 0"


def command(name: str, steps: int | None = None) -> str:
    """The recorded command; `steps`: the step a time-limited run was stopped at. Nothing in a
    run depends on its planned length, so stopping at step k leaves the weights `--steps k`
    would make."""
    arguments = RUNS[name][1]
    if steps is not None:
        arguments = re.sub(r"--steps \d+", f"--steps {steps}", arguments)
    return f"genstudio train {arguments} {SIDE_OUTPUTS} --out RUN"


def train_argv(name: str, run: Path) -> list[str]:
    return [sys.executable, "-m", "genstudio", "train", *shlex.split(RUNS[name][1]),
            *shlex.split(SIDE_OUTPUTS), "--out", str(run), "--quiet"]


def ship(name: str, run: Path) -> dict:
    """Package a finished run into pretrained/NAME and draw its preview grid."""
    step = json.loads((run / "checkpoint.json").read_text())["step"]
    entry = pretrained.package(run, OUT, name, RUNS[name][0], command(name, step))
    loaded = load_run(OUT / name, device="cpu")
    save_png(OUT / name / "preview.png", make_grid(generate(loaded, 16, seed=0), 4), {"run": name})
    return entry


def make_all(names: list[str], jobs: int, entries: dict[str, dict], minutes: float | None,
             cpu_minutes: float | None = None) -> None:
    """Train up to `jobs` runs at once (each on one torch thread), shipping each as it ends;
    a run still training `minutes` after it started, or once it has used `cpu_minutes` of CPU
    time, is stopped (SIGTERM: the step ends, then a save), so every run gets the same budget
    whatever the order and whatever else the machine does."""
    with tempfile.TemporaryDirectory(prefix="pretrained-") as tmp:
        waiting, running, started, failed = list(names), {}, {}, []
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                argv = train_argv(name, Path(tmp) / name)
                print("$", shlex.join(argv), flush=True)
                running[name] = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
                started[name] = time.monotonic()
            name, process = _first_finished(running, started, minutes, cpu_minutes)
            del running[name]
            stopped_here = name not in started  # by the time limit: train exits 143 after saving
            if process.returncode not in ((0, 143) if stopped_here else (0,)):  # the others go on
                failed.append(name)
                print(f"{name}: training failed (exit {process.returncode}); not shipped", flush=True)
                continue
            entries[name] = ship(name, Path(tmp) / name)
            pretrained.write_manifest(OUT, [entries[n] for n in RUNS if n in entries])  # RUNS order
            print(f"{name}: {entries[name]['bytes'] / 1e6:.1f} MB, step {entries[name]['step']}", flush=True)
    if failed:
        raise SystemExit(f"not shipped: {', '.join(failed)}")


def _first_finished(running: dict[str, subprocess.Popen], started: dict[str, float],
                    minutes: float | None, cpu_minutes: float | None = None) -> tuple[str, subprocess.Popen]:
    while True:
        for name, process in running.items():
            if process.poll() is not None:
                return name, process
            over_time = minutes is not None and time.monotonic() - started.get(name, math.inf) > 60 * minutes
            over_cpu = cpu_minutes is not None and cpu_seconds(process.pid) > 60 * cpu_minutes
            if name in started and (over_time or over_cpu):
                # Once only: the run saves at the end of its step and exits 143, but a second
                # SIGTERM after its handler is gone would kill it.
                del started[name]
                process.terminate()
        time.sleep(1)


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system, all its threads), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"of: {', '.join(RUNS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the recorded commands and stop")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")
    parser.add_argument("--minutes", type=float, help="stop each run still training this long after it "
                        "started and ship it at the step it reached (recorded in its command)")
    parser.add_argument("--cpu-minutes", type=float, help="stop each run once it has used this much CPU "
                        "time (Linux), however busy the machine was; shipped as with --minutes")
    args = parser.parse_args(argv)
    if args.list:
        for name in RUNS:
            print(f"{name}: {command(name)}")
        return 0
    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    manifest_path = OUT / pretrained.MANIFEST
    entries = {e["name"]: e for e in (json.loads(manifest_path.read_text())["runs"]
                                      if manifest_path.is_file() else [])}
    make_all(args.names or list(RUNS), args.jobs, entries, args.minutes, args.cpu_minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
