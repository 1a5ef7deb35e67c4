"""Fixtures for the desktop-app tests: the real window, driven offscreen, training tiny models.

Prefer qtbot.waitUntil / waitSignal to QApplication.processEvents() loops. PySide6 6.12.0
dropped a reference to None on every processEvents and to True on every Signal.emit, and
Python aborted once a count reached zero; pyproject excludes that release and
test_app_qt_binding.py checks the installed one.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from app_helpers import SIZE, TINY_MODEL, close_and_delete, wait_for_dataset  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEvent, QtMsgType  # noqa: E402

from genstudio.app import workers  # noqa: E402
from genstudio.app.layout import PREFERRED_WINDOW_SIZE  # noqa: E402
from genstudio.app.main_window import MainWindow  # noqa: E402
from genstudio.core.data import load_source  # noqa: E402
from genstudio.core.runs.run import TrainSettings  # noqa: E402
from genstudio.core.runtime.training import Trainer  # noqa: E402


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory) -> Path:
    """One cache for the session: the built-ins are rendered once, not once per test."""
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(autouse=True)
def app_dirs(tmp_path, monkeypatch, dataset_cache):
    monkeypatch.setenv("GENSTUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(dataset_cache))


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The 2 test cores are shared with the GUI thread and other jobs; oversubscribed
    # intra-op threads made these tiny models several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Qt warnings the offscreen platform prints for any top-level window; not ours.
BENIGN_QT_WARNINGS = ("This plugin does not support propagateSizeHints()",
                      "This plugin does not support raise()")


@pytest.fixture(autouse=True)
def no_thread_left_running(qtbot):
    # First destroy what the last test left to deleteLater (pytest-qt does that to every
    # widget given to qtbot.addWidget), now, while no worker thread runs. Left to this test's
    # event loop, the destruction would run beside the jobs this test starts: see
    # app_helpers.close_and_delete for the deadlock that allows.
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    yield
    leftover, jobs = workers.running_threads(), workers.running_jobs()
    for thread in leftover:
        thread.wait(30_000)  # do not let a leak crash the next test
    workers.wait_for_jobs(30_000)
    assert not leftover, f"{len(leftover)} QThread(s) still running after the test"
    assert not jobs, f"{jobs} job(s) still running after the test"


@pytest.fixture(autouse=True)
def no_qt_warnings(qtlog):
    """Qt's warnings (e.g. a timer touched from the wrong thread) fail the test."""
    yield
    bad = [r.message for r in qtlog.records
           if r.type != QtMsgType.QtDebugMsg and r.type != QtMsgType.QtInfoMsg
           and r.message not in BENIGN_QT_WARNINGS]
    assert not bad, bad


@pytest.fixture
def window(qtbot) -> MainWindow:
    """The real main window with the default dataset at 16 px loaded; closed like a user would."""
    win = MainWindow()  # not qtbot.addWidget: it would delete the window before this teardown
    win.resize(PREFERRED_WINDOW_SIZE)  # the offscreen screen is 800×800; a first launch shrinks to it
    win.show()
    win.dataset_panel.size_spin.setValue(SIZE)
    wait_for_dataset(qtbot, win, lambda p: p.request.size == SIZE)
    yield win
    close_and_delete(qtbot, win)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, dataset_cache) -> Path:
    """A finished, class-conditional tiny run made headlessly with core (no Qt) once."""
    run_dir = tmp_path_factory.mktemp("runs") / "shapes-run"
    settings = TrainSettings(data="builtin:shapes", size=SIZE, steps=30, batch=16, conditional=True,
                             family_config=dict(TINY_MODEL), sample_every=0, checkpoint_every=0)
    dataset = load_source(settings.data, SIZE, cache_dir=dataset_cache)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before one_torch_thread
    try:
        for _event in Trainer(settings, str(run_dir), dataset=dataset).run():
            pass
    finally:
        torch.set_num_threads(before)
    return run_dir


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six small PNGs in two class subfolders, plus two bad files that must be skipped."""
    root = tmp_path / "pictures"
    rng = np.random.default_rng(0)
    for index in range(6):
        folder = root / ("red" if index % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index}.png")
    (root / "blue" / "empty.png").write_bytes(b"")
    (root / "red" / "notes.png").write_text("not an image at all", encoding="utf-8")
    return root

