"""The speed suite: one command, one table per measurement.

    .venv/bin/python -m benchmarks.speed                       # defaults: every family, a few minutes each
    .venv/bin/python -m benchmarks.speed --quick               # a smoke run: tiny step counts
    .venv/bin/python -m benchmarks.speed --only throughput,gui --families vae,gan
    .venv/bin/python -m benchmarks.speed --only throughput --families diffusion --size 64  # app, CLI and bare at 64 px

Sections (all measured in this one run, modes interleaved per family so that drift on a busy
machine hits them alike):
  throughput  training images/s per family: in the app's training worker (real MainWindow
              offscreen, live plots on), the headless CLI (a subprocess, `genstudio train`), and
              a bare PyTorch loop of the same network, batch and data (the family's train_step
              on uint8 batches, no events), in a fresh process like the CLI, twice: as a user
              would write it (glibc's allocator defaults) and with the C heap set as genstudio
              sets it while training (core/runtime/memory.py). CLI against the second is the loop's
              own cost; against the first, what a user gains. The CLI's peak
              RSS is its own VmHWM (not wait4's, which reports this benchmark's own peak: see
              benchmarks/common.py).
              On CUDA, GPU memory per family at the batch.
  gui         lateness of a 10 ms QTimer on the GUI thread, p50/p99: window idle vs while each
              family trains in the app.
  paired      the CLI's training loop, and the app's (its training thread, window live), against
              the bare step, alternating step by step in one process: the loop's own cost, free
              of the VM's drift between processes. In the app the bare steps run with the GUI
              thread held asleep, as in a process without a window.
  control     pause and stop latency (request → acknowledged by the loop) per family, asked at
              random moments inside steps, with the loop running in a thread as in the app.
  sampling    images/s per family and sampler (DDIM step counts, DDPM), decode latency of one
              latent (what a slider move costs).
  data        scan + decode + cache throughput on a folder of N small PNGs (default 10,000,
              written once into a temporary folder), then the warm (cached) load time; peak
              RSS of a short CLI training on that folder.
  startup     cold start of the app to an interactive window (a fresh process).
  playground  the 2-D playground with every family training at once: the 10 ms QTimer's
              lateness, and how many times a second each family's panel is redrawn.

Images/s of the app and the CLI come from each run's own metrics.jsonl after a warm-up (the
loop's clock), the bare loop's from perf_counter over the same steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import images_per_sec_from_metrics, print_table, run_with_peak_rss  # noqa: E402
from genstudio.core.families import (  # noqa: E402
    Capability,
    available_families,
    create_family,
    family_class,
    suggested_knobs,
)
from genstudio.core.runs.run import TrainSettings  # noqa: E402
from genstudio.core.runtime.training import (  # noqa: E402
    PauseChanged,
    StepLogged,
    StepObserver,
    Stopping,
    Trainer,
    TrainingControl,
)

FAMILIES = available_families()
SECTIONS = ("throughput", "gui", "paired", "control", "sampling", "data", "startup", "playground")
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _ratio(mode: list[float], bare: list[float]) -> str:
    """Median of the per-round ratios, with their range: the spread is the measurement's noise."""
    if not mode:
        return "-"
    ratios = [m / b for m, b in zip(mode, bare, strict=True)]
    if len(ratios) == 1:
        return f"{ratios[0]:.1%}"
    return f"{statistics.median(ratios):.1%} [{min(ratios):.0%}-{max(ratios):.0%}]"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- the three ways of training -----------------------------------------------------------------


def _bare_family(settings: TrainSettings, spec, device: torch.device):
    """The family as the trainer builds it (same seed, so the same initial weights), in training
    mode, with the trainer's fast path on CUDA (autocast, channels_last; all off on the CPU), so
    a ratio measures the loop around the step, not a difference in arithmetic; and a generator
    seeded as the trainer's."""
    from genstudio.core.runtime.accel import Acceleration, plan_for

    knobs = {**suggested_knobs(settings.family, spec, device, settings.family_config), **settings.family_config}
    family = create_family(settings.family, spec, knobs, device, settings.seed)
    family.train_mode()
    accel = Acceleration(plan_for(device, family, settings.precision), family)
    family.step_runtime = accel.step_runtime()  # the trainer's, less its guard and interrupter
    return family, accel, torch.Generator(device=device).manual_seed(settings.seed + 1)


def bare_loop_keeping_freed_memory(settings: TrainSettings, warmup: int) -> tuple[float, float | None]:
    """bare_loop with the C heap as a training run sets it: freed activations kept for reuse."""
    from genstudio.core.runtime.memory import keep_freed_memory

    with keep_freed_memory():
        return bare_loop(settings, warmup)


def bare_train_step(family, accel, images: torch.Tensor, labels: torch.Tensor | None,
                    generator: torch.Generator) -> None:
    """What a plain PyTorch loop does with a batch of uint8 images: scale them and train."""
    with family.step_runtime.autocast():
        family.train_step(accel.batch_layout(images.float().div_(255.0)), labels, generator)


def bare_loop(settings: TrainSettings, warmup: int) -> tuple[float, float | None]:
    """images/s of the family's train_step on the trainer's own batches, nothing else; and on
    CUDA the peak GPU memory (MiB)."""
    from genstudio.core.data import held_out_split, load_source
    from genstudio.core.runtime.device import select_device

    data = load_source(settings.data, settings.size, settings.channels)
    images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)
    images = images[torch.from_numpy(held_out_split(len(data)).train)]
    device = select_device(settings.device)
    from genstudio.core.families import ImageSpec

    family, accel, generator = _bare_family(settings, ImageSpec(data.channels, data.size), device)
    images = images.to(device)
    n, b = len(images), settings.batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = None
    for step in range(settings.steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        # A seeded random batch each step, as the trainer's permutation gives: same sizes, same work.
        idx = torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(step)).to(device)
        bare_train_step(family, accel, images[idx], None, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return (settings.steps - warmup) * b / elapsed, memory


class StepPairing(StepObserver):
    """The observer of a trainer (its `observer`) that trains one bare step beside each of its
    steps, each timed on its own; pairs() gives (trainer iteration s, bare step s, the trainer's
    own step s) per step.

    Beside each trainer step one bare step trains the same model instance: it gathers the same
    batch from the same uint8 images, as bare_loop does, and calls the family's train_step with
    the loop's interrupt hooks removed (the loop's next armed step puts them back: some
    microseconds of a step over SLOW_STEP_SECONDS). The same instance, not a twin: two identical
    models in one process ran at a steady 96-102% of each other's speed, a different figure in
    each process (EBM, four processes; where their weights and buffers happen to lie), which made
    this section read 92-98% for the same loop from run to run; on one instance the spread was
    99.7-101.1%. The model trains twice per iteration, which changes its path but not the work
    of a step.

    The bare step goes before the trainer's step on even steps and after it on odd ones: of two
    steps run back to back the second is 1-3% slower (checked both ways round on a VAE), and
    alternating shares that out. It runs where the loop does not time its step (once the loop
    has its batch, or has checked the finished step): a bare step inside the loop's timing made a
    155 ms flow step look slower than SLOW_STEP_SECONDS, so the loop armed its interrupt hooks
    for every step, which a real run does not (bare/loop 96% instead of 100%). A trainer
    iteration is the time from one of its steps' start to the next's, less the time the bare
    steps took in between (with `around_bare`, all of it: the context's own set-up included):
    the step, the batch, the guard, interrupt arming and logging, and whatever else the process
    does meanwhile (in the app: its window). Steps a few hundred milliseconds apart see the same
    machine, so the pairs' ratios are steadier than whole runs on a VM whose speed wanders by
    ±15% from minute to minute.

    around_bare: a context each bare step runs in, untimed (the app's suite holds its window
    still in it, so that the bare step runs as in a process without one)."""

    def __init__(self, trainer: Trainer,
                 around_bare: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.trainer, self.around_bare = trainer, around_bare
        self.generator = torch.Generator(device=trainer.device).manual_seed(trainer.settings.seed + 1)
        self.sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        self.starts: list[float] = []                         # when each trainer step began
        self.step_seconds: list[float] = []                   # how long it took
        self.bare_runs: list[tuple[float, float, float]] = []  # (began, seconds away from the loop, step s)

    def _bare_step(self, step: int) -> None:
        trainer, family = self.trainer, self.trainer.family
        idx = trainer.batch_indices(step).to(trainer.images.device)
        away = time.perf_counter()
        with self.around_bare():
            self.sync()
            began = time.perf_counter()
            with trainer.runtime.interrupter.step(self.generator, arm=False):  # the loop's hooks off, nothing else done
                bare_train_step(family, trainer.accel, trainer.images[idx],
                                trainer.labels[idx] if trainer.spec.num_classes else None, self.generator)
            self.sync()
            seconds = time.perf_counter() - began
        self.bare_runs.append((away, time.perf_counter() - away, seconds))

    def before_step(self, step: int) -> None:
        if step % 2 == 0:  # the loop has its batch and has not started timing the step
            self._bare_step(step)

    def step_began(self) -> None:
        self.starts.append(time.perf_counter())

    def step_ended(self) -> None:
        self.sync()
        self.step_seconds.append(time.perf_counter() - self.starts[-1])

    def after_step(self, step: int) -> None:
        if (step - 1) % 2 == 1:  # `step` counts the step just taken; the loop timed it already
            self._bare_step(step - 1)

    def pairs(self, warmup: int) -> list[tuple[float, float, float]]:
        starts, pairs = self.starts, []
        for k in range(warmup, len(starts) - 1):
            away = sum(seconds for began, seconds, _ in self.bare_runs if starts[k] <= began < starts[k + 1])
            pairs.append((starts[k + 1] - starts[k] - away, self.bare_runs[k][2], self.step_seconds[k]))
        return pairs


def paired_steps(settings: TrainSettings, warmup: int) -> list[tuple[float, float, float]]:
    """StepPairing's pairs for the trainer as the CLI runs it (Trainer.run, metrics logged every
    settings.log_every steps), in this process on its main thread."""
    settings = dataclasses.replace(settings, sample_every=0, checkpoint_every=0, eval_images=0, grid_samples=1)
    trainer = Trainer(settings, tempfile.mkdtemp(prefix="genstudio-paired-") + "/run")
    trainer.observer = pairing = StepPairing(trainer)
    for _ in trainer.run():
        if len(pairing.starts) > settings.steps - 1:
            break
    return pairing.pairs(warmup)


def _in_a_process(function: str, settings: TrainSettings, warmup: int):
    """benchmarks.speed.<function>(settings, warmup) in a fresh process, as the CLI runs. Not in
    this one: torch work on a second OS thread gives the process a second OpenMP team, and with
    more OpenMP threads than cores libgomp throttles its spin-waits, so the app's training
    thread, run after a bare loop on the main thread, went from 431 to 251 images/s (flow; 117
    with OMP_WAIT_POLICY=ACTIVE, where the idle team spins)."""
    code = (f"import json, sys; from benchmarks.speed import {function}; "
            "from genstudio.core.runs.run import TrainSettings; "
            "s = TrainSettings.from_json(json.loads(sys.argv[1])); "
            f"print(json.dumps({function}(s, int(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(settings.to_json()), str(warmup)],
                         env=_env(), capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{function} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_loop_in_a_process(settings: TrainSettings, warmup: int,
                           keep_freed_memory: bool = False) -> tuple[float, float | None]:
    ips, gpu = _in_a_process("bare_loop_keeping_freed_memory" if keep_freed_memory else "bare_loop",
                             settings, warmup)
    return ips, gpu


def cli_run(settings: TrainSettings, out: Path, data: str | None = None) -> tuple[Path, float]:
    """`genstudio train` in a fresh process; returns the run folder and its peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "genstudio", "train", "--family", settings.family,
           "--data", data or settings.data, "--size", str(settings.size), "--steps", str(settings.steps),
           "--batch", str(settings.batch), "--seed", str(settings.seed), "--device", settings.device,
           "--out", str(out), "--log-every", str(settings.log_every), "--sample-every",
           str(settings.sample_every), "--checkpoint-every", str(settings.checkpoint_every), "--quiet"]
    for key, value in settings.family_config.items():
        cmd += ["--set", f"{key}={value}"]
    code, stderr, peak = run_with_peak_rss(cmd, _env())
    if code:
        raise RuntimeError(f"genstudio train failed: {stderr[-2000:]}")
    return out, peak


class LatenessProbe:
    """A 10 ms QTimer on the GUI thread; records how late each timeout fires."""

    def __init__(self, interval_ms: int = 10):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.lateness: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.lateness.append(max(0.0, now - self._last - self.interval) * 1000)
        self._last = now

    def start(self) -> None:
        self.lateness, self._last = [], None
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.lateness


def show_dataset(window, source: str, size: int, wait: Callable[[Callable[[], bool], float], None]) -> None:
    """Pick the source and size in the window's dataset panel, as a person would, and wait
    for the load: the app trains on what its panel shows, so --data and --size go there."""
    panel = window.dataset_panel
    request = panel.request()
    if (request.source, request.size) == (source, size) and window.preview is not None:
        return
    panel.size_spin.blockSignals(True)  # one load below, not one per change
    panel.size_spin.setValue(size)
    panel.size_spin.blockSignals(False)
    index = panel.source_combo.findData(source)
    if index < 0 and not source.startswith("builtin:"):
        panel.choose_folder(source)  # adds it to the list and loads it
    elif index < 0:
        raise ValueError(f"the app does not offer {source}")
    else:
        panel.source_combo.blockSignals(True)
        panel.source_combo.setCurrentIndex(index)
        panel.source_combo.blockSignals(False)
        panel.request_load()
    wait(lambda: window.preview is not None and window.preview.request == panel.request(), 600)


HOLD_LIMIT_SECONDS = 120  # a bare step far longer than any family's at default size


def gui_thread_holder() -> Callable[[], contextlib.AbstractContextManager]:
    """A context for other threads: inside it the GUI thread sleeps on an event (the GIL
    released, no CPU used) and handles nothing; it catches up after. Made on the GUI thread."""
    from PySide6.QtCore import QObject, Signal

    class Holder(QObject):
        hold_requested = Signal()

        def __init__(self):
            super().__init__()
            self.held, self.release = threading.Event(), threading.Event()
            self.hold_requested.connect(self._hold)  # emitted on another thread: queued to this one

        def _hold(self) -> None:
            self.held.set()
            self.release.wait(HOLD_LIMIT_SECONDS)

    holder = Holder()

    @contextlib.contextmanager
    def gui_thread_held():
        holder.held.clear()
        holder.release.clear()
        holder.hold_requested.emit()
        if not holder.held.wait(HOLD_LIMIT_SECONDS):
            raise TimeoutError("the GUI thread did not come to be held")
        try:
            yield
        finally:
            holder.release.set()

    return gui_thread_held  # its closure keeps the holder alive


class App:
    """One MainWindow for the whole benchmark (offscreen), driven like a person would."""

    def __init__(self, window=None):
        """Around `window` (a test's), or a new MainWindow shown at 1280×800."""
        from PySide6.QtWidgets import QApplication

        from genstudio.app.main_window import MainWindow

        self.qt = QApplication.instance() or QApplication([])
        if window is None:
            window = MainWindow()
            window.resize(1280, 800)
            window.show()
        self.window = window
        self.wait(lambda: self.window.preview is not None, 300)
        self.probe = LatenessProbe()
        self.hold_gui_thread = gui_thread_holder()

    def wait(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not get there in time")
            self.qt.processEvents()
            time.sleep(0.002)

    def use_dataset(self, source: str, size: int) -> None:
        show_dataset(self.window, source, size, self.wait)

    def idle_lateness(self, seconds: float) -> list[float]:
        from PySide6.QtCore import QEventLoop, QTimer

        self.probe.start()
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        return self.probe.stop()

    def train(self, settings: TrainSettings, home: Path) -> tuple[Path, list[float], float]:
        """Train through the window; returns the run folder, the GUI timer lateness (ms) and the
        share of the process's CPU time that the GUI thread took (plots, status, the probe)."""
        from PySide6.QtCore import QEventLoop, QTimer

        window = self.window
        # Nothing else of the app's may still run (the gallery sampling the last run, the
        # explorer encoding it): it would share the two cores with this run and be counted
        # as the app's training overhead.
        self.wait(lambda: not window.busy(), 600)
        window.family_picker.select(settings.family)
        self.qt.processEvents()
        window.training_panel.set_values(
            steps=settings.steps, batch=settings.batch, seed=settings.seed, device=settings.device,
            sample_every=settings.sample_every, checkpoint_every=settings.checkpoint_every,
            family_config=settings.family_config)
        loop = QEventLoop()
        window.training_ended.connect(loop.quit)
        self.probe.start()
        gui_cpu, process_cpu = time.thread_time(), time.process_time()  # this is the GUI thread
        QTimer.singleShot(0, window.start_training)
        loop.exec()
        gui_share = (time.thread_time() - gui_cpu) / max(time.process_time() - process_cpu, 1e-9)
        lateness = self.probe.stop()
        window.training_ended.disconnect(loop.quit)
        run_dir = Path(window._finished_run or "")  # noqa: SLF001 - benchmark introspection
        if not (run_dir / "metrics.jsonl").is_file():
            runs = sorted((home / "data" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
            run_dir = runs[-1]
        # And whatever the finished run set off (the gallery sampling it, a PixelCNN's for a
        # minute) ends before the next mode runs: a CLI run that followed an app run shared the
        # two cores with it (CLI/bare 90-92% in five families; 95-97% for VAE, GAN and flow
        # once it waited).
        self.wait(lambda: not window.busy(), 600)
        return run_dir, lateness, gui_share

    def paired_steps(self, settings: TrainSettings, warmup: int, home: Path) -> list[tuple[float, float, float]]:
        """StepPairing's pairs for a run trained through the window (live plots on), on the
        app's own training thread. Each bare step runs with the GUI thread held asleep
        (hold_gui_thread), as in a process without a window; the trainer's steps share the two
        cores with the window as they always do, including the events it could not handle
        while held. So bare/loop is what the app costs a step, next to a bare loop."""
        pairings: list[StepPairing] = []

        def pairing(trainer: Trainer) -> StepPairing:
            pairings.append(StepPairing(trainer, self.hold_gui_thread))
            return pairings[-1]

        self.window.observe_training = pairing
        try:
            self.train(dataclasses.replace(settings, sample_every=0, checkpoint_every=0), home)
        finally:
            self.window.observe_training = None
        return pairings[0].pairs(warmup)

    def close(self) -> None:
        self.window.close()
        self.window.shutdown()


# -- sections ---------------------------------------------------------------------------------


def throughput_and_gui(args, families, home: Path, app: App | None) -> None:
    if app:
        app.use_dataset(args.data, args.size)
    source, size = args.data, args.size
    rows, gui_rows = [], []
    if app and "gui" in args.only:
        idle = app.idle_lateness(args.idle_seconds)
        gui_rows.append(["idle window", f"{_pct(idle, 50):.1f}", f"{_pct(idle, 99):.1f}", str(len(idle)), "-"])
    for family in families:
        settings = TrainSettings(family=family, data=source, size=size, batch=args.batch, steps=args.steps,
                                 seed=0, device=args.device, log_every=5, sample_every=args.sample_every,
                                 checkpoint_every=0)
        result = {"app": [], "cli": [], "bare": [], "bare+heap": []}
        rss, gpu, lateness, gui_shares = [], None, [], []
        modes = ["app", "cli", "bare", "bare+heap"] if app else ["cli", "bare", "bare+heap"]
        for rep in range(args.repeats):
            # Each round runs every mode once, in an order that rotates from round to round, so
            # a machine that slows down or speeds up over minutes does not favour one mode.
            for mode in modes[rep % len(modes):] + modes[:rep % len(modes)]:
                if mode == "app":
                    run, late, share = app.train(settings, home)
                    gui_shares.append(share)
                    result["app"].append(images_per_sec_from_metrics(run, args.batch, args.warmup,
                                                                     args.sample_every))
                    lateness += late
                elif mode == "cli":
                    run, peak = cli_run(settings, home / f"cli-{family}-{rep}")
                    result["cli"].append(images_per_sec_from_metrics(run, args.batch, args.warmup,
                                                                     args.sample_every))
                    rss.append(peak)
                else:
                    ips, gpu = bare_loop_in_a_process(settings, args.warmup, mode == "bare+heap")
                    result[mode].append(ips)
        medians = {mode: statistics.median(v) if v else float("nan") for mode, v in result.items()}
        rows.append([family, f"{medians['bare']:.0f}", f"{medians['bare+heap']:.0f}", f"{medians['cli']:.0f}",
                     _ratio(result["cli"], result["bare+heap"]), _ratio(result["cli"], result["bare"]),
                     f"{medians['app']:.0f}", _ratio(result["app"], result["bare+heap"]), f"{max(rss):.0f}",
                     "-" if gpu is None else f"{gpu:.0f}"])
        if lateness:
            gui_rows.append([f"training {family}", f"{_pct(lateness, 50):.1f}", f"{_pct(lateness, 99):.1f}",
                             str(len(lateness)), f"{statistics.median(gui_shares):.1%}"])
    if "throughput" in args.only:
        print_table(f"training images/s ({source}, {size} px, batch {args.batch}, {args.steps} steps, "
               f"warm-up {args.warmup}, median of {args.repeats} rounds; a ratio is the median of the rounds' "
               f"ratios [lowest-highest]; app and CLI without the intervals that drew a sample grid; "
               f"'bare+heap': the bare loop with the C heap set as in training (core/runtime/memory.py); targets: "
               f"CLI ≥ 98%, app ≥ 95% of bare)",
               ["family", "bare", "bare+heap", "CLI", "CLI/bare+heap", "CLI/bare", "app", "app/bare+heap",
                "CLI peak RSS MiB", "GPU MiB"], rows)
    if gui_rows:
        print_table("GUI thread: lateness of a 10 ms QTimer, ms (target p99 ≤ 50 while training); the GUI "
                    "thread's share of the process's CPU time while training (what the app's plots and "
                    "status cost the training, at most: a steady figure on a VM where images/s wander)",
               ["state", "p50", "p99", "ticks", "GUI thread CPU share"], gui_rows)


def loop_overhead(args, families, home: Path, app: App | None) -> None:
    """The CLI's loop (in a fresh process) and the app's (its training thread, window live)
    against the bare step, paired step by step (StepPairing)."""
    rows = []
    rng = np.random.default_rng(0)

    def median_and_interval(ratios: np.ndarray) -> list[str]:
        # 95% interval of the median by resampling the pairs: how far the noise leaves it open.
        medians = np.median(rng.choice(ratios, (2000, len(ratios))), axis=1)
        low, high = np.percentile(medians, [2.5, 97.5])
        return [f"{np.median(ratios):.1%}", f"{low:.1%}-{high:.1%}"]

    if app:
        app.use_dataset(args.data, args.size)
    for family in families:
        settings = TrainSettings(family=family, data=args.data, size=args.size, batch=args.batch,
                                 steps=args.warmup + args.paired_steps + 2, seed=0, device=args.device)
        runs = [("CLI", _in_a_process("paired_steps", settings, args.warmup))]
        if app:
            runs.append(("app", app.paired_steps(settings, args.warmup, home)))
        for loop, pairs in runs:
            iteration, bare, step = np.asarray(pairs).T
            rows.append([family, loop, f"{np.median(bare) * 1000:.1f}", f"{np.median(iteration) * 1000:.1f}",
                         f"{np.median(iteration - step) * 1000:.2f}", *median_and_interval(bare / iteration),
                         *median_and_interval(bare / step), str(len(bare))])
    print_table(f"the training loop as the CLI runs it and as the app runs it (window live; the bare steps run "
                f"with its GUI thread held asleep), against the bare loop's step (batch gathered from the same "
                f"uint8 images), alternating step by step in one process ({args.data}, {args.size} px, batch "
                f"{args.batch}, after {args.warmup} steps; targets: CLI ≥ 98%, app ≥ 95%). 'outside the step': "
                f"the loop's own time per step (batch, guard, logging, and in the app what the window took "
                f"between steps); 'bare/step': the family's step alone, in the loop and bare (interrupt arming, "
                f"in the app the window's share of the cores during the step, and noise)",
                ["family", "loop", "bare ms", "loop ms", "outside the step ms", "bare/loop", "95% interval",
                 "bare/step", "95% interval", "pairs"], rows)


def playground_responsiveness(args, app: App) -> None:
    """Every 2-D family training at once in the Playground tab: the GUI timer's lateness, and
    each panel's redraws per second (a redraw: a new FamilyView reached the panel)."""
    from collections import Counter

    from PySide6.QtCore import QEventLoop, QTimer

    window = app.window
    app.wait(lambda: not window.busy(), 600)
    panel = window.open_playground()
    app.wait(lambda: panel.views.keys() == set(panel.ticked()), 600)   # every family's first view
    seen, redraws = dict(panel.views), Counter()

    def count() -> None:
        for name, view in panel.views.items():
            if seen.get(name) is not view:
                seen[name] = view
                redraws[name] += 1

    poll = QTimer(interval=5)
    poll.timeout.connect(count)
    steps_before = {name: view.steps for name, view in panel.views.items()}
    poll.start()
    app.probe.start()
    loop = QEventLoop()
    QTimer.singleShot(int(args.playground_seconds * 1000), loop.quit)
    loop.exec()
    lateness = app.probe.stop()
    poll.stop()
    rows = [[name, f"{redraws[name] / args.playground_seconds:.1f}",
             f"{(view.steps - steps_before[name]) / args.playground_seconds:.0f}"]
            for name, view in panel.views.items()]
    print_table(f"Playground, {len(rows)} families training at once for {args.playground_seconds:g} s: "
                f"GUI timer lateness p50 {_pct(lateness, 50):.1f} ms, p99 {_pct(lateness, 99):.1f} ms "
                f"({len(lateness)} ticks; target p99 ≤ 50); redraws per second per panel (target ≥ 10)",
                ["family", "redraws/s", "steps/s"], rows)
    panel.stop(wait_ms=60_000)
    window.tabs.setCurrentIndex(0)


def control_latency(args, families, home: Path) -> None:
    """Pause and Stop asked at random moments inside steps, as a person's clicks land: the time
    until the loop acknowledges (PauseChanged; Stopping, after which the final grid, checkpoint
    and evaluation follow), with the loop in a thread as in the app."""
    import random

    rng = random.Random(0)
    rows = []
    for family in families:
        settings = TrainSettings(family=family, data=args.data, size=args.size, batch=args.batch,
                                 steps=10**6, seed=0, device=args.device, log_every=1, sample_every=0,
                                 checkpoint_every=0, grid_samples=16, eval_images=0)
        trainer = Trainer(settings, str(home / f"control-{family}"))
        control = TrainingControl()
        marks: dict[str, float] = {}
        paused: list[float] = []
        step_times: list[float] = []
        steps_seen = threading.Event()

        def consume(trainer=trainer, control=control, steps_seen=steps_seen, marks=marks, paused=paused,
                    step_times=step_times):
            for event in trainer.run(control):
                now = time.perf_counter()
                if isinstance(event, StepLogged):
                    step_times.append(now)
                    if event.step >= args.control_after:
                        steps_seen.set()
                elif isinstance(event, PauseChanged) and event.paused:
                    paused.append(now)
                elif isinstance(event, Stopping):
                    marks["stopping"] = now
            marks["finished"] = time.perf_counter()

        thread = threading.Thread(target=consume)
        thread.start()
        steps_seen.wait()
        step = statistics.median(b - a for a, b in zip(step_times, step_times[1:], strict=False))
        pause_ms = []
        for _ in range(args.pauses):
            time.sleep(rng.uniform(0.05, 1.05) * step)  # somewhere inside a step
            seen = len(paused)
            asked = time.perf_counter()
            control.pause()
            while len(paused) == seen:
                time.sleep(0.0005)
            pause_ms.append((paused[-1] - asked) * 1000)
            control.resume()
        time.sleep(rng.uniform(0.05, 1.05) * step)
        stop_asked = time.perf_counter()
        control.stop()
        thread.join()
        rows.append([family, f"{step * 1000:.0f}", f"{statistics.median(pause_ms):.0f}", f"{max(pause_ms):.0f}",
                     f"{(marks['stopping'] - stop_asked) * 1000:.0f}",
                     f"{(marks['finished'] - stop_asked) * 1000:.0f}"])
    print_table(f"pause / stop latency, ms (batch {args.batch}; {args.pauses} pauses at random moments in a step, "
           f"then a stop; target ≤ 250)",
           ["family", "step", "pause p50", "pause max", "stop → stopping", "stop → saved and finished"], rows)


def sampling(args, families) -> None:
    from genstudio.core.families import ImageSpec
    from genstudio.core.runtime.memory import keep_freed_memory

    rows = []
    spec = ImageSpec(3 if args.channels == 3 else 1, args.size)
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    for family in families:
        cls = family_class(family)
        model = create_family(family, spec, suggested_knobs(family, spec, device, {}), device, 0)
        model.eval_mode()
        options: list[tuple[str, dict]] = [("default", {})]
        if family == "diffusion":
            options = [(f"DDIM {k}", {"sampler": "ddim", "steps": k}) for k in args.ddim_steps]
            if not args.quick:  # the full chain (every training timestep) is minutes on a CPU
                options.append(("DDPM", {"sampler": "ddpm"}))
        for label, values in options:
            opts = model.sample_options(values) if values else None
            n = args.sample_n if family not in ("pixelcnn", "ebm") and label != "DDPM" else max(1, args.sample_n // 8)
            with keep_freed_memory():  # as the CLI's commands and the app's jobs sample
                model.sample(1, seed=0, options=opts)  # warm-up
                started = time.perf_counter()
                model.sample(n, seed=1, options=opts)
                elapsed = time.perf_counter() - started
            decode = "-"
            if cls.capabilities and Capability.DECODE in cls.capabilities and label in ("default", f"DDIM {args.ddim_steps[0]}"):
                z = torch.randn(1, model.latent_dim)
                model.decode(z)
                t0 = time.perf_counter()
                for _ in range(3):
                    model.decode(z)
                decode = f"{(time.perf_counter() - t0) / 3 * 1000:.1f}"
            rows.append([family, label, str(n), f"{n / elapsed:.1f}", decode])
    print_table(f"sampling at {args.size} px on {device.type} (default model sizes, untrained weights; the C heap "
                f"kept as the CLI and the app keep it while they sample, core/runtime/memory.py)",
           ["family", "sampler", "n", "images/s", "decode 1 ms"], rows)


def data_throughput(args, home: Path) -> None:
    from PIL import Image

    from genstudio.core.data import load_source

    folder = home / "pngs"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(args.data_images):
        sub = folder / f"class{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(sub / f"{i:06d}.png")
    written = time.perf_counter() - t0
    cache = home / "data-cache"
    t0 = time.perf_counter()
    data = load_source(str(folder), 28, None, cache_dir=cache)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_source(str(folder), 28, None, cache_dir=cache)
    warm = time.perf_counter() - t0
    settings = TrainSettings(family="vae", data=str(folder), size=28, batch=args.batch, steps=args.rss_steps,
                             device=args.device, log_every=5, sample_every=0, checkpoint_every=0)
    _, rss = cli_run(settings, home / "rss-run")
    rows = [[f"{len(data)} PNGs of 28 px ({args.data_images} written in {written:.1f} s)",
             f"{len(data) / cold:.0f}", f"{cold:.2f}", f"{warm:.3f}", f"{rss:.0f}"]]
    print_table("data: scan + decode + cache (cold), cached load (warm), peak RSS of a short VAE training",
           ["folder", "images/s cold", "cold s", "warm s", "train peak RSS MiB"], rows)


_STARTUP_CODE = """
import gc, os, time
t0 = time.perf_counter()
os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')
from genstudio.app import prepare_process
prepare_process()
from PySide6.QtWidgets import QApplication
from genstudio.app.main_window import MainWindow
app = QApplication([])
w = MainWindow()
w.show()
app.processEvents()
shown = time.perf_counter()
dataset = model = None
opens_a_model = w.run_jobs.is_busy()  # False where no pretrained default ships
longest, last = 0.0, time.perf_counter()
while (dataset is None or (opens_a_model and model is None)) and time.perf_counter() - shown < 300:
    app.processEvents()
    time.sleep(0.002)
    now = time.perf_counter()
    longest, last = max(longest, now - last), now
    if dataset is None and w.preview is not None:
        dataset = now
    if model is None and w.loaded is not None:
        model = now
t = time.perf_counter()
gc.collect()
full_pass = time.perf_counter() - t
since_start = [float("nan") if t is None else t - t0 for t in (shown, dataset, model)]
print(*since_start, longest, full_pass)
w.close()
w.shutdown()
"""


def startup(args) -> None:
    rows = []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _STARTUP_CODE], env=_env(), capture_output=True, text=True,
                             check=True)
        total = time.perf_counter() - t0
        shown, dataset, model, longest, full_pass = (float(v) for v in out.stdout.split()[-5:])
        rows.append([f"run {rep + 1}", f"{total:.2f}", f"{shown:.2f}", f"{dataset:.2f}", f"{model:.2f}",
                     f"{longest * 1000:.0f}", f"{full_pass * 1000:.0f}"])
    print_table("cold start (a fresh process each, offscreen; times from the first line of its script)",
                ["", "whole process s", "window shown s", "default dataset loaded s",
                 "default model opened s", "longest GUI gap until then ms", "full gc pass then ms"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves the suite runs")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated of {', '.join(SECTIONS)}")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sample-every", type=int, default=100, help="sample grids during app/CLI runs")
    parser.add_argument("--paired-steps", type=int, default=40, help="step pairs per family (paired)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--control-after", type=int, default=3, help="steps before pause/stop are asked")
    parser.add_argument("--pauses", type=int, default=8, help="pause requests per family")
    parser.add_argument("--sample-n", type=int, default=64)
    parser.add_argument("--ddim-steps", default="10,50")
    parser.add_argument("--data-images", type=int, default=10_000)
    parser.add_argument("--rss-steps", type=int, default=50)
    parser.add_argument("--playground-seconds", type=float, default=20.0, help="seconds measured (playground)")
    args = parser.parse_args()
    # As genstudio.app.main does, before any thread starts: the window's training and the control
    # section's loop run on threads, which with arenas of their own had their freed activations
    # unmapped and faulted in again (16 Pauses of a PixelCNN at random moments: up to 290 ms, and at
    # most 14 ms with one heap; after other families' runs in the process, 1 in 20 still takes
    # 150-200 ms, unexplained); and the imported objects kept out of the garbage collector's full
    # passes (160 ms each).
    try:
        from genstudio.app import prepare_process

        prepare_process()
    except ImportError:  # no Qt here (a GPU machine with torch only): the same, less the window's modules
        from genstudio.core.runtime.memory import freeze_imported_objects, one_heap_for_all_threads

        one_heap_for_all_threads()
        freeze_imported_objects()
    if args.quick:
        args.steps, args.warmup, args.repeats, args.batch = 25, 5, 1, 16
        args.sample_every, args.idle_seconds, args.sample_n, args.rss_steps = 20, 1.0, 8, 10
        args.paired_steps, args.playground_seconds = 6, 3.0
    args.only = set(args.only.split(","))
    args.ddim_steps = [int(k) for k in str(args.ddim_steps).split(",")]
    families = [f.strip() for f in args.families.split(",") if f.strip()]

    home = Path(tempfile.mkdtemp(prefix="genstudio-speed-"))
    os.environ["GENSTUDIO_HOME"] = str(home / "data")
    os.environ.setdefault("GENSTUDIO_CACHE_DIR", str(home / "cache"))
    print(f"# genstudio speed suite: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}", flush=True)
    if "startup" in args.only:
        startup(args)
    app = None
    if args.only & {"throughput", "gui", "paired", "playground"}:
        try:
            import PySide6  # noqa: F401
        except ImportError:  # e.g. a GPU machine with torch but no Qt: CLI and bare loop only
            print("PySide6 is not installed: no app column and no GUI section", flush=True)
            args.only -= {"gui", "playground"}
        else:
            app = App()
    try:
        if args.only & {"throughput", "gui"}:
            throughput_and_gui(args, families, home, app)
        if "paired" in args.only:
            loop_overhead(args, families, home, app)
        if "playground" in args.only:
            playground_responsiveness(args, app)
    finally:
        if app:
            app.close()
    if "control" in args.only:
        control_latency(args, families, home)
    if "sampling" in args.only:
        sampling(args, families)
    if "data" in args.only:
        data_throughput(args, home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
