"""Entry point of the bundled app (PyInstaller, see genstudio.spec): the same program as `genstudio`.

With no arguments (or `app`) it opens the desktop app with the genstudio window icon; with any
other arguments it is the command line (`--version`, `train`, `sample`, …).

GENSTUDIO_SMOKE_QUIT_MS=N makes the app report its main window on stdout after N ms of the
event loop and close it, so tools/check_bundle.py can prove a build opens, offscreen, without
anyone clicking. It is the normal start-up in every other respect.
"""

from __future__ import annotations

import multiprocessing
import os
import sys


def _resource(*parts: str) -> str:
    """A file shipped beside the code: in the bundle (sys._MEIPASS) or in a source checkout."""
    base = getattr(sys, "_MEIPASS", None) or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(base, *parts)


def _prepare_gui() -> None:
    """Create the QApplication that genstudio.app.main reuses, with the icon and smoke hook."""
    from genstudio.app import display_problem

    if display_problem():
        return  # genstudio.app.main prints the reason and exits 1; Qt must not abort first
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    icon = _resource("assets", "genstudio.svg")
    if os.path.exists(icon):
        app.setWindowIcon(QIcon(icon))
    delay = os.environ.get("GENSTUDIO_SMOKE_QUIT_MS")
    if delay:
        def report_and_close() -> None:
            windows = [w for w in app.topLevelWidgets() if w.isWindow() and w.isVisible()]
            icon = "with" if not app.windowIcon().isNull() else "without"
            for window in windows:
                print(f"genstudio smoke: window {window.windowTitle()!r} "
                      f"{window.width()}x{window.height()} shown, {icon} its icon", flush=True)
            if not windows:
                print("genstudio smoke: no window shown", flush=True)
            for window in windows:
                window.close()
            app.quit()

        QTimer.singleShot(int(delay), report_and_close)


def main() -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:]
    if argv in ([], ["app"]):
        _prepare_gui()
        from genstudio.app import main as app_main

        return app_main([])
    from genstudio.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
