"""What the window remembers between launches (its size, splitters, family, dataset, the
Gallery's seed and count, Compare's ticks, the run open, recent runs) and its Help menu."""

from __future__ import annotations

from app_helpers import close_and_delete, wait_for_dataset
from PySide6.QtWidgets import QSplitter

from genstudio.app.main_window import MainWindow
from genstudio.app.remembered import load_remembered, remembered_path


def relaunch(qtbot, window) -> MainWindow:
    close_and_delete(qtbot, window)
    again = MainWindow()
    again.show()
    return again


def test_a_relaunch_restores_the_choices_the_layout_and_the_gallery(qtbot, window):
    window.resize(1160, 690)  # the narrowest it goes; the offscreen screen (800 px) clamps any wider one
    window.family_picker.select("gan")
    window.dataset_panel.set_request("builtin:tins", 12, None)
    window.gallery.seed_spin.setValue(123)
    window.gallery.count_spin.setValue(9)
    splitter = window.findChild(QSplitter, "curvesSplitter")  # the others are at their minimum widths
    splitter.setSizes([500, 100])
    sizes = splitter.sizes()
    assert sizes[0] > 400  # the default gives the curves 326 px
    window.tabs.setCurrentWidget(window.gallery)
    again = relaunch(qtbot, window)
    try:
        assert again.height() == 690
        assert again.family_picker.current() == "gan"
        wait_for_dataset(qtbot, again, lambda p: p.request.source == "builtin:tins" and p.request.size == 12)
        assert (again.gallery.seed_spin.value(), again.gallery.count_spin.value()) == (123, 9)
        assert again.tabs.currentWidget() is again.gallery
        again.tabs.setCurrentIndex(0)  # the curves' splitter is laid out once its tab shows
        qtbot.waitUntil(lambda: again.findChild(QSplitter, "curvesSplitter").sizes() == sizes, timeout=5_000)
    finally:
        close_and_delete(qtbot, again)


def test_a_relaunch_opens_the_run_that_was_open_with_its_own_settings(qtbot, window, trained_run):
    window.ask_run_folder = lambda: str(trained_run)
    with qtbot.waitSignal(window.sample_jobs.succeeded, timeout=30_000):
        window.open_action.trigger()
    assert load_remembered().open_run == ""  # written when the window closes
    again = relaunch(qtbot, window)
    try:
        assert load_remembered().open_run == str(trained_run)
        qtbot.waitUntil(lambda: again.loaded is not None and again.loaded.run.path == trained_run, timeout=30_000)
        # The run open shows its own family and data (it wins over the choices remembered).
        assert again.family_picker.current() == "vae"
        assert again.dataset_panel.request().source == "builtin:shapes"
        recent = [action.text() for action in again.recent_menu.actions()]
        assert recent == [trained_run.name] and again.recent_menu.isEnabled()
    finally:
        close_and_delete(qtbot, again)


def test_a_damaged_state_file_means_a_first_launch(qtbot, tmp_path):
    remembered_path().parent.mkdir(parents=True, exist_ok=True)
    remembered_path().write_text('{"family": 7, "gallery_seed": "x", "geometry": "zz"', encoding="utf-8")
    assert load_remembered().family == ""
    remembered_path().write_text('{"family": 7, "gallery_seed": 5}', encoding="utf-8")
    kept = load_remembered()
    assert (kept.family, kept.gallery_seed) == ("", 5)  # the field of the wrong type alone is dropped
    win = MainWindow()
    win.show()
    try:
        assert win.family_picker.current() == "vae" and win.gallery.seed_spin.value() == 5
    finally:
        close_and_delete(qtbot, win)


def test_help_lists_every_shortcut_and_says_which_version_runs(qtbot, window):
    shortcuts = window.keyboard_shortcuts()
    assert ("Window", "Open run", "Ctrl+O") in shortcuts
    assert ("Gallery", "Regenerate", "Ctrl+R") in shortcuts
    assert ("Explore", "Interpolate", "Ctrl+I") in shortcuts
    assert ("Inpaint", "Undo", "Ctrl+Z") in shortcuts
    assert all(what and keys for _where, what, keys in shortcuts)
    box = window.show_shortcuts()
    assert "Ctrl+Shift+E" in box.text()
    box.close()
    from genstudio import __version__

    about = window.show_about()
    assert f"genstudio {__version__}" in about.text()
    about.close()
