"""Samples of a trained model as selectable tiles; regenerate with a seed, enlarge, export.

During training it shows the latest training grid; generating and exporting are requested
through signals and done by the window in background threads."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.trained.sampling import export_stem

from .. import file_dialogs
from ..imaging import ImageDialog, PixelView, scaled_pixmap
from ..jobs import ExportRequest, Samples, SamplingPreview
from ..layout import FlowLayout, click_if_enabled, panel_shortcut, push_button
from .config_form import ConfigForm

DEFAULT_COUNT = 36
TILE_PX = 96          # tiles are enlarged by a whole factor to about this size
TILE_GAP = 10
SELECTION_WIDTH = 4
EMPTY_TEXT = "Train a model or open a run to see samples"
ALL_CLASSES = "All classes (cycling)"


class Gallery(QWidget):
    generate_requested = Signal(int, int, object, dict)  # count, seed, class index or None, sampling options
    cancel_requested = Signal()                          # stop the sampler that is running
    export_requested = Signal(object)                    # ExportRequest

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("gallery")
        self.samples: Samples | None = None
        self._run_title = ""
        self._options_class: type | None = None
        self._busy = False  # a sampler is running
        self._build()
        self.show_placeholder(EMPTY_TEXT)

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.count_spin = QSpinBox(objectName="countSpin", accessibleName="Number of samples",
                                   minimum=1, maximum=1024, value=DEFAULT_COUNT)
        self.seed_spin = QSpinBox(objectName="seedField", accessibleName="Sampling seed",
                                  minimum=0, maximum=2**31 - 1, value=0)
        self.class_combo = QComboBox(objectName="classCombo", accessibleName="Class")
        self.class_label = QLabel("Class")
        self.regenerate_button = push_button(
            "Regenerate", "regenerateButton",
            "Draw new samples with this seed (same seed → same images)",
            self.regenerate)
        self.export_selected_button = push_button(
            "Export selected…", "exportSelectedButton",
            "Save the selected tiles as PNGs",
            self.export_selected)
        self.export_all_button = push_button(
            "Export all…", "exportAllButton", "Save every tile as a PNG", self.export_all)
        self.export_grid_button = push_button(
            "Export grid…", "exportGridButton",
            "Save the tiles as one grid image",
            self.export_grid)
        self.cancel_button = push_button(
            "Cancel", "cancelSamplingButton",
            "Stop drawing these samples",
            self.cancel_requested.emit)
        self.cancel_button.setVisible(False)
        self.progress_bar = QProgressBar(objectName="samplingProgress", textVisible=True)
        self.progress_bar.setVisible(False)
        # The family's per-call sampling knobs (e.g. a diffusion sampler and its step count).
        self.options_form = ConfigForm()
        self.options_form.setObjectName("samplingOptions")
        self.options_box = QGroupBox("Sampler")
        QVBoxLayout(self.options_box).addWidget(self.options_form)
        self.options_box.setVisible(False)
        self.caption = QLabel(objectName="galleryCaption", wordWrap=True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.placeholder = PixelView(EMPTY_TEXT)
        self.training_view = PixelView()
        self.training_view.setObjectName("galleryTrainingGrid")
        self.tiles = self._build_tiles()
        self.stack = QStackedWidget()
        for page in (self.placeholder, self.training_view, self.tiles):
            self.stack.addWidget(page)
        self._lay_out()

    def _build_tiles(self) -> QListWidget:
        tiles = QListWidget(objectName="galleryTiles", accessibleName="Generated samples")
        tiles.setViewMode(QListView.ViewMode.IconMode)
        tiles.setResizeMode(QListView.ResizeMode.Adjust)
        tiles.setMovement(QListView.Movement.Static)
        tiles.setUniformItemSizes(True)
        tiles.setItemDelegate(_TileDelegate(tiles))
        tiles.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        tiles.itemDoubleClicked.connect(lambda item: self.enlarge(tiles.row(item)))
        tiles.itemSelectionChanged.connect(self._update_buttons)
        return tiles

    def _lay_out(self) -> None:
        # Groups that wrap onto a second line when the tab is narrow (a conditional model's
        # class box made one line wider than a 1,024 px screen leaves).
        top = QWidget(objectName="galleryControls")
        flow = FlowLayout(top)
        for group in ((QLabel("Samples"), self.count_spin), (QLabel("Seed"), self.seed_spin),
                      (self.class_label, self.class_combo),
                      (self.regenerate_button, self.cancel_button, self.progress_bar),
                      (self.export_selected_button, self.export_all_button, self.export_grid_button)):
            flow.addWidget(_row(*group))
        panel_shortcut(self, "Ctrl+R", self.regenerate_button)
        for spin in (self.count_spin, self.seed_spin):  # Enter in either draws with what was typed
            spin.lineEdit().returnPressed.connect(partial(click_if_enabled, self.regenerate_button))
        layout = QVBoxLayout(self)
        layout.addWidget(top)
        layout.addWidget(self.options_box)
        layout.addWidget(self.caption)
        layout.addWidget(self.stack, 1)

    # -- pages --------------------------------------------------------------------------------
    def show_placeholder(self, text: str = EMPTY_TEXT) -> None:
        self.samples = None
        self._run_title = ""
        self.placeholder.set_placeholder(text)
        self.caption.setText("")
        self.stack.setCurrentWidget(self.placeholder)
        self._set_class_names([])
        self._update_buttons()

    def show_training_grid(self, image, step: int) -> None:
        """The latest grid of a run in progress (the full gallery opens when it ends)."""
        self.samples = None
        self._run_title = ""
        self.training_view.set_image(image)
        self.caption.setText(f"Training in progress — samples at step {step:,}. "
                             "The gallery opens here when training ends.")
        self.stack.setCurrentWidget(self.training_view)
        self._update_buttons()

    def set_run(self, title: str, class_names: list[str], sample_options: Any = None) -> None:
        """A loaded run is ready; draw its first samples. `sample_options` is the model's
        SampleOptions (its family's sampling_defaults()), shown as a form; None: the family
        has no sampling knobs."""
        self._run_title = title
        self._set_class_names(class_names)
        options_class = None if sample_options is None else type(sample_options)
        if options_class is not self._options_class:
            self._options_class = options_class
            self.options_form.set_config_class(options_class)
        if sample_options is not None:  # this run's values, even when the form stayed
            self.options_form.set_values(dataclasses.asdict(sample_options))
        self.options_form.set_conditional(bool(class_names))
        self.options_box.setVisible(sample_options is not None)
        self.regenerate()

    def show_generating(self) -> None:
        self.caption.setText(f"{self._run_title} — generating…")
        self._set_busy(True)

    def show_sampling_progress(self, preview: SamplingPreview) -> None:
        """A slow sampler's progress: step k of T and, when it has one, the current chain."""
        self.progress_bar.setRange(0, preview.total)
        self.progress_bar.setValue(preview.step)
        self.progress_bar.setFormat("step %v of %m")
        if preview.grid is not None:
            self.training_view.set_image(preview.grid)
            self.stack.setCurrentWidget(self.training_view)
        self.caption.setText(f"{self._run_title} — sampling, step {preview.step:,} of {preview.total:,}…")

    def show_cancelled(self) -> None:
        self._set_busy(False)
        self.caption.setText(f"{self._run_title} — sampling cancelled.")
        self.stack.setCurrentWidget(self.tiles if self.samples is not None else self.placeholder)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.cancel_button.setVisible(busy)
        self.progress_bar.setVisible(busy)
        self.progress_bar.setRange(0, 0)  # busy until the sampler reports steps
        self._update_buttons()

    def show_samples(self, samples: Samples) -> None:
        self._set_busy(False)
        self.samples = samples
        self.tiles.clear()
        size = samples.images.shape[1]
        scale = max(1, round(TILE_PX / size))
        self.tiles.setIconSize(QSize(size * scale, size * scale))
        self.tiles.setGridSize(QSize(size * scale + TILE_GAP, size * scale + TILE_GAP))
        for index, image in enumerate(samples.tiles):
            item = QListWidgetItem(QIcon(scaled_pixmap(image, scale)), "")
            item.setToolTip(f"sample {index} · seed {samples.seed}")
            self.tiles.addItem(item)
        label = "" if samples.label is None else f" · class {self.class_combo.currentText()}"
        self.caption.setText(f"{self._run_title} · {len(samples.images)} samples · "
                             f"seed {samples.seed}{label}. Double-click a tile to enlarge it.")
        self.stack.setCurrentWidget(self.tiles)
        self._update_buttons()

    def show_error(self, message: str) -> None:
        self._set_busy(False)
        self.caption.setText(f"<span style='color:#c62828'>{message}</span>")

    def _set_class_names(self, names: list[str]) -> None:
        self.class_combo.clear()
        if names:
            self.class_combo.addItem(ALL_CLASSES, None)
            for index, name in enumerate(names):
                self.class_combo.addItem(name, index)
        self.class_combo.setVisible(bool(names))
        self.class_label.setVisible(bool(names))

    def _update_buttons(self) -> None:
        has_run = bool(self._run_title)
        has_samples = self.samples is not None
        self.regenerate_button.setEnabled(has_run and not self._busy)
        self.export_selected_button.setEnabled(has_samples and bool(self.selected_indices()))
        self.export_all_button.setEnabled(has_samples)
        self.export_grid_button.setEnabled(has_samples)

    # -- intents --------------------------------------------------------------------------
    def regenerate(self) -> None:
        if not self._run_title:
            return
        invalid = self.options_form.invalid_fields()
        if invalid:
            self.show_error(f"Fix the sampler option(s): {', '.join(invalid)}")
            return
        self.show_generating()
        options = self.options_form.values() if self._options_class is not None else {}
        self.generate_requested.emit(self.count_spin.value(), self.seed_spin.value(),
                                     self.class_combo.currentData(), options)

    def selected_indices(self) -> list[int]:
        return sorted(self.tiles.row(item) for item in self.tiles.selectedItems())

    def export_selected(self, target: str | None = None) -> None:
        self._export("selected", target, self.selected_indices())

    def export_all(self, target: str | None = None) -> None:
        self._export("all", target, None)

    def export_grid(self, target: str | None = None) -> None:
        # The grid holds the selection when there is one, else every tile.
        self._export("grid", target, self.selected_indices() or None)

    def _export(self, kind: str, target: str | None, indices: list[int] | None) -> None:
        if self.samples is None or indices == []:
            return
        target = target or (self.ask_grid_file() if kind == "grid" else self.ask_folder())
        if target:
            self.export_requested.emit(ExportRequest(kind, str(target), self.samples, indices))

    def ask_folder(self) -> str:
        """The export folder dialog; tests replace this method to bypass it."""
        return file_dialogs.choose_folder(self, "Export samples to folder")

    def ask_grid_file(self) -> str:
        """The grid file dialog; tests replace this method to bypass it."""
        name = f"{export_stem(self.samples.loaded, self.samples.seed)}-grid.png" if self.samples else "grid.png"
        return file_dialogs.save_file(self, "Export grid", name, "PNG images (*.png)")

    def enlarge(self, row: int) -> ImageDialog | None:
        if self.samples is None or not 0 <= row < len(self.samples.tiles):
            return None
        dialog = ImageDialog(self.samples.tiles[row], f"Sample {row}",
                             f"{self._run_title} · sample {row} · seed {self.samples.seed}", self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog


class _TileDelegate(QStyledItemDelegate):
    """Draws a tile as its image alone, framed in the highlight colour when selected (the
    default icon-mode look tints the pixels and adds an empty caption bar)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        icon: QIcon = index.data(Qt.ItemDataRole.DecorationRole)
        size = option.decorationSize
        rect = QRect(option.rect.center().x() - size.width() // 2,
                     option.rect.center().y() - size.height() // 2, size.width(), size.height())
        painter.drawPixmap(rect, icon.pixmap(size))
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(QPen(option.palette.highlight().color(), SELECTION_WIDTH))
            half = SELECTION_WIDTH // 2
            painter.drawRect(rect.adjusted(-half, -half, half, half))

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802 - Qt API
        return option.decorationSize + QSize(TILE_GAP, TILE_GAP)


def _row(*widgets: QWidget) -> QWidget:
    """Widgets side by side that wrap as one."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return row
