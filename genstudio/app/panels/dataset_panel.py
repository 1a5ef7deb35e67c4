"""Choose the training data (a built-in or a folder) and see what was loaded: count, classes,
thumbnails and every skipped file with its reason. Loading itself is the window's job."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.data import BUILTIN_DATASETS, SkippedFile
from genstudio.core.runs.paths import data_home

from .. import file_dialogs
from ..imaging import PixelView
from ..jobs import DatasetPreview, DatasetRequest

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "builtin:shapes"
CHANNEL_CHOICES = (("Auto", None), ("Grey", 1), ("RGB", 3))
MAX_RECENT = 8
RELOAD_DELAY_MS = 300  # spinning the size box should not start a load per click
ERROR_STYLE = "color: #c62828;"
WARNING_STYLE = "color: #b26a00;"


class DatasetPanel(QWidget):
    load_requested = Signal(object)  # DatasetRequest

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("datasetPanel")
        self._reload_timer = QTimer(self, singleShot=True, interval=RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.request_load)
        self._build()
        self._fill_sources()
        self.source_combo.currentIndexChanged.connect(self.request_load)
        self.channels_combo.currentIndexChanged.connect(self.request_load)
        self.size_spin.valueChanged.connect(self._reload_timer.start)
        self.folder_button.clicked.connect(self._on_folder_clicked)

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.source_combo = QComboBox(objectName="sourceCombo", accessibleName="Dataset source")
        self.source_combo.setMinimumContentsLength(12)
        self.source_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.folder_button = QPushButton("Folder…", objectName="folderButton",
                                         accessibleName="Choose an image folder")
        self.folder_button.setToolTip("Train on a folder of images; its subfolders become classes")
        self.size_spin = QSpinBox(objectName="sizeSpin", accessibleName="Image size",
                                  minimum=8, maximum=128, value=32, suffix=" px")
        self.channels_combo = QComboBox(objectName="channelsCombo", accessibleName="Channels")
        for text, value in CHANNEL_CHOICES:
            self.channels_combo.addItem(text, value)
        self.progress = QProgressBar(objectName="datasetProgress", accessibleName="Loading progress")
        self.progress.setFormat("loading %v / %m")
        self.progress.hide()
        self.info = _label("datasetInfo")
        self.classes = _label("datasetClasses")
        self.thumbnails = PixelView()
        self.thumbnails.setObjectName("datasetThumbnails")
        self.thumbnails.setAccessibleName("Dataset thumbnails")
        self.thumbnails.setFixedHeight(112)
        self.skipped_label = _label("skippedLabel", WARNING_STYLE)
        self.skipped_list = QListWidget(objectName="skippedList", accessibleName="Skipped files")
        self.skipped_list.setMaximumHeight(110)
        self.skipped_list.setWordWrap(True)  # long paths wrap instead of hiding the reason
        self.skipped_list.setAlternatingRowColors(True)
        self.skipped_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.error = _label("datasetError", ERROR_STYLE)
        self._lay_out()

    def _lay_out(self) -> None:
        source_row = QHBoxLayout()
        source_row.addWidget(self.source_combo, 1)
        source_row.addWidget(self.folder_button)
        options = QFormLayout()
        options.addRow("Image size", self.size_spin)
        options.addRow("Channels", self.channels_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(source_row)
        layout.addLayout(options)
        for widget in (self.progress, self.error, self.info, self.classes, self.thumbnails,
                       self.skipped_label, self.skipped_list):
            layout.addWidget(widget)
        self._show_details(False)

    def _fill_sources(self) -> None:
        self.source_combo.blockSignals(True)
        for name in sorted(BUILTIN_DATASETS, key=lambda n: f"builtin:{n}" != DEFAULT_SOURCE):
            self.source_combo.addItem(f"{name.capitalize()} (built-in)", f"builtin:{name}")
            self.source_combo.setItemData(self.source_combo.count() - 1, BUILTIN_DATASETS[name],
                                          Qt.ItemDataRole.ToolTipRole)
        for folder in _read_recent():
            self._add_folder_item(folder)
        self.source_combo.setCurrentIndex(0)
        self.source_combo.blockSignals(False)

    # -- what the user asked for ------------------------------------------------------------
    def request(self) -> DatasetRequest:
        return DatasetRequest(self.source_combo.currentData(), self.size_spin.value(),
                              self.channels_combo.currentData())

    def set_request(self, source: str, size: int, channels: int | None) -> None:
        """Show this source, size and channel setting without loading it (restoring the last
        launch; the caller loads once). A folder that no longer exists is left out."""
        index = self.source_combo.findData(source)
        if index < 0 and not source.startswith("builtin:") and Path(source).is_dir():
            index = self._add_folder_item(source)
        for widget in (self.source_combo, self.size_spin, self.channels_combo):
            widget.blockSignals(True)
        if index >= 0:
            self.source_combo.setCurrentIndex(index)
        self.size_spin.setValue(size)
        channel_index = self.channels_combo.findData(channels)
        if channel_index >= 0:
            self.channels_combo.setCurrentIndex(channel_index)
        for widget in (self.source_combo, self.size_spin, self.channels_combo):
            widget.blockSignals(False)

    def request_load(self) -> None:
        self._reload_timer.stop()
        self.load_requested.emit(self.request())

    def ask_folder(self) -> str:
        """The folder dialog; tests replace this method to bypass it."""
        return file_dialogs.choose_folder(self, "Choose a folder of images")

    def _on_folder_clicked(self) -> None:
        path = self.ask_folder()
        if path:
            self.choose_folder(path)

    def choose_folder(self, path: str) -> None:
        """Select a folder as the source (added to the recent list) and load it."""
        path = str(Path(path).expanduser().absolute())
        index = self.source_combo.findData(path)
        if index < 0:
            index = self._add_folder_item(path)
        _write_recent(self._recent_folders())
        if index == self.source_combo.currentIndex():
            self.request_load()
        else:
            self.source_combo.setCurrentIndex(index)  # emits → request_load

    def _add_folder_item(self, path: str) -> int:
        self.source_combo.addItem(Path(path).name or path, path)
        index = self.source_combo.count() - 1
        self.source_combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        return index

    def _recent_folders(self) -> list[str]:
        folders = [self.source_combo.itemData(i) for i in range(self.source_combo.count())]
        return [f for f in folders if not f.startswith("builtin:")][-MAX_RECENT:]

    # -- what was loaded ----------------------------------------------------------------------
    def show_loading(self, done: int = 0, total: int = 0) -> None:
        self.error.hide()
        self.progress.setRange(0, max(total, 0))  # (0, 0): a busy indicator until totals arrive
        self.progress.setValue(done)
        self.progress.show()

    def show_preview(self, preview: DatasetPreview) -> None:
        dataset = preview.dataset
        self.progress.hide()
        self.error.hide()
        colour = "RGB" if dataset.channels == 3 else "greyscale"
        self.info.setText(f"<b>{len(dataset):,} images</b> · {dataset.size}×{dataset.size} {colour}")
        self.classes.setText(_describe_classes(preview.class_counts))
        self.thumbnails.set_image(preview.thumbnails)
        self._show_skipped(dataset.skipped, dataset.skipped_summary())
        self._show_details(True)

    def show_error(self, message: str) -> None:
        self.progress.hide()
        self._show_details(False)
        self.error.setText(message)
        self.error.show()

    def _show_skipped(self, skipped: list[SkippedFile], summary: str) -> None:
        self.skipped_list.clear()
        for record in skipped:
            self.skipped_list.addItem(f"{record.path} — {record.reason}")
            self.skipped_list.item(self.skipped_list.count() - 1).setToolTip(
                f"{record.path}\n{record.reason}")
        noun = "file" if len(skipped) == 1 else "files"
        self.skipped_label.setText(f"{len(skipped)} {noun} skipped" if skipped else "")
        self.skipped_label.setToolTip(summary)

    def _show_details(self, visible: bool) -> None:
        for widget in (self.info, self.classes, self.thumbnails):
            widget.setVisible(visible)
        has_skipped = visible and self.skipped_list.count() > 0
        self.skipped_label.setVisible(has_skipped)
        self.skipped_list.setVisible(has_skipped)


def _label(name: str, style: str = "") -> QLabel:
    label = QLabel(objectName=name, wordWrap=True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if style:
        label.setStyleSheet(style)
    return label


def _describe_classes(counts: list[tuple[str, int]]) -> str:
    if not counts:
        return "No classes (no subfolders)"
    shown = ", ".join(f"{name} ({count:,})" for name, count in counts[:12])
    more = f", … {len(counts) - 12} more" if len(counts) > 12 else ""
    return f"{len(counts)} classes: {shown}{more}"


# Recently chosen folders live beside the runs, so GENSTUDIO_HOME moves them too.
def _recent_path() -> Path:
    return data_home() / "recent_folders.json"


def _read_recent() -> list[str]:
    try:
        folders = json.loads(_recent_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [f for f in folders if isinstance(f, str)][-MAX_RECENT:]


def _write_recent(folders: list[str]) -> None:
    try:
        _recent_path().parent.mkdir(parents=True, exist_ok=True)
        _recent_path().write_text(json.dumps(folders, indent=1), encoding="utf-8")
    except OSError as exc:  # the message says enough; a traceback's formatting parses source
        log.warning("could not remember recent folders in %s: %s", _recent_path(), exc)
