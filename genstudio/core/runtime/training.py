"""The training loop, free of Qt: a generator of events that checks a stop flag every step.

    trainer = Trainer(settings, run_dir)            # loads data, builds or restores the model
    for event in trainer.run(control):              # StepLogged, SamplesReady, CheckpointSaved…
        ...

The app runs this in a worker thread and relays events as signals; the CLI prints them.
Everything random in training flows from `settings.seed`: the initial weights, the data order
(a permutation per epoch derived from seed and epoch, so it needs no saved state) and the
training noise (one torch.Generator whose state is checkpointed). So a run resumed from a
checkpoint continues exactly as if it had never stopped.

What runs around a family's own step (interrupt check, fp16 scaling, gradient all-reduce,
non-finite guard) is one StepRuntime the trainer builds and hands the family
(core/runtime/step_runtime.py lists the order).

Pause and Stop answer within a fraction of a step: a slow step is abandoned part-way and its
changes undone (StepInterrupter, core/runtime/step_runtime.py), so a paused step is taken again,
bit for bit, after Resume.

Faults: a NaN/inf loss skips its update and repeated ones roll back (DivergenceGuard, the same
module); running out of GPU memory saves what there is and ends with a clear error; a damaged newest
checkpoint is replaced on resume by the previous one. Each is reported as a Notice or an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import threading
import time
import typing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import BUILTIN_PREFIX, ImageDataset, held_out_split, load_source
from ..families import (
    MAX_SEED,
    Capability,
    ImageSpec,
    SamplingCancelled,
    config_from_dict,
    create_family,
    family_class,
    suggested_knobs,
)
from ..metrics.evaluate import EvalSettings, EvaluationCancelled, run_evaluation
from ..metrics.features import get_extractor
from ..runs.atomic import write_text_atomic
from ..runs.checkpoint import CheckpointError, load_latest, move_state, save_checkpoint
from ..runs.images import make_grid, save_png, to_uint8
from ..runs.run import RunDir, RunError, RunLock, TrainSettings, check_run_meta
from .accel import PRECISION_CHOICES, Acceleration, free_device_memory, is_out_of_memory, plan_for
from .device import select_device
from .distributed import Distributed, has_batchnorm
from .memory import keep_freed_memory
from .step_runtime import (
    CHECK_SPACING_SECONDS,
    SLOW_STEP_SECONDS,
    DivergenceGuard,
    StepInterrupted,
    StepInterrupter,
)

# -- control (shared between the loop's thread and whoever drives it) -----------------------


# (what, done, total) of the end-of-run work, e.g. ("drawing the final samples", 12, 50).
ProgressFn = Callable[[str, int, int], None]
FINAL_SAMPLES = "drawing the final samples"


class TrainingControl:
    """Thread-safe requests to a running loop: stop, pause/resume, sample now, save now; and
    from the loop, `on_progress` (called on the loop's thread) for the end-of-run work, which
    can take minutes with no step to show."""

    interactive = True  # pause, sample now and save now are honoured (not for a launched run)

    def __init__(self, on_progress: ProgressFn | None = None) -> None:
        self.on_progress = on_progress
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._sample_now = threading.Event()
        self._save_now = threading.Event()
        self._hurry = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused loop must wake up to see the stop

    def hurry(self) -> None:
        """Stop, and after the checkpoint skip the final sample grid and evaluation (closing
        the app, a second Ctrl+C): a PixelCNN's grid alone takes seconds on a CPU."""
        self._hurry.set()
        self.stop()

    @property
    def hurried(self) -> bool:
        return self._hurry.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def request_samples(self) -> None:
        self._sample_now.set()

    def request_save(self) -> None:
        self._save_now.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self) -> None:
        while not self._running.wait(timeout=0.1):
            pass

    def take_sample_request(self) -> bool:
        return _take(self._sample_now)

    def report_progress(self, what: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(what, done, total)

    def take_save_request(self) -> bool:
        return _take(self._save_now)


def _take(flag: threading.Event) -> bool:
    if flag.is_set():
        flag.clear()
        return True
    return False


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    start_step: int
    total_steps: int
    dataset: str           # one-line description
    skipped_report: str    # "" when nothing was skipped
    device: str
    num_parameters: int
    minutes: float = 0.0   # the session's time limit (0: none)


@dataclass(frozen=True)
class StepLogged:
    step: int
    total_steps: int
    metrics: dict[str, float]
    images_per_sec: float
    eta_seconds: float | None      # to the end of the run: its steps or its time limit, whichever comes first
    elapsed_seconds: float
    done: float = 0.0              # share of the run done, 0..1: of its steps, or of its time limit if further


@dataclass(frozen=True)
class SamplesReady:
    step: int
    grid: np.ndarray       # (H, W, C) uint8
    path: str


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str


@dataclass(frozen=True)
class Evaluated:
    step: int
    figures: dict[str, Any]    # as genstudio.core.metrics.evaluate.evaluate_family returns them


@dataclass(frozen=True)
class PauseChanged:
    step: int
    paused: bool


@dataclass(frozen=True)
class Notice:
    step: int
    message: str           # a sentence for the user: something went wrong and was handled


@dataclass(frozen=True)
class BatchLowered:
    """The device ran out of memory: training continues from `step` with a smaller batch."""
    step: int
    old_batch: int
    new_batch: int
    message: str


@dataclass(frozen=True)
class Stopping:
    """Training left its loop on a stop request or at its time limit; `step` is the last whole
    step (a step that was under way is abandoned and undone). The final samples, checkpoint and
    evaluation follow."""
    step: int
    why: str = "stopped"  # or e.g. "the 10-minute time limit is reached"


@dataclass(frozen=True)
class TrainingFinished:
    step: int
    reason: str            # "completed", "stopped" or TIME_LIMIT_REACHED
    run_dir: str


# Every event a run yields, listed once: the launcher decodes them by class name
# (core/runtime/launch.py), the app's worker relays each as its signal of the same name in snake_case.
TRAIN_EVENTS = (RunStarted, StepLogged, SamplesReady, CheckpointSaved, Evaluated, PauseChanged,
                Notice, BatchLowered, Stopping, TrainingFinished)
TrainEvent = typing.Union[TRAIN_EVENTS]  # noqa: UP007 - built from the tuple, not written twice


# -- the trainer ------------------------------------------------------------------------------


class StepObserver:
    """Told of each step at fixed points of the training loop; the default does nothing.

    For instruments that time the loop (benchmarks/speed.py pairs each step with a bare one):
    they see the loop through these calls instead of replacing its methods."""

    def before_step(self, step: int) -> None:
        """The batch for step `step` (0-based) is taken; the step has not begun."""

    def step_began(self) -> None:
        """The family's train_step is about to run (under the run's autocast)."""

    def step_ended(self) -> None:
        """The family's train_step has returned."""

    def after_step(self, step: int) -> None:
        """The step is counted (`step` steps taken) and checked by the guard."""


# What a resumed run takes from the settings it is given: how long and where it trains, and
# how often it records. The rest (the model, its data, batch, seed, the evaluation's sizes, so
# that the curves stay comparable) is the run's own, from its config.json.
RESUME_MAY_CHANGE = ("steps", "minutes", "device", "precision", "compile", "log_every", "sample_every",
                     "sample_seconds", "checkpoint_every", "eval_every", "eval_metrics")
TIME_LIMIT_REACHED = "time limit reached"  # TrainingFinished.reason of a run its time limit ended


class Trainer:
    """Prepares a run (data, model, optional resume) and runs its loop as a generator.

    Construction loads data and builds the model, which can take a while: call it off the GUI
    thread. `progress(done, total)` reports data decoding. `distributed` (from
    Distributed.from_env under torchrun) makes this one process of a data-parallel run:
    it trains on its slice of each global batch and writes nothing unless it is rank 0."""

    def __init__(self, settings: TrainSettings, run_dir: str, *, resume: bool = False,
                 dataset: ImageDataset | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 distributed: Distributed | None = None):
        self.run_dir = RunDir(run_dir)
        self.dist = distributed
        self.is_main = distributed is None or distributed.is_main
        self._lock: RunLock | None = None  # held by the writing process until run() ends
        try:
            self._prepare(settings, resume, dataset, progress, distributed)
        except BaseException:
            self.release()
            raise

    def _prepare(self, settings: TrainSettings, resume: bool, dataset: ImageDataset | None,
                 progress: Callable[[int, int], None] | None, distributed: Distributed | None) -> None:
        if resume:
            if self.run_dir.path.is_dir() and not os.access(self.run_dir.path, os.W_OK):
                raise RunError(f"{self.run_dir.path} is read-only, and a resumed run writes its checkpoints there")
            self._lock_for("resuming")
            stored = _stored_settings(self.run_dir)
            settings = dataclasses.replace(stored, **{name: getattr(settings, name) for name in RESUME_MAY_CHANGE})
            _refuse_run_inside_data(self.run_dir, settings.data)
        else:
            family_class(settings.family)  # unknown/unbuilt family: fail before touching disk
            _refuse_run_inside_data(self.run_dir, settings.data)
            self.run_dir.check_creatable()
            if self.run_dir.path.is_dir():  # an empty folder or a run that died: another may be making it
                self._lock_for("training")
        _validate(settings, distributed)
        if distributed is not None and not self.is_main:
            distributed.barrier()  # rank 0 decodes (and caches) the data first
        self.dataset = dataset or load_source(settings.data, settings.size, settings.channels,
                                              progress=progress)
        if distributed is not None and self.is_main:
            distributed.barrier()
        if len(self.dataset) < 1:
            raise RunError("the dataset is empty")
        if resume:
            _refuse_changed_data(self.run_dir, self.dataset)
        self.split = held_out_split(len(self.dataset))
        self.device = select_device(settings.device)
        if distributed is not None:
            self.device = distributed.train_device(self.device)
        self.spec = self._image_spec(settings)
        self.settings = settings
        # A new run starts from the knob values suggested for its image size and device, where
        # the person set none; `suggested` keeps them to be told. A resumed run keeps its own.
        self.suggested: dict[str, Any] = {}
        if resume:
            knobs = self.run_dir.read_model_config(settings)
        else:
            self.suggested = suggested_knobs(settings.family, self.spec, self.device, settings.family_config)
            knobs = {**self.suggested, **settings.family_config}
        self.family = create_family(settings.family, self.spec, knobs,
                                    self.device, settings.seed)
        if distributed is not None:
            distributed.attach(self.family)
        self.generator = torch.Generator(device=self.device).manual_seed(settings.seed + 1)
        self.step = 0
        self._extractor = None  # feature extractor for evaluations, built on first use
        self._notices: list[str] = []  # reported as Notice events once the run starts
        self._saved_step: int | None = None  # step of the newest checkpoint written or loaded
        self._clock = _TrainingClock(0)  # run() starts the session's own
        self._permutation: tuple[int, torch.Tensor] | None = None  # (epoch, its order of the images)
        if resume:
            self._restore()
            if settings.steps <= self.step:
                raise RunError(f"{self.run_dir.path} is at step {self.step} of {stored.steps}; to train it "
                               f"further give a total above {self.step} steps (--steps), not {settings.steps}")
            if self.is_main:  # only now: a refused resume leaves the run as it was
                self.run_dir.truncate_metrics_after(self.step)
                self._write_config()  # the folder says what the run trains with now
        elif self.is_main:
            self._lock_for("training")
            self.run_dir.create()  # only now: bad data or options leave nothing behind
            self._write_config()
        # (N, C, H, W) uint8 on the CPU; batches are converted on the fly. Training sees only
        # the train split; the held-out images are kept for likelihood figures.
        all_images = torch.from_numpy(np.ascontiguousarray(self.dataset.images)).permute(0, 3, 1, 2)
        all_labels = torch.from_numpy(self.dataset.labels.astype(np.int64))
        train, test = (torch.from_numpy(i) for i in (self.split.train, self.split.test))
        self.images, self.labels = all_images[train], all_labels[train]
        self.test_images, self.test_labels = all_images[test], all_labels[test]
        # The GPU fast path (mixed precision, channels_last, data on the device, compile): all
        # off on the CPU, where the family is called exactly as without it.
        self.accel = Acceleration(plan_for(self.device, self.family, settings.precision, settings.compile),
                                  self.family)
        self.images, self.labels, self.placement = self.accel.place_dataset(self.images, self.labels)
        # After the acceleration, which may switch the optimizers to fused Adam: the guard's
        # first snapshot then holds the optimizers as they will train.
        self.guard = DivergenceGuard(self.family)
        self.guard.remember(self.step)
        # What the family's backward and optimizer_step run, in order (core/runtime/step_runtime.py);
        # run() adds the interrupter while its loop runs.
        self.runtime = self.accel.step_runtime(reduce=distributed.reduce_gradients if distributed else None,
                                               guard=self.guard)
        self.family.step_runtime = self.runtime
        self.observer = StepObserver()
        self._sync_batchnorm = distributed is not None and has_batchnorm(self.family)
        if distributed is not None:
            distributed.broadcast_state(self.family)
            distributed.barrier()  # rank 0 has created the run directory

    def _lock_for(self, purpose: str) -> None:
        """Take the run's lock (RunLock) in the process that writes it, once."""
        if self.is_main and self._lock is None:
            self._lock = self.run_dir.lock(purpose)

    def release(self) -> None:
        """Let other processes write the run (run() does this when it ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _image_spec(self, settings: TrainSettings) -> ImageSpec:
        conditional = settings.conditional and self.dataset.num_classes > 1
        if conditional and Capability.CONDITIONAL not in family_class(settings.family).capabilities:
            raise RunError(f"the {settings.family} family cannot be class-conditional")
        return ImageSpec(self.dataset.channels, self.dataset.size,
                         self.dataset.num_classes if conditional else 0)

    # -- persistence --------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.run_dir.write_config({
            "family": self.settings.family,
            "settings": self.settings.to_json(),
            "family_config": dataclasses.asdict(self.family.config),
            "spec": dataclasses.asdict(self.spec),
            "dataset": {
                "source": self.dataset.source,
                "images": len(self.dataset),
                "class_names": self.dataset.class_names,
                "skipped": len(self.dataset.skipped),
                "train_images": len(self.split.train),
                "held_out_images": len(self.split.test),
                "fingerprint": self.dataset.fingerprint(),
            },
            "genstudio_version": _version(),
        })

    def _meta(self) -> dict[str, Any]:
        return {
            "family": self.settings.family,
            "step": self.step,
            "spec": dataclasses.asdict(self.spec),
            "family_config": dataclasses.asdict(self.family.config),
            "class_names": self.dataset.class_names if self.spec.num_classes else [],
            "seed": self.settings.seed,
            "dataset": self.dataset.source,
            "genstudio_version": _version(),
        }

    def save(self) -> CheckpointSaved:
        state = {
            "family": self.family.state_dict(),
            "rng": {"train": self.generator.get_state(), "torch": torch.get_rng_state()},
            "lr_scale": self.family.lr_scale,  # lowered by a rollback; must survive a resume
        }
        meta = self._meta()
        # Saving the same step twice (a due checkpoint, then the final save) must not make
        # the previous checkpoint a copy of this one: it is the fallback if this one is lost.
        save_checkpoint(self.run_dir.checkpoint_path, state, meta,
                        keep_previous=self._saved_step != self.step)
        self._saved_step = self.step
        write_text_atomic(self.run_dir.checkpoint_info_path, json.dumps(meta, indent=2) + "\n")
        self.guard.remember(self.step)
        return CheckpointSaved(self.step, str(self.run_dir.checkpoint_path))

    def _restore(self) -> None:
        if self.is_main:  # only the writer: another rank would delete rank 0's temp mid-write
            self.run_dir.remove_stale_temps()  # left by a process killed while writing

        def restore(state: Any, meta: dict[str, Any]) -> None:
            check_run_meta(meta)
            if meta["family"] != self.settings.family:
                raise CheckpointError(f"it is a {meta['family']} model, config.json says "
                                      f"{self.settings.family}")
            if ImageSpec(**meta["spec"]) != self.spec:
                raise CheckpointError(f"it was trained for {_describe_spec(meta['spec'])}, "
                                      f"config.json and the data say {_describe_spec(dataclasses.asdict(self.spec))}")
            if meta.get("weights_only"):
                return  # refused below, whichever checkpoint it is
            self.family.load_state_dict(move_state(state["family"], self.device))
            self.family.lr_scale = float(state.get("lr_scale", 1.0))
            self.generator.set_state(state["rng"]["train"])
            torch.set_rng_state(state["rng"]["torch"])

        try:
            _, meta, notice = load_latest(self.run_dir.checkpoint_path, device="cpu", apply=restore)
        except CheckpointError as exc:
            raise RunError(f"cannot resume {self.run_dir.path}: {exc}") from None
        if meta.get("weights_only"):
            raise RunError("this run ships weights only (a pretrained model, without its optimizer "
                           "state), so it cannot be resumed; train a new run instead")
        if notice:
            self._notices.append(notice)
        self.step = meta["step"]
        self._saved_step = self.step

    # -- data order -----------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the batch at `step`: epoch-wise permutations derived from the seed."""
        n, b = len(self.images), self.settings.batch
        per_epoch = max(1, n // b) if n >= b else 1
        epoch, offset = divmod(step, per_epoch)
        perm = self._epoch_permutation(epoch)
        if n < b:  # tiny datasets: sample with repetition from the permutation
            return perm[torch.arange(b, device=perm.device) % n]
        return perm[offset * b:(offset + 1) * b]

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        # Drawn once per epoch, not per step: a permutation of 60,000 images takes 0.9 ms, 1% of
        # a CPU step and more on a GPU, where a small model's step is a few milliseconds.
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.images), generator=generator)
            self._permutation = (epoch, perm.to(self.images.device))  # no copy per step on a GPU
        return self._permutation[1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.batch_indices(step)
        if self.dist is not None:
            idx = self.dist.rows(idx)  # this process's disjoint slice of the global batch
        x = self.accel.batch_layout(self.accel.gather(self.images, idx, self.device).float().div_(255.0))
        labels = self.accel.gather(self.labels, idx, self.device) if self.spec.num_classes else None
        return x, labels

    def _train_step(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        with self.runtime.autocast():
            self.observer.step_began()
            metrics = self.family.train_step(x, labels, self.generator)
            self.observer.step_ended()
        if self._sync_batchnorm:
            self.dist.sync_batchnorm_statistics(self.family)  # type: ignore[union-attr]
        return metrics

    def _stop_requested(self, control: TrainingControl) -> bool:
        # Under torchrun every process must stop after the same step (rank 0's clock decides).
        flag = control.stop_requested or (self._clock.up() and self.is_main)
        return self.dist.any(flag) if self.dist is not None else flag

    def _lower_batch(self, exc: BaseException) -> BatchLowered:
        """After a device out-of-memory error: halve the batch, free memory, carry on."""
        old = self.settings.batch
        for optimizer in self.family.optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        free_device_memory(self.device)
        kind = self.device.type.upper()
        if self.dist is not None:  # the processes cannot agree on a new batch mid-step
            raise RunError(f"out of {kind} memory in one process of a multi-process run (global batch "
                           f"{old}); restart with a smaller --batch") from exc
        if old <= 1:  # nothing left to lower: keep the work done and say what to change
            raise self._out_of_memory() from exc
        new = old // 2
        self.settings = dataclasses.replace(self.settings, batch=new)
        if self.is_main:
            self._write_config()  # a resumed run continues with the batch that fits
        message = (f"out of {self.device.type.upper()} memory at batch {old}: "
                   f"continuing from step {self.step} with batch {new}")
        return BatchLowered(self.step, old, new, message)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, control: TrainingControl | None = None) -> Iterator[TrainEvent]:
        control = control or TrainingControl()
        s = self.settings
        yield RunStarted(str(self.run_dir.path), self.step, s.steps, self.dataset.describe(),
                         self.dataset.skipped_summary(), str(self.device), self.family.num_parameters(),
                         s.minutes)
        for message in self._notices:
            yield Notice(self.step, message)
        self._notices.clear()
        speed = _Throughput(s.batch)
        started = time.perf_counter()
        self._clock = _TrainingClock(s.minutes)
        self._grid_due_at = s.sample_seconds  # training seconds at which a grid is due by time
        self.family.train_mode()
        # Pause, Stop and the time limit abandon a slow step part-way (its changes undone)
        # instead of waiting for its end; not under torchrun, where every process must take the
        # same steps.
        if self.dist is None:
            self.runtime.interrupter = StepInterrupter(
                self.family, lambda: control.paused or control.stop_requested or self._clock.up(),
                CHECK_SPACING_SECONDS)
        try:
            # Freed activations stay in the process for the next step (no page faults), and go
            # back to the system when the run ends (core/runtime/memory.py).
            with keep_freed_memory():
                yield from self._loop(control, speed, started)
        finally:
            if self.runtime.interrupter is not None:
                self.runtime.interrupter.close()
                self.runtime.interrupter = None
            self.release()

    def _loop(self, control: TrainingControl, speed: _Throughput, started: float) -> Iterator[TrainEvent]:
        s = self.settings
        interrupter = self.runtime.interrupter
        step_seconds = None  # the last whole step's duration; None: no step yet
        while self.step < s.steps and not self._stop_requested(control):
            if control.paused and self.dist is None:  # no pausing one process of several
                yield from self._pause(control, speed)
                if control.stop_requested:
                    break
            x, labels = self.batch(self.step)
            self.observer.before_step(self.step)
            step_started = time.perf_counter()
            try:
                if interrupter is None:
                    metrics = self._train_step(x, labels)
                else:
                    slow = step_seconds is None or step_seconds > SLOW_STEP_SECONDS
                    with interrupter.step(self.generator, arm=slow):
                        metrics = self._train_step(x, labels)
            except StepInterrupted:
                self.guard.forget_step()
                continue  # the loop's top pauses (then takes this step again) or stops
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                yield self._lower_batch(exc)
                s = self.settings
                speed.batch = s.batch
                continue
            step_seconds = time.perf_counter() - step_started
            self.step += 1
            speed.tick()
            trouble = self.guard.after_step(self.step, metrics)
            self.observer.after_step(self.step)
            if trouble is not None:
                yield Notice(self.step, trouble)
            if self.step % s.log_every == 0 or self.step == s.steps:
                if self.dist is not None:
                    metrics = self.dist.mean_metrics(metrics)  # the global batch's figures
                yield self._log(metrics, speed, time.perf_counter() - started)
            if not self.is_main:
                continue  # only rank 0 samples, saves and evaluates
            grid_by_time = (s.sample_seconds > 0 and self._clock.spent() >= self._grid_due_at
                            and self.step < s.steps)  # the last step gets the final grid anyway
            if _due(self.step, s.sample_every) or control.take_sample_request() or grid_by_time:
                yield from self._mid_run_grid(control, speed)
                self._grid_due_at = self._clock.spent() + s.sample_seconds
            if _due(self.step, s.checkpoint_every) or control.take_save_request():
                yield self.save()
            if _due(self.step, s.eval_every) and self.step < s.steps:
                yield from self._evaluation(final=False, cancel=lambda: control.stop_requested)
        # Stop abandons the current step (or lets a fast one end) and saves; completion saves too.
        # The checkpoint first: the grid and the evaluation after it may take minutes, and
        # closing the app (control.hurry) skips them.
        timed_out = self.step < s.steps and not control.stop_requested  # the time limit ended it
        if self.step < s.steps:
            yield Stopping(self.step, f"the {s.minutes:g}-minute time limit is reached" if timed_out else "stopped")
        if self.is_main:
            yield self.save()
            # The end-of-run work answers a stop too: a second one after a Stop (hurry), or the
            # first after the run completed.
            stopped_already = control.stop_requested

            def cut_short() -> bool:
                return control.hurried or (control.stop_requested and not stopped_already)

            grid = self.sample_grid(cancel=cut_short, progress=partial(control.report_progress, FINAL_SAMPLES))
            if grid is not None:
                yield grid
            if cut_short():
                yield Notice(self.step, "stopped: the final sample grid and evaluation were skipped")
            else:
                yield from self._evaluation(final=True, cancel=cut_short, progress=control.report_progress)
        reason = "completed" if self.step >= s.steps else TIME_LIMIT_REACHED if timed_out else "stopped"
        yield TrainingFinished(self.step, reason, str(self.run_dir.path))

    def _pause(self, control: TrainingControl, speed: _Throughput) -> Iterator[TrainEvent]:
        """Wait while paused (a stop wakes it), with the events that say so."""
        yield PauseChanged(self.step, True)
        speed.pause()
        self._clock.pause()
        control.wait_while_paused()
        self._clock.resume()
        speed.resume()
        if not control.stop_requested:
            yield PauseChanged(self.step, False)

    def _mid_run_grid(self, control: TrainingControl, speed: _Throughput) -> Iterator[TrainEvent]:
        """A due sample grid that Pause and Stop cut short (a PixelCNN's takes many seconds on
        a CPU): after a pause it is drawn again from the start, after a stop it is dropped (the
        final grid follows the checkpoint)."""
        while True:
            grid = self.sample_grid(cancel=lambda: control.paused or control.stop_requested or self._clock.up())
            if grid is not None:
                yield grid
                return
            if control.stop_requested or self._clock.up() or not control.paused:
                return
            yield from self._pause(control, speed)
            if control.stop_requested:
                return

    def _out_of_memory(self) -> RunError:
        """Free what the failed step held, keep the work done so far, and say what to change.
        The interrupted step took no optimizer step in single-optimizer families; a GAN may
        have updated its discriminator only, which is still a valid state to continue from."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        kept = "nothing new was saved"
        try:
            saved = self.save()
            kept = f"the model at step {saved.step} was saved"
        except (CheckpointError, OSError, torch.cuda.OutOfMemoryError):
            pass
        s = self.settings
        return RunError(f"out of {self.device.type.upper()} memory at step {self.step + 1} "
                        f"(batch {s.batch}, {s.size} px); {kept}. Lower the batch size or image "
                        f"size and resume")

    def _log(self, metrics: dict[str, float], speed: _Throughput, elapsed: float) -> StepLogged:
        ips = speed.images_per_sec()
        remaining = self.settings.steps - self.step
        eta = remaining * self.settings.batch / ips if ips > 0 else None
        done = self.step / self.settings.steps
        if self._clock.limit is not None:
            eta = self._clock.left() if eta is None else min(eta, self._clock.left())
            done = max(done, self._clock.spent() / self._clock.limit)
        record = {"step": self.step, **metrics, "images_per_sec": ips, "time": round(elapsed, 3)}
        if self.is_main:
            self.run_dir.append_metrics(record)
        return StepLogged(self.step, self.settings.steps, dict(metrics), ips, eta, elapsed, min(1.0, done))

    def _evaluation(self, final: bool, cancel: Callable[[], bool],
                    progress: ProgressFn | None = None) -> Iterator[TrainEvent]:
        """A due evaluation's event; when `cancel()` comes true meanwhile (checked at every
        network layer and between batches) it is dropped, recording nothing, with a Notice."""
        watch = (self.runtime.interrupter.watching(cancel) if self.runtime.interrupter is not None
                 else contextlib.nullcontext())
        try:
            with watch:
                evaluated = self.evaluate(final, should_stop=cancel, progress=progress)
        except (EvaluationCancelled, StepInterrupted):
            yield Notice(self.step, f"the evaluation at step {self.step} was stopped; nothing was recorded")
            return
        if evaluated is not None:
            yield evaluated

    def evaluate(self, final: bool, should_stop: Callable[[], bool] | None = None,
                 progress: ProgressFn | None = None) -> Evaluated | None:
        """Measure the model against the held-out split (the same one `genstudio eval` uses)
        and log the figures as a record; the final evaluation also scores the baseline.
        `should_stop()` coming true raises EvaluationCancelled; `progress` hears each stage's
        images done, as ("measuring: <stage>", done, total)."""
        s = self.settings
        if s.eval_images <= 0:
            return None
        request = EvalSettings(metrics=tuple(s.eval_metrics), samples=max(2, s.eval_samples),
                               reference=max(2, s.eval_images), extractor=s.eval_extractor,
                               seed=s.seed, baseline=final,
                               # A live indicator, not the record of the model: a family whose
                               # exact figure is costly gives its quick estimate (named so).
                               quick_likelihood=True)
        needs_features = set(request.metrics) - {"bpd", "memorisation"}
        if needs_features and self._extractor is None:
            # Built once per run: loading Inception means hashing ~90 MB and a TorchScript load.
            self._extractor = get_extractor(s.eval_extractor)
        stage, count = _stage_and_count(progress) if progress is not None else (None, None)
        figures = run_evaluation(self.family, self.dataset, request, self._extractor, stage=stage, count=count,
                                 should_stop=should_stop).figures
        self.run_dir.append_metrics({"step": self.step, **figures})
        return Evaluated(self.step, figures)

    def sample_grid(self, cancel: Callable[[], bool] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> SamplesReady | None:
        """The run's sample grid at this step, written to samples/; None when `cancel()` came
        true while it was drawn (checked between the sampler's steps and, during a run, at
        every network layer). `progress(done, total)` hears the sampler's steps."""
        n = self.settings.grid_samples
        self.family.eval_mode()
        try:
            if cancel is None:
                images = self.family.sample(n, seed=self.settings.seed)
            else:
                def sampled(done: int, total: int, _images: Any = None) -> None:
                    _raise_if(cancel())
                    if progress is not None:
                        progress(done, total)

                watch = (self.runtime.interrupter.watching(cancel) if self.runtime.interrupter is not None
                         else contextlib.nullcontext())
                with watch:
                    images = self.family.sample(n, seed=self.settings.seed, progress=sampled)
        except (SamplingCancelled, StepInterrupted):
            return None
        finally:
            self.family.train_mode()
        grid = make_grid(to_uint8(images), columns=int(math.ceil(math.sqrt(n))))
        path = self.run_dir.samples_dir / f"step_{self.step:07d}.png"
        save_png(path, grid, {"family": self.settings.family, "run": self.run_dir.path.name,
                              "step": self.step, "seed": self.settings.seed})
        return SamplesReady(self.step, grid, str(path))


def _stage_and_count(progress: ProgressFn) -> tuple[Callable[[str], None], Callable[[int, int], None]]:
    """run_evaluation's stage and count callbacks, reporting both through one `progress` as
    ("measuring: <stage>", done, total); a stage starts at (0, 0), i.e. busy until it counts."""
    current = ["measuring"]

    def stage(name: str) -> None:
        current[0] = f"measuring: {name}"
        progress(current[0], 0, 0)

    def count(done: int, total: int) -> None:
        progress(current[0], done, total)

    return stage, count


class _TrainingClock:
    """The time a training session has trained, pauses left out, against its limit in minutes
    (settings.minutes; 0: none). Mid-run grids and evaluations count: they are part of training."""

    def __init__(self, minutes: float):
        self.limit = minutes * 60.0 if minutes > 0 else None
        self._started = time.perf_counter()
        self._paused_at: float | None = None
        self._paused = 0.0

    def pause(self) -> None:
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused += time.perf_counter() - self._paused_at
            self._paused_at = None

    def spent(self) -> float:
        now = self._paused_at if self._paused_at is not None else time.perf_counter()
        return now - self._started - self._paused

    def left(self) -> float:
        return max(0.0, (self.limit or 0.0) - self.spent())

    def up(self) -> bool:
        return self.limit is not None and self.spent() >= self.limit


class _Throughput:
    """Images per second over the last few seconds of unpaused training."""

    def __init__(self, batch: int, window: int = 50):
        self.batch = batch
        self.times: deque[float] = deque(maxlen=window)
        self._paused_at: float | None = None

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def pause(self) -> None:
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        # Shift history by the paused time so the pause does not count as slow training.
        if self._paused_at is not None:
            gap = time.perf_counter() - self._paused_at
            self.times = deque((t + gap for t in self.times), maxlen=self.times.maxlen)
            self._paused_at = None

    def images_per_sec(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) * self.batch / span if span > 0 else 0.0


def _raise_if(cancelled: bool) -> None:
    if cancelled:
        raise SamplingCancelled


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _describe_spec(spec: dict[str, Any]) -> str:
    classes = f", {spec['num_classes']} classes" if spec.get("num_classes") else ""
    return f"{spec.get('size')}×{spec.get('size')} px with {spec.get('channels')} channel(s){classes}"


def _stored_settings(run_dir: RunDir) -> TrainSettings:
    """The settings of the run to resume in run_dir."""
    settings = run_dir.read_settings()
    if not run_dir.has_checkpoint():
        raise RunError(f"cannot resume {run_dir.path}: it ended before its first checkpoint, so "
                       "there is nothing to continue; train it again without --resume")
    return settings


def _refuse_run_inside_data(run_dir: RunDir, data: str) -> None:
    """A run folder in the image folder would become part of the data (its samples/ a class)."""
    if data.startswith(BUILTIN_PREFIX):
        return
    folder = Path(data).expanduser().resolve()
    if run_dir.path.resolve().is_relative_to(folder):
        raise RunError(f"the run folder {run_dir.path} is inside the image folder {folder}; "
                       "put the run somewhere else, or its files would be read as images")


def _refuse_changed_data(run_dir: RunDir, dataset: ImageDataset) -> None:
    """A resumed run must see the images it began with: its held-out split is a function of
    them, and with other images it would hold out images it had trained on."""
    stored = run_dir.read_config().get("dataset")
    if not isinstance(stored, dict):
        return
    then, fingerprint = stored.get("images"), stored.get("fingerprint")
    if then in (None, len(dataset)) and fingerprint in (None, dataset.fingerprint()):
        return  # (runs made before fingerprints were stored are compared by count)
    counts = f"{then} images then, {len(dataset)} now" if then != len(dataset) else f"{then} images, not all the same"
    raise RunError(f"the images of {dataset.source} changed since this run began ({counts}), so its held-out "
                   "split would hold images it trained on; restore them to continue the run, or train a new one")


def _validate(settings: TrainSettings, distributed: Distributed | None = None) -> None:
    if settings.steps < 1:
        raise RunError("steps must be at least 1")
    if settings.batch < 1:
        raise RunError("batch must be at least 1")
    if settings.channels not in (None, 1, 3):
        raise RunError("channels must be 1 or 3")
    if settings.log_every < 1:
        raise RunError("log_every must be at least 1")
    if settings.precision not in PRECISION_CHOICES:
        raise RunError(f"precision must be one of {', '.join(PRECISION_CHOICES)}")
    if not (math.isfinite(settings.minutes) and settings.minutes >= 0):
        raise RunError(f"the time limit must be a number of minutes ≥ 0 (0: none), not {settings.minutes}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise RunError(f"the seed must be a whole number from 0 to {MAX_SEED}, not {settings.seed}")
    for name in ("sample_every", "checkpoint_every", "eval_every", "eval_images", "eval_samples", "grid_samples"):
        if getattr(settings, name) < 0:
            raise RunError(f"{name} must not be negative")
    if not (math.isfinite(settings.sample_seconds) and settings.sample_seconds >= 0):
        raise RunError(f"sample_seconds must be a number of seconds ≥ 0 (0: off), not {settings.sample_seconds}")
    if settings.eval_images > 0:
        try:  # now, not when the first evaluation is due after hours of training
            EvalSettings(metrics=tuple(settings.eval_metrics))
        except ValueError as exc:
            raise RunError(f"eval_metrics: {exc}") from None
    try:  # the family's knobs, before any data is read or folder made
        config_from_dict(family_class(settings.family).Config, settings.family_config)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{settings.family}: {exc}") from None
    if distributed is not None and settings.batch % distributed.world_size:
        raise RunError(f"the batch ({settings.batch}) must be a multiple of the number of "
                       f"processes ({distributed.world_size}): it is the global batch, split between them")


def _version() -> str:
    from genstudio import __version__

    return __version__
