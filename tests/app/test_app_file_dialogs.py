"""File dialogs open where a person expects: the folder last used for that kind of file, else
the runs folder for runs and the pictures or home folder for the rest (not the folder the app
was started from)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QFileDialog

from genstudio.app import file_dialogs
from genstudio.core.runs.paths import runs_dir


@pytest.fixture(autouse=True)
def nothing_used_yet(monkeypatch):
    monkeypatch.setattr(file_dialogs, "_last_used", {})


def answer_dialog(choose: Path, opened_in: list[str]) -> None:
    """When the next modal dialog is up: note the folder it opened in, then pick `choose`."""
    def answer():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(50, answer)
            return
        opened_in.append(dialog.directory().absolutePath())
        dialog.setDirectory(str(choose))
        dialog.accept()
    QTimer.singleShot(50, answer)


def test_run_dialogs_start_in_the_runs_folder_and_others_in_pictures_or_home(tmp_path, monkeypatch):
    runs_dir().mkdir(parents=True)
    assert file_dialogs.start_folder(file_dialogs.RUNS) == runs_dir()
    assert file_dialogs.start_folder(file_dialogs.FILES) in (Path.home(), Path.home() / "Pictures")
    monkeypatch.chdir(tmp_path)  # where the app was started: never the answer
    assert file_dialogs.start_folder(file_dialogs.FILES) != tmp_path


def test_the_next_dialog_opens_where_the_last_one_of_its_kind_left_off(qtbot, window, tmp_path):
    pictures, exports = tmp_path / "pictures", tmp_path / "exports"
    for folder in (pictures, exports, runs_dir()):
        folder.mkdir(parents=True, exist_ok=True)
    opened_in: list[str] = []
    answer_dialog(exports, opened_in)
    assert window.gallery.ask_folder() == str(exports)
    answer_dialog(pictures, opened_in)
    assert window.dataset_panel.ask_folder() == str(pictures)  # another kind of file, same memory
    answer_dialog(tmp_path, opened_in)
    assert window.ask_run_folder() == str(tmp_path)
    assert opened_in[1] == str(exports) and opened_in[2] == str(runs_dir())
    # A run folder's parent is remembered: that is where the other runs are.
    assert file_dialogs.start_folder(file_dialogs.RUNS) == tmp_path.parent
    gone = tmp_path / "gone"
    file_dialogs.remember(file_dialogs.FILES, gone)  # a folder deleted since: not offered
    assert file_dialogs.start_folder(file_dialogs.FILES) != gone
