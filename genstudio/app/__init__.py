"""The genstudio desktop app (Qt). Wiring and presentation only; all computation is in core."""

from __future__ import annotations

import ctypes.util
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Show the main window and run the event loop; returns the exit code."""
    problem = display_problem()
    if problem:
        print(f"genstudio: error: {problem}", file=sys.stderr)
        return 1
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


def display_problem(environ: dict[str, str] | None = None) -> str:
    """Why Qt could not open a window here, or "" if it should.

    Qt aborts the whole process (no exception to catch) when no platform plugin can start, with
    a message that does not say what to do; these are the two causes people actually hit."""
    env = os.environ if environ is None else environ
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform or not sys.platform.startswith("linux"):
        return ""
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                "run it in a desktop session, or set QT_QPA_PLATFORM=offscreen for a headless check")
    if not env.get("WAYLAND_DISPLAY") and ctypes.util.find_library("xcb-cursor") is None:
        return ("Qt needs the system library libxcb-cursor0 to open a window under X11; install it "
                "(Debian/Ubuntu: sudo apt install libxcb-cursor0; Fedora: sudo dnf install xcb-util-cursor)")
    return ""


__all__ = ["display_problem", "main"]
