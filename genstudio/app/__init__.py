"""The genstudio desktop app (Qt). Wiring and presentation only; all computation is in core."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Show the main window and run the event loop; returns the exit code."""
    problem = display_problem()
    if problem:
        print(f"genstudio: error: {problem}", file=sys.stderr)
        return 1
    prepare_process()
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


def prepare_process() -> None:
    """What the app's process needs before its first thread and its first window
    (core/runtime/memory.py): every thread on the main heap, which keeps the training thread's freed
    activations for its next step; and the imported modules' objects out of the garbage
    collector's full passes, which otherwise stop the window for 160 ms at a time."""
    from genstudio.core.runtime.memory import (
        freeze_imported_objects,
        freeze_the_compiler_in_the_background,
        one_heap_for_all_threads,
    )

    one_heap_for_all_threads()  # before Qt or torch start a thread
    # Imported here so `import genstudio.app` stays cheap (the CLI imports it lazily too).
    from . import main_window  # noqa: F401 - Qt, torch and every family: the bulk to freeze

    freeze_imported_objects(compiler=False)
    # torch's compiler, which its first optimizer imports, takes a second to import: the window
    # comes up meanwhile (1.4-1.8 s after launch instead of 2.5 s on 2 cores).
    freeze_the_compiler_in_the_background()


def display_problem(environ: dict[str, str] | None = None) -> str:
    """Why Qt could not open a window here, or "" if it should.

    Qt aborts the whole process (no exception to catch) when no platform plugin can start, with
    a message that does not say what to do; these are the causes people actually hit: no
    display at all, or X11 system libraries that the pip wheel of Qt expects but does not ship."""
    env = os.environ if environ is None else environ
    if env.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return ""
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                "run it in a desktop session, or set QT_QPA_PLATFORM=offscreen for a headless check")
    if env.get("WAYLAND_DISPLAY"):
        return ""
    missing = _xcb_plugin_load_error()
    if missing:
        return (f"Qt cannot open an X11 window: {missing}. Install Qt's X11 libraries (Debian/Ubuntu: "
                "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 "
                "libxcb-xkb1 libxcb-render-util0 libxcb-image0 libxcb-shape0)")
    return ""


def _xcb_plugin_load_error() -> str:
    """The dynamic loader's complaint about Qt's xcb platform plugin, or "" if it loads."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return ""
    plugin = os.path.join(os.path.dirname(spec.origin), "Qt", "plugins", "platforms", "libqxcb.so")
    if not os.path.exists(plugin):
        return ""
    try:
        ctypes.CDLL(plugin)
    except OSError as exc:
        return str(exc)  # names the missing library, e.g. "libxcb-icccm.so.4: cannot open…"
    return ""


__all__ = ["display_problem", "main"]
