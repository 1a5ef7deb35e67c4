"""Screenshots of the app's panels, made from real runs, for the README and issues.

    .venv/bin/python tools/screenshots.py --out docs/screenshots RUN [RUN …]

Runs offscreen (no display needed): opens the real main window, adds the given run folders
to the Compare tab, ticks them, evaluates them from the Evaluate dialog (offline extractor
unless --extractor inception and weights are configured) and saves:
  train.png        the Train tab while a VAE trains on the built-in shapes (--train-steps
                   steps of a run that is then stopped; its run folder is left in the runs folder)
  compare.png      the Compare tab with curves and the table
  evaluation.png   the Evaluate dialog with figures and the closest sample/training pairs
  gallery.png      the Gallery of the first run
  explore.png      the Explore tab of the first run: encoded map, sliders, an interpolation
  inpaint.png      the Inpaint tab of the first run: a centre hole in training image #5 filled
                   with 6 candidates, and every given run filling it side by side
  playground.png   the 2-D playground: every family on the 8 Gaussians after --playground-seconds
                   of training each (--playground-only: this one alone, no runs needed), and
  playground-views.png  the same moment, each family's own view
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from genstudio.app.main_window import MainWindow  # noqa: E402


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the event loop until `predicate()` holds (polling every 50 ms)."""
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: (predicate() or time.monotonic() > deadline) and loop.quit())
    timer.start(50)
    loop.exec()
    timer.stop()
    if not predicate():
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def shoot_training(window: MainWindow, steps: int, path: Path) -> None:
    """The Train tab mid-run: curves, speed, ETA and the latest sample grid, then Stop."""
    window.tabs.setCurrentIndex(0)
    window.family_picker.select("vae")
    wait_until(lambda: window.preview is not None, 120, "the dataset preview")
    panel = window.training_panel
    panel.set_values(steps=100 * steps, sample_every=max(1, steps // 4), checkpoint_every=0,
                     eval_every=max(1, steps // 2))
    wait_until(panel.start_button.isEnabled, 60, "the Start button")
    window.start_training()
    wait_until(lambda: panel.progress.value() >= steps and window.latest_samples.image() is not None,
               1800, f"{steps} training steps")
    window.grab().save(str(path))
    window.stop_training()
    wait_until(lambda: not window.busy() and not window.run_jobs.is_busy(), 300,
               "the stopped run to be saved and opened")


def shoot_playground(window: MainWindow, seconds: float, path: Path) -> None:
    panel = window.open_playground()
    wait_until(lambda: len(panel.views) == len(panel.ticked())
               and all(view.train_seconds >= seconds for view in panel.views.values()),
               120 + 30 * seconds * len(panel.ticked()), "the playground's families")
    window.grab().save(str(path))
    for family_panel in panel.panels.values():   # then each family's own view
        family_panel.own_view.setChecked(True)
    wait_until(lambda: all(view.extra is not None for view in panel.views.values()), 60, "the families' own views")
    QApplication.processEvents()
    window.grab().save(str(path.with_name(path.stem + "-views.png")))
    panel.stop(wait_ms=60_000)


def evaluate(view, args, out: Path):
    """The Evaluate dialog over the ticked runs; saves evaluation.png."""
    view.open_evaluation()
    dialog = view.evaluation
    dialog.samples_spin.setValue(args.samples)
    dialog.reference_spin.setValue(args.reference)
    dialog.extractor_combo.setCurrentIndex(dialog.extractor_combo.findData(args.extractor))
    dialog.resize(900, 900)
    dialog.start()
    wait_until(lambda: not dialog.busy(), 3600, "the evaluation")
    if not dialog.results:
        raise SystemExit(f"evaluation failed: {dialog.stage_label.text()}")
    dialog.grab().save(str(out / "evaluation.png"))
    return dialog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=1000,
                        help="held-out images to score (a diffusion bound costs T passes each)")
    parser.add_argument("--extractor", default="offline", choices=("offline", "inception"))
    parser.add_argument("--size", default="1400x900")
    parser.add_argument("--train-steps", type=int, default=400,
                        help="steps trained before train.png is taken (0: no train.png)")
    parser.add_argument("--no-evaluation", action="store_true",
                        help="skip the Evaluate dialog (no evaluation.png; compare.png without new figures)")
    parser.add_argument("--train-only", action="store_true", help="only train.png (no runs needed)")
    parser.add_argument("--playground-seconds", type=float, default=20.0,
                        help="training seconds of each 2-D family before playground.png (0: none)")
    parser.add_argument("--playground-only", action="store_true", help="only playground.png (no runs needed)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(width, height)
    window.show()
    if args.playground_only:
        shoot_playground(window, args.playground_seconds, out / "playground.png")
        window.shutdown()
        return 0
    if args.train_steps:
        shoot_training(window, args.train_steps, out / "train.png")
    if args.train_only:
        window.shutdown()
        return 0
    view = window.comparison
    window.tabs.setCurrentWidget(view)
    wait_until(lambda: not view.list_jobs.is_busy(), 60, "the run list")
    for run in args.runs:
        view.add_run(run)
        wait_until(lambda: not any(r.is_busy() for r in view.runners), 120, f"adding {run}")
    for run in args.runs:
        view.set_checked(run, True)
    wait_until(lambda: view.table is not None and not view.table_jobs.is_busy(), 120, "the table")

    dialog = None
    if args.no_evaluation:
        window.grab().save(str(out / "compare.png"))
    else:
        dialog = evaluate(view, args, out)
        wait_until(lambda: not any(r.is_busy() for r in view.runners), 120, "the refreshed table")
        window.grab().save(str(out / "compare.png"))

    window.open_run(args.runs[0])
    window.tabs.setCurrentWidget(window.gallery)
    first = Path(args.runs[0]).resolve()
    # Not just any samples: those of the run just opened (a stopped training opened its own).
    wait_until(lambda: window.loaded is not None and window.loaded.run.path.resolve() == first
               and window.gallery.samples is not None and window.gallery.samples.loaded is window.loaded,
               300, "the gallery samples of the first run")
    window.grab().save(str(out / "gallery.png"))
    explorer = window.explorer
    window.tabs.setCurrentWidget(explorer)
    if explorer.loaded is not None:  # a family with a latent
        # Encoding starts on its own once the run is open unless it would take long (GAN
        # inversion), when it waits for Encode; the interpolation needs its images.
        wait_until(lambda: explorer.encoded is not None or explorer.estimate is not None, 300, "the encoder's timing")
        if explorer.estimate is not None:
            explorer.encode_button.click()
        wait_until(lambda: explorer.encoded is not None, 1800, "the encoded training images")
        explorer.endpoint_a.kind.setCurrentText("Dataset image")
        explorer.endpoint_b.kind.setCurrentText("Dataset image")
        explorer.endpoint_b.number.setValue(1)
        explorer.steps_spin.setValue(10)
        explorer.start_interpolation()
        wait_until(lambda: not explorer.interpolate_jobs.is_busy() and not explorer.decode_jobs.is_busy(),
                   600, "the interpolation")
    window.grab().save(str(out / "explore.png"))
    inpaint = window.inpaint
    window.tabs.setCurrentWidget(inpaint)
    if inpaint.loaded is not None:  # a family that inpaints
        inpaint.dataset_spin.setValue(5)
        inpaint.use_dataset_image()
        wait_until(lambda: inpaint.session.image is not None, 300, "the training image")
        side = inpaint.session.history.size
        inpaint.session.history.fill_rect((0.3 * side, 0.3 * side), (0.7 * side, 0.7 * side))
        inpaint.canvas.refresh_mask()
        inpaint.canvas.mask_changed.emit()  # what a gesture ends with: updates the "To fill" count
        inpaint.count_spin.setValue(6)
        inpaint.start_fill()
        wait_until(lambda: inpaint.session.result is not None, 1800, "the fill")
        for run in args.runs[1:]:
            inpaint.add_run(run)
        wait_until(inpaint.compare_button.isEnabled, 60, "the fill's thread to end")
        inpaint.start_compare()
        wait_until(lambda: bool(inpaint.compared), 3600, "the families' fills")
        inpaint.candidate_list.setCurrentRow(1)
    wait_until(lambda: not any(r.is_busy() for r in inpaint.runners), 60, "the inpainting jobs")
    window.grab().save(str(out / "inpaint.png"))
    if args.playground_seconds:
        shoot_playground(window, args.playground_seconds, out / "playground.png")
    print(f"wrote {', '.join(p.name for p in sorted(out.glob('*.png')))} to {out}")
    window.shutdown()
    if dialog is not None:
        dialog.close()
    app.processEvents()  # once, to let the windows close (not in a loop: see tests/app/conftest.py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
