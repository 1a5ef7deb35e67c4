"""The genstudio desktop app (Qt). Wiring and presentation only; all computation is in core."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Show the main window and run the event loop; returns the exit code."""
    # Imported here so `import genstudio.app` stays cheap (the CLI imports it lazily too).
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

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


__all__ = ["main"]
