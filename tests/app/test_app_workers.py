"""Background jobs: results reach the GUI thread, and worker objects die there too."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import Qt

from genstudio.app.workers import TaskRunner


def test_a_job_runs_off_the_gui_thread_and_its_result_arrives_on_it(qtbot):
    runner = TaskRunner()
    ran_on = []
    with qtbot.waitSignal(runner.succeeded, timeout=10_000) as result:
        runner.submit(lambda job: ran_on.append(threading.get_ident()) or 42)
    assert result.args == [42]
    assert ran_on and ran_on[0] != threading.get_ident()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_a_finished_worker_is_destroyed_on_the_gui_thread(qtbot):
    # Destroyed in its own thread, a Python-made QObject can deadlock against the GUI thread
    # (see workers.ThreadWorker); it must come back to the GUI thread to die.
    runner = TaskRunner()
    runner.submit(lambda job: None)
    (worker,) = runner._threads.values()
    destroyed_on = []
    worker.destroyed.connect(lambda *_: destroyed_on.append(threading.get_ident()),
                             Qt.ConnectionType.DirectConnection)
    del worker
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    gc.collect()
    qtbot.waitUntil(lambda: bool(destroyed_on), timeout=5_000)
    assert destroyed_on == [threading.get_ident()]
