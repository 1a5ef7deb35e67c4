"""The real entry point in a separate process: start, train, close mid-run, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from genstudio.core.runs.run import load_run

# Drives the app from inside its own event loop: waits for the default dataset, shrinks the
# model, clicks Start, and closes the window once some steps are done.
DRIVER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    app = QApplication(sys.argv[:1])
    from genstudio.app import main
    from genstudio.app.main_window import MainWindow

    stage = {"n": 0}

    def drive():
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)]
        if not windows:
            return
        w = windows[0]
        if stage["n"] == 0 and w.preview is not None:
            w.training_panel.set_values(steps=1_000_000, batch=16, sample_every=10,
                                        family_config={"base_channels": 8, "latent_dim": 4})
            w.dataset_panel.size_spin.setValue(16)
            stage["n"] = 1
        elif stage["n"] == 1 and w.preview is not None and w.preview.request.size == 16:
            w.training_panel.start_button.click()
            stage["n"] = 2
        elif stage["n"] == 2 and w.training_panel.progress.value() >= 20:
            print("RUN", w.training_panel.run_label.text().split("Run folder: ")[1].splitlines()[0])
            import gc
            print("FROZEN", gc.get_freeze_count(), "TRACKED", len(gc.get_objects()))
            from genstudio.core.runtime import memory
            print("ONE_HEAP", memory._one_heap)
            w.close()
            stage["n"] = 3

    timer = QTimer()
    timer.timeout.connect(drive)
    timer.start(50)
    QTimer.singleShot(90_000, lambda: os._exit(3))  # never hang the test suite
    sys.exit(main([]))
""")


def test_main_trains_and_closes_cleanly_with_exit_code_0(tmp_path, dataset_cache):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "GENSTUDIO_HOME": str(tmp_path / "home"),
           "GENSTUDIO_CACHE_DIR": str(dataset_cache)}
    result = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    run_line = next(line for line in result.stdout.splitlines() if line.startswith("RUN "))
    loaded = load_run(run_line[4:])
    assert loaded.step >= 20
    # main put what its imports made out of the garbage collector's reach (core/runtime/memory.py): a
    # full pass walks the window's and the run's objects, not torch's and Qt's hundreds of thousands.
    frozen, tracked = (int(v) for v in next(line for line in result.stdout.splitlines()
                                            if line.startswith("FROZEN ")).split()[1::2])
    assert frozen > 100_000 and tracked < frozen / 4, (frozen, tracked)
    # and put every thread on the main heap (glibc), which lets training reuse its big blocks
    if sys.platform.startswith("linux"):
        assert "ONE_HEAP True" in result.stdout.splitlines(), result.stdout
    assert "Traceback" not in result.stderr


def test_a_missing_display_is_one_clear_line_not_a_qt_abort():
    from genstudio.app import display_problem

    assert "no display" in display_problem({})
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) == ""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "genstudio"], env=env, capture_output=True,
                            text=True, timeout=120)
    if sys.platform.startswith("linux"):
        assert result.returncode == 1
        assert result.stderr.strip().startswith("genstudio: error: no display")
        assert "Traceback" not in result.stderr
