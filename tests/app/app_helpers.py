"""Helpers shared by the app tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import shiboken6
from PySide6.QtCore import Qt

if TYPE_CHECKING:
    from genstudio.app.main_window import MainWindow

SIZE = 16
TINY_MODEL = {"base_channels": 8, "latent_dim": 4}
# Long enough never to finish on its own: tests that stop, pause or close use this.
ENDLESS = 1_000_000


def wait_for_dataset(qtbot, win: MainWindow, check=lambda preview: True, timeout=20_000) -> None:
    qtbot.waitUntil(lambda: win.preview is not None and check(win.preview), timeout=timeout)


def tiny_settings(**overrides) -> dict:
    values = {"steps": 40, "batch": 16, "sample_every": 10, "checkpoint_every": 0,
              "family_config": dict(TINY_MODEL)}
    values.update(overrides)
    return values


def start_training(qtbot, win: MainWindow, **overrides) -> None:
    """Fill the form with tiny settings, press Start and wait until the run has begun."""
    win.training_panel.set_values(**tiny_settings(**overrides))
    qtbot.waitUntil(win.training_panel.start_button.isEnabled, timeout=10_000)
    qtbot.mouseClick(win.training_panel.start_button, Qt.MouseButton.LeftButton)
    assert win.training is not None, win.training_panel.error_label.text()
    # Wait on window state, never on the worker's signals: pytest-qt would run its slot in
    # the worker thread and stop its timer from there.
    qtbot.waitUntil(lambda: win.training_panel.state != "loading", timeout=30_000)


def wait_idle(qtbot, win: MainWindow, timeout=60_000) -> None:
    qtbot.waitUntil(lambda: not win.busy(), timeout=timeout)


def close_and_delete(qtbot, win: MainWindow) -> None:
    """Close the window as a user would (training stops and saves, every thread ends), then
    delete it at once, while no worker thread runs.

    Not deleteLater: the next test's event loop would then destroy this whole widget tree
    while the next window's background jobs (dataset, pretrained run) emit from their threads.
    Destroying a Python-made QObject from the event loop, which runs without the GIL, calls
    back into Python while holding one of Qt's shared signal-slot mutexes: the deadlock that
    ThreadWorker's docstring describes, with the GUI thread in the worker's place."""
    if not shiboken6.isValid(win):
        return
    win.close()  # stops training and waits for every thread, then really closes
    qtbot.waitUntil(lambda: not win.isVisible() and not win.busy(), timeout=30_000)
    shiboken6.delete(win)
