"""Background jobs: results reach the GUI thread, and worker objects die there too."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import Qt

from genstudio.app import workers
from genstudio.app.workers import LatestOnlyRunner, TaskRunner


def test_a_job_runs_off_the_gui_thread_and_its_result_arrives_on_it(qtbot):
    runner = TaskRunner()
    ran_on = []
    with qtbot.waitSignal(runner.succeeded, timeout=10_000) as result:
        runner.submit(lambda job: ran_on.append(threading.get_ident()) or 42)
    assert result.args == [42]
    assert ran_on and ran_on[0] != threading.get_ident()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_a_job_keeps_its_freed_memory_for_reuse_and_hands_it_back_when_done(qtbot):
    # A sampler's activations are reused from step to step instead of faulting in fresh pages
    # (core/runtime/memory.py); the process goes back to trimming once no job runs.
    from genstudio.core.runtime import memory

    runner = TaskRunner()
    with qtbot.waitSignal(runner.succeeded, timeout=10_000) as result:
        runner.submit(lambda job: memory._open_blocks)  # noqa: SLF001
    assert result.args == [1]  # the runner's block, held from its first job to its last
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    workers.wait_for_jobs(10_000)
    assert memory._open_blocks == 0  # noqa: SLF001


def test_a_burst_of_requests_keeps_the_memory_until_the_last_and_trims_once(qtbot, monkeypatch):
    # A slider drag's decodes follow each other: the memory one frees is what the next reuses.
    from genstudio.core.runtime import memory

    trims = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: trims.append(1) or True)
    runner = LatestOnlyRunner()
    release = threading.Event()
    runner.submit(lambda _job: release.wait(10))
    for n in range(3):
        runner.submit(lambda _job, n=n: n)  # each replaces the last: one more job runs
    release.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    workers.wait_for_jobs(10_000)
    assert len(trims) == 1 and memory._open_blocks == 0  # noqa: SLF001


def test_a_finished_worker_is_destroyed_on_the_gui_thread(qtbot):
    # Destroyed in a pool thread, a Python-made QObject can deadlock against the GUI thread
    # (see workers.ThreadWorker); the GUI thread must hold its last reference.
    runner = TaskRunner()
    runner.submit(lambda job: None)
    (worker,) = runner._running.values()
    destroyed_on = []
    worker.destroyed.connect(lambda *_: destroyed_on.append(threading.get_ident()),
                             Qt.ConnectionType.DirectConnection)
    del worker
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    gc.collect()
    qtbot.waitUntil(lambda: bool(destroyed_on), timeout=5_000)
    assert destroyed_on == [threading.get_ident()]


def test_jobs_reuse_a_waiting_thread_instead_of_starting_one_each(qtbot):
    runner = TaskRunner()
    ran_on = []  # OS thread ids: Linux hands out new ones in sequence, so a repeat is a reuse
    for _ in range(4):
        with qtbot.waitSignal(runner.succeeded, timeout=10_000):
            runner.submit(lambda job: ran_on.append(threading.get_native_id()))
        qtbot.waitUntil(lambda: not runner.is_busy() and not workers.running_jobs(), timeout=10_000)
    assert len(set(ran_on)) < len(ran_on) and threading.get_native_id() not in ran_on
    assert not workers.running_threads()  # no QThread of ours was made for them


def test_a_latest_only_runner_skips_requests_overtaken_while_one_runs(qtbot):
    runner = LatestOnlyRunner()
    release = threading.Event()
    ran, delivered, busy = [], [], []
    runner.succeeded.connect(delivered.append)
    runner.busy_changed.connect(busy.append)

    def job(n):
        def run(_job):
            ran.append(n)
            if n == 0:
                release.wait(10)  # the first request is slow; four more arrive meanwhile
            return n
        return run

    for n in range(5):
        runner.submit(job(n))
    assert len(runner._running) == 1  # one at a time, never a job per request
    release.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    assert ran == [0, 4] and delivered == [0, 4]  # 1–3 were overtaken before they started
    assert busy == [True, False]


def test_cancelling_a_latest_only_runner_drops_both_the_running_and_the_waiting_request(qtbot):
    runner = LatestOnlyRunner()
    release = threading.Event()
    ran, delivered = [], []
    runner.succeeded.connect(delivered.append)
    runner.submit(lambda _job: ran.append(0) or release.wait(10) or 0)
    runner.submit(lambda _job: ran.append(1) or 1)
    runner.cancel()
    release.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    assert ran == [0] and delivered == []


def test_a_failed_jobs_traceback_is_formatted_only_while_no_other_thread_parses(qtbot):
    # Python 3.11 underlines the failing expression in a traceback by parsing it with `ast`,
    # whose recursion counter is shared by all threads (workers.SOURCE_PARSING).
    runner = TaskRunner()
    failures = []
    runner.failed.connect(lambda cause, details: failures.append(details))

    def fail(job):
        return 1 / 0

    with workers.SOURCE_PARSING:
        runner.submit(fail)
        qtbot.wait(500)
        assert not failures  # the worker waits for the lock before it formats
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    assert "ZeroDivisionError" in failures[0] and "1 / 0" in failures[0]
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_every_training_event_has_its_signal():
    """The worker relays each event of core/runtime/training.py's TRAIN_EVENTS as the signal named after
    it; a new event type without its signal would fail the run when first yielded."""
    from PySide6.QtCore import SignalInstance

    from genstudio.app.workers import TrainingWorker
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime.training import TRAIN_EVENTS

    worker = TrainingWorker(TrainSettings(), "unused")
    assert set(TrainingWorker._RELAY) == set(TRAIN_EVENTS)
    for cls, name in TrainingWorker._RELAY.items():
        assert isinstance(getattr(worker, name, None), SignalInstance), f"{cls.__name__}: no signal {name}"
