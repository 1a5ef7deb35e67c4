"""The app's file dialogs, each starting where a person expects it to: the folder last used for
that kind of file in this session, else the runs folder for runs and the pictures (or home)
folder for everything else. Qt's own default is the folder the app was launched from."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QFileDialog, QWidget

from genstudio.core.runs.paths import runs_dir

RUNS, FILES = "runs", "files"  # run folders; images, exports, weights and everything else

_last_used: dict[str, Path] = {}


def start_folder(kind: str) -> Path:
    """Where a dialog for `kind` opens."""
    last = _last_used.get(kind)
    if last is not None and last.is_dir():
        return last
    if kind == RUNS and runs_dir().is_dir():
        return runs_dir()
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return Path(pictures) if pictures and Path(pictures).is_dir() else Path.home()


def remember(kind: str, folder: str | Path) -> None:
    """The next dialog for `kind` opens in `folder`."""
    _last_used[kind] = Path(folder)


def choose_folder(parent: QWidget, title: str, kind: str = FILES) -> str:
    path = QFileDialog.getExistingDirectory(parent, title, str(start_folder(kind)))
    if path:
        # A run folder's parent holds the other runs; an export folder is used again as it is.
        remember(kind, Path(path).parent if kind == RUNS else path)
    return path


def open_file(parent: QWidget, title: str, filters: str, kind: str = FILES) -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, str(start_folder(kind)), filters)
    if path:
        remember(kind, Path(path).parent)
    return path


def save_file(parent: QWidget, title: str, name: str, filters: str, kind: str = FILES) -> str:
    """A save dialog proposing `name`; Qt asks before replacing an existing file."""
    path, _ = QFileDialog.getSaveFileName(parent, title, str(start_folder(kind) / name), filters)
    if path:
        remember(kind, Path(path).parent)
    return path
