"""Background work: the training worker on a thread of its own, one-off jobs on a thread pool.

The GUI thread never computes. Long work runs off it and talks back only through signals, which
Qt queues to the GUI thread because the receivers live there. Every thread started here and
every job submitted is registered, so that tests (and the window on close) can check that none is
left running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QThreadPool, QTimer, Signal, Slot

from genstudio.core.data import DatasetError, ImageDataset, load_source
from genstudio.core.metrics.download import DownloadError
from genstudio.core.metrics.evaluate import EvaluationCancelled
from genstudio.core.metrics.features import InvalidWeightsError
from genstudio.core.playground.live import LivePlayground, PlaygroundControl
from genstudio.core.playground.scenario import Scenario
from genstudio.core.runs.run import RunError, TrainSettings
from genstudio.core.runtime.launch import LaunchedRun
from genstudio.core.runtime.memory import keep_freed_memory
from genstudio.core.runtime.training import (
    TRAIN_EVENTS,
    RunStarted,
    StepObserver,
    Trainer,
    TrainEvent,
    TrainingControl,
)
from genstudio.core.trained.sampling import SamplingError

log = logging.getLogger(__name__)

# Errors whose message is already a sentence for the user (no exception type appended).
PREVIEW_INTERVAL = 0.1  # seconds between intermediate results sent to the GUI thread

_USER_ERRORS = (DatasetError, DownloadError, EvaluationCancelled, InvalidWeightsError, RunError, SamplingError)


# How long a thread may take to end once it has emitted `finished` (it only tidies up then).
_THREAD_END_MS = 30_000


class _ThreadHandle(QObject):
    """Lives on the GUI thread, so the thread's `finished` reaches `on_finished` there."""

    def __init__(self, thread: QThread, on_finished: Callable[[QThread], None]):
        super().__init__()
        self.thread_ = thread
        self.on_finished = on_finished
        thread.finished.connect(self._finished)

    @Slot()
    def _finished(self) -> None:
        thread = self.thread_
        # finished is emitted just before the thread ends; make the end certain, but never
        # block the GUI thread for good on a thread that does not end.
        if not thread.wait(_THREAD_END_MS):
            log.error("a worker thread reported it finished but has not ended; left running")
            return
        self.on_finished(thread)
        # Not thread.deleteLater(): Qt's event loop would destroy the Python-made QThread
        # without the GIL, beside jobs that emit from their threads (the deadlock described in
        # ThreadWorker). Nor here: this handle and that thread are the receiver and the sender
        # of the call now running. So, from Python, once this call has returned.
        QTimer.singleShot(0, lambda: _dispose(thread))


def _dispose(thread: QThread) -> None:
    """Delete an ended thread and drop its handle, on the GUI thread with the GIL held."""
    _LIVE_THREADS.pop(thread, None)
    if shiboken6.isValid(thread):
        shiboken6.delete(thread)


_LIVE_THREADS: dict[QThread, _ThreadHandle] = {}


def running_threads() -> list[QThread]:
    """Threads started by this module that have not finished yet."""
    return [t for t in _LIVE_THREADS if shiboken6.isValid(t) and t.isRunning()]


# Python 3.11's ast module counts its recursion depth once per interpreter, not per thread, so two
# threads parsing at once can make either raise "SystemError: AST constructor recursion depth
# mismatch" (CPython gh-106905; seen here when a failed job's traceback was formatted while the
# GUI thread read a config class's source). Formatting a traceback parses (3.11 underlines the
# failing expression), and so does a form's literal field: whatever of ours parses holds this.
SOURCE_PARSING = threading.Lock()


def format_current_exception() -> str:
    """traceback.format_exc(), safe beside other threads that parse."""
    with SOURCE_PARSING:
        return traceback.format_exc()


def describe_error(exc: BaseException) -> str:
    """One line for the user: the message and, so a bug is recognisable, the exception type.

    Errors that core raises for bad input already carry a sentence meant for the user."""
    message = str(exc).strip() or "no message"
    if isinstance(exc, _USER_ERRORS):
        return message
    return f"{message} ({type(exc).__name__})"


class ThreadWorker(QObject):
    """A QObject that does its work in a thread of start_thread and ends with finish().

    Why the hand-back: a Python-made QObject destroyed in a worker thread (the usual
    `thread.finished.connect(worker.deleteLater)`) runs ~QObject there, which calls back into
    Python (PySide's override lookup, which needs the GIL) while holding one of Qt's shared
    signal-slot mutexes. If the GUI thread, holding the GIL, is connecting a signal whose
    objects hash to the same mutex at that moment, both wait forever; we saw exactly this hang
    the test suite. Moved back to the GUI thread before its thread ends, the worker is
    destroyed on the GUI thread, which already holds the GIL."""

    done = Signal()  # always the last signal

    def finish(self) -> None:
        """Call last, from the worker's own thread: hand it back, then let its thread quit."""
        app = QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        self.done.emit()


def start_thread(worker: ThreadWorker, entry: Callable[[], None],
                 on_finished: Callable[[QThread], None]) -> QThread:
    """Move `worker` to a new thread and call `entry` (one of its slots) there; the thread
    quits when the worker's `done` is emitted.

    `on_finished(thread)` runs on the GUI thread once the thread has ended and been joined.
    Call from the GUI thread. The worker is handed back to the GUI thread by its `finish()`
    and is deleted there, when its owner drops it (see ThreadWorker)."""
    thread = QThread()
    worker.moveToThread(thread)
    thread.started.connect(entry)
    # Direct: quit() is thread-safe, and a queued call would deadlock a GUI thread that is
    # blocked in wait() for this very thread.
    worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    _LIVE_THREADS[thread] = _ThreadHandle(thread, on_finished)
    thread.start()
    return thread


class _Throttle:
    """Lets progress through at most every `interval` seconds, and always the last one."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._last = 0.0

    def ready(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if done >= total or now - self._last >= self.interval:
            self._last = now
            return True
        return False


# -- training ---------------------------------------------------------------------------------


class TrainingWorker(ThreadWorker):
    """Runs one training run (data loading, model building, the loop) in its thread and relays
    each core event as a signal. `control` may be used from any thread."""

    loading = Signal(int, int)          # images decoded, total
    run_started = Signal(object)        # RunStarted
    step_logged = Signal(object)        # StepLogged
    samples_ready = Signal(object)      # SamplesReady
    checkpoint_saved = Signal(object)   # CheckpointSaved
    evaluated = Signal(object)          # Evaluated
    pause_changed = Signal(object)      # PauseChanged
    notice = Signal(object)             # Notice
    batch_lowered = Signal(object)      # BatchLowered (out of GPU memory: training goes on)
    stopping = Signal(object)           # Stopping (left the loop; final samples and save follow)
    training_finished = Signal(object)  # TrainingFinished
    finishing = Signal(str, int, int)   # the end-of-run work: what, done, total (0, 0: busy)
    cancelled = Signal()                # stopped before the run began (nothing written)
    failed = Signal(str, str)           # cause for the user, full traceback

    # Each event type goes out as the signal of its own name in snake_case (RunStarted → run_started).
    _RELAY = {cls: re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower() for cls in TRAIN_EVENTS}

    def __init__(self, settings: TrainSettings, run_dir: str, *,
                 dataset: ImageDataset | None = None, resume: bool = False,
                 observe: Callable[[Trainer], StepObserver] | None = None):
        super().__init__()
        self.settings = settings
        self.run_dir = run_dir
        self.dataset = dataset  # already loaded for the preview: saves decoding it again
        self.resume = resume  # continue the run in run_dir (its settings, to settings.steps)
        self.observe = observe  # the trainer's step observer, made once it exists (benchmarks)
        self.control = TrainingControl(on_progress=self._finishing_progress)
        self._throttle = _Throttle()
        self._finishing_throttle = _Throttle()

    # A subclass changes _events, never run: PySide does not see a slot overridden in a
    # Python subclass as the slot, and connects `started` to it as a plain callable, which
    # it then calls on the GUI thread.
    @Slot()
    def run(self) -> None:
        try:
            for event in self._events():
                getattr(self, self._RELAY[type(event)]).emit(event)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the user, not kill the thread
            details = self._details()
            log.error("training failed\n%s", details)
            self.failed.emit(describe_error(exc), details)
        finally:
            self.finish()

    def _events(self) -> Iterator[TrainEvent]:
        trainer = self._build()
        if trainer is None:
            self.cancelled.emit()
            return
        yield from trainer.run(self.control)

    def _details(self) -> str:
        return format_current_exception()

    def _build(self) -> Trainer | None:
        dataset = self.dataset
        if dataset is None:
            s = self.settings
            try:
                dataset = load_source(s.data, s.size, s.channels, progress=self._progress,
                                      should_stop=lambda: self.control.stop_requested)
            except DatasetError:
                if self.control.stop_requested:
                    return None
                raise
        if self.control.stop_requested:
            return None
        trainer = Trainer(self.settings, self.run_dir, dataset=dataset, resume=self.resume)
        if self.observe is not None:
            trainer.observer = self.observe(trainer)
        return trainer

    def _progress(self, done: int, total: int) -> None:
        if self._throttle.ready(done, total):
            self.loading.emit(done, total)

    def _finishing_progress(self, what: str, done: int, total: int) -> None:
        if done == 0 or self._finishing_throttle.ready(done, total):  # a new stage always shows
            self.finishing.emit(what, done, total)


class PlaygroundWorker(ThreadWorker):
    """Builds the playground's families and data density in its thread, then runs the core's
    live loop there until control.stop(), relaying the data density and each FamilyView."""

    view_ready = Signal(object)   # FamilyView
    target_ready = Signal(object)  # GridDensity: the data's, which the yardstick scores against
    failed = Signal(str, str)     # cause for the user, full traceback

    def __init__(self, scenario: Scenario, names: list[str], control: PlaygroundControl):
        super().__init__()
        self.scenario, self.names, self.control = scenario, names, control

    @Slot()
    def run(self) -> None:
        try:
            live = LivePlayground(self.scenario, self.names)
            self.target_ready.emit(live.target)
            live.run(self.control, self.view_ready.emit)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the user, not kill the thread
            self.failed.emit(describe_error(exc), format_current_exception())
        finally:
            self.finish()


@dataclasses.dataclass(frozen=True)
class RunningTraining:
    """A training the window started, until its thread has ended: the worker whose signals the
    window follows and the thread it runs on. Pause, stop and the rest go to its control."""

    worker: TrainingWorker
    thread: QThread

    @property
    def control(self) -> TrainingControl:
        return self.worker.control


def start_training(worker: TrainingWorker, on_ended: Callable[[QThread], None]) -> RunningTraining:
    """Run `worker` on a thread of its own (start_thread); `on_ended` as there."""
    return RunningTraining(worker, start_thread(worker, worker.run, on_ended))


class LaunchedControl(TrainingControl):
    """Stop for a run in other processes: it reaches them as SIGTERM. They have no channel for
    pause, sample-now or save-now, so those are not honoured (the panel does not offer them)."""

    interactive = False

    def __init__(self, launched: LaunchedRun):
        super().__init__()
        self.launched = launched

    def stop(self) -> None:
        super().stop()
        self.launched.stop()  # thread-safe; before the start it makes the start stop at once

    def pause(self) -> None:
        pass


class LaunchedTrainingWorker(TrainingWorker):
    """A data-parallel run trained by torchrun's processes (core/runtime/launch.py), followed through
    the events rank 0 reports: the window sees the same signals as for an in-process run."""

    def __init__(self, settings: TrainSettings, run_dir: str, processes: int, *, resume: bool = False):
        super().__init__(settings, run_dir, resume=resume)
        self.launched = LaunchedRun(settings, run_dir, processes, resume=resume)  # checks the settings now
        self.control = LaunchedControl(self.launched)

    def _events(self) -> Iterator[TrainEvent]:
        if self.control.stop_requested:
            self.cancelled.emit()
            return
        for event in self.launched.events():
            if isinstance(event, RunStarted):
                event = dataclasses.replace(
                    event, device=f"{event.device}, {self.launched.processes} processes (torchrun)")
            yield event

    def _details(self) -> str:
        return format_current_exception() + "\nThe processes' last output:\n" + "\n".join(self.launched.tail)


# -- one-off jobs -----------------------------------------------------------------------------


class Job:
    """What a job function sees: progress reporting and whether its result is still wanted."""

    def __init__(self, runner: TaskRunner, job_id: int, worker: FunctionWorker):
        self._runner = runner
        self.id = job_id
        self._worker = worker
        self._throttle = _Throttle()
        self._last_preview = 0.0  # monotonic time of the last preview sent

    def cancelled(self) -> bool:
        return self._runner._is_stale(self.id)

    def progress(self, done: int, total: int) -> None:
        if self._throttle.ready(done, total):
            self._worker.progress.emit(self.id, done, total)

    def preview(self, item: object) -> None:
        """An intermediate result to show (e.g. the current state of a denoising chain); sent
        at most every 0.1 s, since drawing it costs the GUI thread time."""
        now = time.monotonic()
        if now - self._last_preview >= PREVIEW_INTERVAL:
            self._last_preview = now
            self._worker.preview.emit(self.id, item)

    def piece(self, item: object) -> None:
        """A finished part of the result to show at once (one run's fill of several): sent on
        the preview signal like a preview, but never dropped for coming too soon."""
        self._worker.preview.emit(self.id, item)

    def say(self, text: str) -> None:
        """What the job is doing now, e.g. "features of the samples" (a stage, not a count)."""
        self._worker.message.emit(self.id, text)


class FunctionWorker(QObject):
    """Calls fn(job) once, on a thread of the job pool, and reports the result or the failure.

    It lives on the GUI thread, which made it and is the only one to drop it (see _JobEnds):
    only its signals are used from the pool's thread."""

    progress = Signal(int, int, int)      # job id, done, total
    message = Signal(int, str)            # job id, stage
    preview = Signal(int, object)         # job id, intermediate result
    succeeded = Signal(int, object)       # job id, result
    failed = Signal(int, str, str)        # job id, cause, traceback

    def __init__(self, fn: Callable[[Job], Any]):
        super().__init__()
        self.fn = fn
        self.job: Job | None = None

    def run(self) -> None:
        assert self.job is not None
        try:
            result = self.fn(self.job)  # inside its runner's keep_freed_memory (TaskRunner._start)
        except Exception as exc:  # noqa: BLE001 - reported to the GUI instead
            details = format_current_exception()
            log.debug("job failed\n%s", details)
            self.failed.emit(self.job.id, describe_error(exc), details)
        else:
            self.succeeded.emit(self.job.id, result)
        finally:
            self.job = None  # the job holds this worker: no cycle left for a collector pass


# One pool of long-lived threads for every runner's jobs: a job reuses an idle thread (Qt ends
# one after 30 s without work) instead of creating, joining and deleting one. No cap worth the
# name: a runner's job must not wait behind another panel's long evaluation.
_POOL = QThreadPool()
_POOL.setMaxThreadCount(64)


class _JobEnds(QObject):
    """Carries "job `token` has ended" from a pool thread to the GUI thread.

    Why a relay instead of a signal of the worker or runner: whoever drops the last reference to
    a Python-made QObject destroys it on that thread, and destroyed on a thread other than the
    GUI thread it can deadlock (ThreadWorker says how). A pool thread holds neither object when
    it emits this; the GUI thread drops both."""

    ended = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.ended.connect(self._ended)
        self.callbacks: dict[int, Callable[[], None]] = {}  # token → on-ended, GUI thread only
        self._next = 0

    def add(self, on_ended: Callable[[], None]) -> int:
        self._next += 1
        self.callbacks[self._next] = on_ended
        return self._next

    @Slot(int)
    def _ended(self, token: int) -> None:
        self.callbacks.pop(token)()


_job_ends: _JobEnds | None = None  # made on the GUI thread by the first submit


def _run_in_pool(worker: FunctionWorker, on_ended: Callable[[], None]) -> None:
    """Run `worker` on a pool thread; `on_ended()` follows on the GUI thread. Call from the GUI
    thread."""
    global _job_ends, _unfinished_jobs
    if _job_ends is None:
        _job_ends = _JobEnds()
    relay, token, holder = _job_ends, _job_ends.add(on_ended), [worker]
    with _jobs_lock:
        _unfinished_jobs += 1

    def task() -> None:
        global _unfinished_jobs
        held = holder.pop()
        try:
            held.run()
        finally:
            del held  # before `ended`: then only the GUI thread holds the worker
            with _jobs_lock:
                _unfinished_jobs -= 1
            relay.ended.emit(token)

    _POOL.start(task)


_jobs_lock = threading.Lock()
_unfinished_jobs = 0  # submitted and not yet returned on their pool thread


def running_jobs() -> int:
    """Jobs submitted to a runner that have not ended yet on their pool thread."""
    with _jobs_lock:
        return _unfinished_jobs


def wait_for_jobs(ms: int) -> bool:
    """Block until every job has ended on its thread (tests and shutdown); the pool's idle
    threads end too (QThreadPool.waitForDone), and later jobs start new ones."""
    return _POOL.waitForDone(ms)


class TaskRunner(QObject):
    """Runs jobs of one kind on pool threads; only the newest job's result is delivered.

    Submitting again makes every older job stale: its result is dropped and job.cancelled()
    turns True so a cooperative job can give up early. Signals arrive on the GUI thread. From
    the first job until none is left, freed memory stays in the process for the next job (a
    slider drag's decodes), and goes back to the system on a pool thread after the last."""

    succeeded = Signal(object)
    failed = Signal(str, str)       # cause, traceback
    progress = Signal(int, int)
    message = Signal(str)
    preview = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._latest = 0
        self._running: dict[int, FunctionWorker] = {}  # job id → worker, until its end arrives
        self._memory: contextlib.ExitStack | None = None  # keep_freed_memory while busy

    def submit(self, fn: Callable[[Job], Any]) -> None:
        was_busy = self.is_busy()
        self._start(fn)
        if not was_busy:
            self.busy_changed.emit(True)

    def _start(self, fn: Callable[[Job], Any]) -> None:
        if self._memory is None:  # a sampler's activations reused from step to step, and job to job
            self._memory = contextlib.ExitStack()
            self._memory.enter_context(keep_freed_memory())  # settings only: microseconds
        self._latest += 1
        worker = FunctionWorker(fn)
        worker.job = job = Job(self, self._latest, worker)
        worker.progress.connect(self._on_progress)
        worker.message.connect(self._on_message)
        worker.preview.connect(self._on_preview)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        self._running[job.id] = worker
        _run_in_pool(worker, functools.partial(self._on_job_ended, job.id))

    def cancel(self) -> None:
        """Drop the results of every job submitted so far."""
        self._latest += 1

    def is_busy(self) -> bool:
        """Whether any job is still running, a stale one included."""
        return bool(self._running)

    def is_working(self) -> bool:
        """Whether the newest job is still running, i.e. a result is still to come; cancelled
        jobs may be finishing beside it."""
        return any(worker.job is not None and worker.job.id == self._latest  # None: its result is sent
                   for worker in self._running.values())

    def wait(self, ms: int = 10_000) -> bool:
        """Block until every job of every runner has ended (for shutdown only)."""
        return wait_for_jobs(ms)

    def _is_stale(self, job_id: int) -> bool:
        return job_id != self._latest

    @Slot(int, int, int)
    def _on_progress(self, job_id: int, done: int, total: int) -> None:
        if not self._is_stale(job_id):
            self.progress.emit(done, total)

    @Slot(int, object)
    def _on_preview(self, job_id: int, item: object) -> None:
        if not self._is_stale(job_id):
            self.preview.emit(item)

    @Slot(int, str)
    def _on_message(self, job_id: int, text: str) -> None:
        if not self._is_stale(job_id):
            self.message.emit(text)

    @Slot(int, object)
    def _on_succeeded(self, job_id: int, result: object) -> None:
        if not self._is_stale(job_id):
            self.succeeded.emit(result)

    @Slot(int, str, str)
    def _on_failed(self, job_id: int, cause: str, details: str) -> None:
        if not self._is_stale(job_id):
            self.failed.emit(cause, details)

    def _on_job_ended(self, job_id: int) -> None:
        self._running.pop(job_id, None)
        if self._running:
            return
        self._give_back_memory()
        if shiboken6.isValid(self):  # else the widget that owned this runner was deleted meanwhile
            self.busy_changed.emit(False)

    def _give_back_memory(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            _POOL.start(memory.close)  # the trim takes milliseconds: not on the GUI thread


class LatestOnlyRunner(TaskRunner):
    """For requests that come faster than they are served (a dragged slider): one job runs at
    a time, and while it runs only the newest submission waits; older waiting ones are
    dropped unrun. A finished job's result is delivered unless cancel() came after it, so a
    drag shows each image as soon as it is ready and then the last position asked for.

    A thread per request would instead run every stale decode at once, sharing two cores,
    and the newest image would arrive last and late."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._waiting: Callable[[Job], Any] | None = None

    def submit(self, fn: Callable[[Job], Any]) -> None:
        if self.is_busy():
            self._waiting = fn  # replaces an older waiting request
        else:
            super().submit(fn)

    def cancel(self) -> None:
        self._waiting = None
        super().cancel()

    def _on_job_ended(self, job_id: int) -> None:
        self._running.pop(job_id, None)
        if self._waiting is not None and shiboken6.isValid(self):
            fn, self._waiting = self._waiting, None
            self._start(fn)  # still busy: no busy_changed in between, and the memory kept
        else:
            super()._on_job_ended(job_id)
