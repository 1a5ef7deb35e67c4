"""Training throughput of one family in the desktop app vs the same loop headless.

    .venv/bin/python -m benchmarks.app_vs_headless [--family vae] [--steps 400] [--repeats 2]

Both modes train the same settings (family, data, size, batch, seed, sample/checkpoint cadence)
from scratch; the app mode drives the real MainWindow offscreen (live plot, progress, sample
previews all on), the headless mode consumes core.training.Trainer.run like the CLI does.
Images/s comes from each run's own metrics.jsonl after a warm-up, so both are measured by the
same clock. Modes alternate, so drift on a noisy machine hits both alike. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from benchmarks.common import images_per_sec_from_metrics  # noqa: E402
from genstudio.core.runs.run import TrainSettings  # noqa: E402
from genstudio.core.runtime.training import Trainer  # noqa: E402


def headless(settings: TrainSettings, run_dir: Path) -> None:
    for _event in Trainer(settings, str(run_dir)).run():
        pass


def in_app(settings: TrainSettings, home: Path) -> Path:
    """Train through the real window; returns the run folder it created."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from genstudio.app.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    _wait(app, lambda: window.preview is not None, 120)
    window.training_panel.set_values(
        steps=settings.steps, batch=settings.batch, seed=settings.seed, device=settings.device,
        sample_every=settings.sample_every, checkpoint_every=settings.checkpoint_every,
        family_config=settings.family_config,
    )
    loop = QEventLoop()
    window.training_ended.connect(lambda _reason: loop.quit())
    QTimer.singleShot(0, window.start_training)
    loop.exec()
    run_dir = Path(window._finished_run or "")  # noqa: SLF001 - benchmark introspection
    window.close()
    window.shutdown()  # joins the gallery's sampling job started when training ended
    if not (run_dir / "metrics.jsonl").is_file():
        runs = sorted((home / "data" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        run_dir = runs[-1]
    return run_dir


def _wait(app, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get ready in time")
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="vae")
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20, help="steps excluded from the measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch


    home = Path(tempfile.mkdtemp(prefix="genstudio-bench-"))
    os.environ["GENSTUDIO_HOME"] = str(home / "data")
    os.environ.setdefault("GENSTUDIO_CACHE_DIR", str(home / "cache"))
    settings = TrainSettings(family=args.family, data=args.data, size=args.size, batch=args.batch,
                             steps=args.steps, seed=0, device="cpu")
    results: dict[str, list[float]] = {"headless": [], "app": []}
    for rep in range(args.repeats):
        run = home / f"headless-{rep}"
        headless(settings, run)
        results["headless"].append(images_per_sec_from_metrics(run, args.batch, args.warmup))
        run = in_app(settings, home)
        results["app"].append(images_per_sec_from_metrics(run, args.batch, args.warmup))
        print(f"repeat {rep + 1}: headless {results['headless'][-1]:.0f} img/s, "
              f"app {results['app'][-1]:.0f} img/s", flush=True)

    base = statistics.median(results["headless"])
    print(f"\n{args.family} on {args.data} at {args.size} px, batch {args.batch}, {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print(f"{'mode':<10}{'median img/s':>14}{'runs':>28}{'vs headless':>14}")
    for mode, values in results.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{mode:<10}{median:>14.0f}{runs:>28}{median / base:>13.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
