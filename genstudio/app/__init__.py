"""The genstudio desktop app (Qt). Wiring and presentation only; all computation is in core."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Show the main window and run the event loop; returns the exit code."""
    # Imported here so `import genstudio.app` stays cheap (the CLI imports it lazily too).
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    _leave_a_core_for_the_gui()
    argv = list(sys.argv[:1] if argv is None else [sys.argv[0], *argv])
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("genstudio")
    app.setApplicationDisplayName("genstudio")
    app.setOrganizationName("genstudio")
    window = MainWindow()
    window.show()
    code = app.exec()
    # Normally the window has already stopped and joined every thread before closing; this
    # covers a quit that bypassed closeEvent (e.g. the session ending).
    window.shutdown()
    return int(code)


def _leave_a_core_for_the_gui() -> None:
    """Training shares the machine with the GUI thread; torch's default of one compute thread
    per core starves it (and oversubscribed threads made small models several times slower on
    a 2-core machine). An explicit OMP_NUM_THREADS wins."""
    import os

    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


__all__ = ["main"]
