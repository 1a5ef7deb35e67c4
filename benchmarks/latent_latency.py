"""Slider-to-image latency of the latent explorer, per decodable family and image size.

    .venv/bin/python -m benchmarks.latent_latency [--families vae,gan,flow,diffusion] [--sizes 32,64]
                                                  [--seconds 4] [--threads 2]

Two figures per family and size, on fresh default-config models (a decode costs the same
whatever the weights):
- decode: one image through core.latent.decode_latents, the model alone, back to back;
- slider → image: the real LatentExplorer panel offscreen, its first slider moved 60 times a
  second for `--seconds`, timed from each slider move to the moment the panel shows the image
  made for it (moves overtaken while a decode runs are never decoded, by design; the figure
  is over the images actually shown);
and, once, how smooth the 2-D map stays with --map-points points (load time, repaint per zoom step).
p50/p95 in milliseconds. The issue's target: one image under 16 ms for VAE and GAN at 64 px.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genstudio.core.families import ImageSpec, create_family, suggested_knobs  # noqa: E402
from genstudio.core.runs.run import LoadedRun, RunDir, TrainSettings  # noqa: E402
from genstudio.core.trained.latent import decode_latents, prior_latents  # noqa: E402


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def decode_times(family, seconds: float) -> list[float]:
    z = prior_latents(family.latent_dim, 1, 0)
    decode_latents(family, z)  # warm-up: first-call allocations
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        started = time.perf_counter()
        decode_latents(family, z)
        times.append(1000 * (time.perf_counter() - started))
    return times


def slider_times(family, seconds: float) -> tuple[list[float], int]:
    """(latencies of the images shown, slider moves made) through the real panel."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from genstudio.app.panels.latent_explorer import LatentExplorer

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(family=family.name, data="builtin:shapes", size=family.spec.size)
        loaded = LoadedRun(RunDir(tmp), family, settings, 0, [], {})
        panel = LatentExplorer()
        panel.resize(1200, 800)
        panel.set_run(loaded)  # not shown: no encoding starts; raw sliders
        loop = QEventLoop()
        panel.decode_jobs.busy_changed.connect(lambda busy: busy or loop.quit())
        loop.exec()  # the first image
        panel.latencies_ms.clear()
        slider = panel.slider_rows[0].slider
        moves = {"n": 0}
        timer = QTimer()
        timer.setInterval(16)

        def move() -> None:
            moves["n"] += 1
            slider.setValue(-250 + (moves["n"] * 7) % 500)

        timer.timeout.connect(move)
        timer.start()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(panel.latencies_ms) < 3:
            QTimer.singleShot(50, loop.quit)
            loop.exec()
        timer.stop()
        while panel.decode_jobs.is_busy():
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        latencies = list(panel.latencies_ms)
        panel.deleteLater()
        app.processEvents()
    return latencies, moves["n"]


def map_times(points: int) -> tuple[float, list[float]]:
    """(ms to load `points` into the latent map, ms per full repaint of it)."""
    from PySide6.QtWidgets import QApplication

    from genstudio.app.panels.latent_map import LatentMapView

    app = QApplication.instance() or QApplication([])
    view = LatentMapView()
    view.resize(600, 500)
    view.show()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    view.set_map(rng.normal(size=(points, 2)).astype(np.float32), rng.integers(0, 10, points),
                 [f"class {i}" for i in range(10)], ("PC1", "PC2"))
    load_ms = 1000 * (time.perf_counter() - started)
    repaints = []
    for i in range(20):
        view.view_box.setXRange(-3 + 0.05 * i, 3, padding=0)  # a zoom step, as the wheel does
        started = time.perf_counter()
        view.plot.grab()  # renders the whole view now (offscreen, repaint() may not paint)
        repaints.append(1000 * (time.perf_counter() - started))
    view.deleteLater()
    app.processEvents()
    return load_ms, repaints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="vae,gan,flow,diffusion")
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--map-points", type=int, default=5000, help="points in the map-smoothness check (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.map_points:
        load_ms, repaints = map_times(args.map_points)
        p50, p95 = percentiles(repaints)
        print(f"latent map of {args.map_points:,} points: loaded in {load_ms:.0f} ms; a zoom step repaints in "
              f"{p50:.1f} ms p50, {p95:.1f} ms p95")
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; "
          "latencies in ms, p50 / p95", file=sys.stderr)
    print("| family | px | latent | decode p50 | decode p95 | slider→image p50 | slider→image p95 | images shown / moves |")
    print("|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        for name in args.families.split(","):
            spec = ImageSpec(channels=3, size=size)  # the widths a new run at this size gets
            family = create_family(name, spec, suggested_knobs(name, spec, "cpu", {}), "cpu", seed=0)
            family.eval_mode()
            d50, d95 = percentiles(decode_times(family, args.seconds))
            shown, moves = slider_times(family, args.seconds)
            s50, s95 = percentiles(shown)
            print(f"| {name} | {size} | {family.latent_dim} | {d50:.1f} | {d95:.1f} | {s50:.1f} | {s95:.1f} | "
                  f"{len(shown)} / {moves} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
