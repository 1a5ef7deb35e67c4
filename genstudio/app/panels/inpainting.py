"""The Inpaint tab: load an image (training set, gallery or file), paint what to replace, let the
run's model fill it, pick among seeded candidates, compare families on the same hole, export.

The panel holds the state (the image being worked on, the mask's history, the last fill); every
fill, comparison, file read and export is a job on a background thread that calls core
(genstudio.core.trained.inpainting). Known pixels are copied back from the input there, so what is kept
is kept exactly, whatever the family does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.data import ImageDataset, load_image
from genstudio.core.families import Capability
from genstudio.core.runs.run import LoadedRun
from genstudio.core.trained.inpainting import InpaintSession, fit_to_model, load_mask
from genstudio.core.trained.masks import MaskHistory

from .. import file_dialogs, jobs
from ..imaging import PixelView, to_qimage
from ..layout import push_button
from ..workers import Job, TaskRunner
from .mask_canvas import BRUSH, ERASER, RECTANGLE, ZOOM_STEP, MaskCanvas
from .run_panel import RunToolPanel

CONTROLS_WIDTH = 300
TILE = 96                # candidate and comparison tiles, in screen pixels
DEFAULT_CANDIDATES = 4
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff)"


def read_image_file(path: str, size: int, channels: int, job: Job) -> tuple[np.ndarray, str]:
    return load_image(path, size, channels), Path(path).name


def read_mask_file(path: str, size: int, job: Job) -> np.ndarray:
    return load_mask(path, size)



COMPARE_TIP = "This run and every ticked run fill the same hole with the same seed, side by side"

class InpaintPanel(RunToolPanel):

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loaded: LoadedRun | None = None
        self.session = InpaintSession()  # the picture, its mask and history, the last fill
        self.compared: list[jobs.ComparedFill] = []
        self._compared_input: tuple[np.ndarray, np.ndarray, int] | None = None
        self.dataset: ImageDataset | None = None
        self._pending_index: int | None = None     # training image to show once the set is loaded
        # Replaceable in tests: file dialogs, the gallery's selection, the device for other runs.
        self.ask_open_image: Callable[[], str] = self._ask_open_image
        self.ask_save_path: Callable[[str], str] = self._ask_save_path
        self.ask_run_folder: Callable[[], str] = self._ask_run_folder
        self.gallery_images: Callable[[], list[np.ndarray]] = lambda: []
        self.device: Callable[[], str] = lambda: "auto"
        self.suggested_runs: Callable[[], list[str]] = lambda: []  # e.g. the runs ticked under Compare
        self.fill_jobs, self.compare_jobs, self.image_jobs, self.mask_jobs, self.data_jobs, self.export_jobs = (
            TaskRunner(self) for _ in range(6))
        self.runners = (self.fill_jobs, self.compare_jobs, self.image_jobs, self.mask_jobs, self.data_jobs,
                        self.export_jobs)
        self._build()
        self._connect()
        self.show_unavailable("Open a run (File → Open run…) or train one to inpaint with it.")

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.caption = QLabel(objectName="inpaintCaption", wordWrap=True)
        self.canvas = MaskCanvas()
        self.canvas_label = QLabel(objectName="canvasInfo")
        self.original_view = PixelView("The original")
        self.original_view.setObjectName("inpaintOriginal")
        self.result_view = PixelView("The fill appears here")
        self.result_view.setObjectName("inpaintResult")
        self.result_label = QLabel(objectName="resultCaption", wordWrap=True)

        canvas_box = QGroupBox("Paint what to fill")
        canvas_layout = QVBoxLayout(canvas_box)
        canvas_layout.addWidget(self.canvas, 1)
        canvas_layout.addWidget(self.canvas_label)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        for title, view in (("Original", self.original_view), ("Result", self.result_view)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(view)
            side_layout.addWidget(box, 1)
        side_layout.addWidget(self.result_label)

        self.lay_out(self.caption, self._controls(), CONTROLS_WIDTH, canvas_box, side, self._strips(),
                     shares=(2, 1), top_sizes=None, body_sizes=[600, 190])

    def _controls(self) -> QWidget:
        column = QWidget()
        layout = QVBoxLayout(column)

        source = QGroupBox("Image")
        grid = QGridLayout(source)
        self.dataset_spin = QSpinBox(objectName="inpaintDatasetIndex", accessibleName="Training image number")
        self.dataset_spin.setRange(0, 2**31 - 1)
        self.dataset_button = push_button("Training image", "inpaintFromDataset",
                                          "Paint on this image of the run's training set",
                                          self.use_dataset_image)
        self.gallery_button = push_button("Gallery selection", "inpaintFromGallery",
                                          "Paint on the tile selected in the gallery", self.use_gallery_tile)
        self.file_button = push_button("Image file…", "inpaintFromFile",
                                       "Open an image file (centre-cropped and scaled to the model's size)",
                                       self.use_file)
        self.back_button = push_button("Back", "inpaintBack", "Return to the image before the last "
                                       "“Continue from this”", self.back)
        self.revert_button = push_button("Original", "inpaintRevert", "Return to the image as it was loaded",
                                         self.revert)
        grid.addWidget(self.dataset_button, 0, 0)
        grid.addWidget(self.dataset_spin, 0, 1)
        grid.addWidget(self.gallery_button, 1, 0)
        grid.addWidget(self.file_button, 1, 1)
        grid.addWidget(self.back_button, 2, 0)
        grid.addWidget(self.revert_button, 2, 1)
        layout.addWidget(source)

        mask = QGroupBox("Mask")
        grid = QGridLayout(mask)
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QPushButton] = {}
        for column_index, (tool, text, key) in enumerate(((BRUSH, "Brush", "B"), (ERASER, "Eraser", "E"),
                                                          (RECTANGLE, "Rectangle", "R"))):
            button = push_button(text, f"tool{text}", f"{text} ({key})")
            button.setCheckable(True)
            self.tool_group.addButton(button)
            self.tool_buttons[tool] = button
            grid.addWidget(button, 0, column_index)
            self._shortcut(key, partial(self.set_tool, tool), text)
        self.tool_buttons[BRUSH].setChecked(True)
        self.size_spin = QSpinBox(objectName="brushRadius", accessibleName="Brush radius")
        self.size_spin.setRange(1, 64)
        self.size_spin.setValue(2)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Brush and eraser radius in the model's pixels ([ smaller, ] larger)")
        grid.addWidget(QLabel("Radius"), 1, 0)
        grid.addWidget(self.size_spin, 1, 1, 1, 2)
        self.invert_button = push_button("Invert", "maskInvert", "Fill what was kept and keep what was "
                                         "to be filled (I)", self.invert)
        self.clear_button = push_button("Clear", "maskClear", "Keep every pixel (Delete)", self.clear_mask)
        self.mask_file_button = push_button("Mask file…", "maskFromFile",
                                            "Load a mask image (white = fill, black = keep)", self.use_mask_file)
        self.undo_button = push_button("Undo", "maskUndo", "Undo the last mask edit (Ctrl+Z)", self.undo)
        self.redo_button = push_button("Redo", "maskRedo", "Redo (Ctrl+Shift+Z)", self.redo)
        self.fit_button = push_button("Fit", "canvasFit", "Fit the image in the canvas (F); "
                                      "wheel or +/− zoom, right drag pans", self.canvas.fit)
        grid.addWidget(self.invert_button, 2, 0)
        grid.addWidget(self.clear_button, 2, 1)
        grid.addWidget(self.mask_file_button, 2, 2)
        grid.addWidget(self.undo_button, 3, 0)
        grid.addWidget(self.redo_button, 3, 1)
        grid.addWidget(self.fit_button, 3, 2)
        self.overlay_check = QCheckBox("Show the mask (O)", objectName="maskOverlay", checked=True)
        grid.addWidget(self.overlay_check, 4, 0, 1, 3)
        layout.addWidget(mask)

        fill = QGroupBox("Fill")
        grid = QGridLayout(fill)
        self.method_label = QLabel(objectName="inpaintMethod", wordWrap=True)
        self.class_label = QLabel("Class")
        self.class_combo = QComboBox(objectName="inpaintClass", accessibleName="Class")
        self.count_spin = QSpinBox(objectName="candidateCount", accessibleName="Candidates")
        self.count_spin.setRange(1, 16)
        self.count_spin.setValue(DEFAULT_CANDIDATES)
        self.seed_spin = QSpinBox(objectName="inpaintSeed", accessibleName="Seed")
        self.seed_spin.setRange(0, 2**31 - 1 - 16)
        self.fill_button = push_button("Fill", "inpaintFill", "Fill the painted region (Ctrl+F); "
                                       "candidate k uses seed + k", self.start_fill)
        self.cancel_button = push_button("Cancel", "inpaintCancel", "Stop the fill (Esc)", self.cancel_fill)
        self.progress = QProgressBar(objectName="inpaintProgress")
        self.progress.setVisible(False)
        grid.addWidget(self.method_label, 0, 0, 1, 2)
        grid.addWidget(self.class_label, 1, 0)
        grid.addWidget(self.class_combo, 1, 1)
        grid.addWidget(QLabel("Candidates"), 2, 0)
        grid.addWidget(self.count_spin, 2, 1)
        grid.addWidget(QLabel("Seed"), 3, 0)
        grid.addWidget(self.seed_spin, 3, 1)
        grid.addWidget(self.fill_button, 4, 0)
        grid.addWidget(self.cancel_button, 4, 1)
        grid.addWidget(self.progress, 5, 0, 1, 2)
        layout.addWidget(fill)

        compare = QGroupBox("Compare families")
        box = QVBoxLayout(compare)
        self.run_list = QListWidget(objectName="compareRuns")
        self.run_list.setToolTip("Runs that fill the same hole beside this one (ticked ones)")
        self.run_list.setMaximumHeight(110)
        buttons = QHBoxLayout()
        self.add_run_button = push_button("Add run…", "compareAddRun", "Add a run folder to compare",
                                          self.ask_add_run)
        self.compare_button = push_button("Fill with each", "compareFill", COMPARE_TIP, self.start_compare)
        self.run_list.itemChanged.connect(self._update_buttons)  # a tick enables Fill with each
        buttons.addWidget(self.add_run_button)
        buttons.addWidget(self.compare_button)
        box.addWidget(self.run_list)
        box.addLayout(buttons)
        layout.addWidget(compare)

        export = QGroupBox("Export")
        grid = QGridLayout(export)
        self.scale_spin = QSpinBox(objectName="inpaintScale", accessibleName="Export scale")
        self.scale_spin.setRange(1, 16)
        self.scale_spin.setPrefix("× ")
        self.export_button = push_button("Result…", "inpaintExport", "Save the selected candidate, "
                                         "its mask and a before/after strip (PNG with provenance)",
                                         self.export_result)
        self.export_compare_button = push_button("Comparison…", "inpaintExportComparison",
                                                 "Save the families' fills side by side",
                                                 self.export_comparison)
        grid.addWidget(QLabel("Scale"), 0, 0)
        grid.addWidget(self.scale_spin, 0, 1)
        grid.addWidget(self.export_button, 1, 0)
        grid.addWidget(self.export_compare_button, 1, 1)
        layout.addWidget(export)
        layout.addStretch(1)

        for keys, slot, what in (
                ("[", lambda: self.size_spin.stepBy(-1), "Smaller brush"),
                ("]", lambda: self.size_spin.stepBy(1), "Larger brush"),
                ("I", self.invert, "Invert the mask"), ("Delete", self.clear_mask, "Clear the mask"),
                ("Ctrl+Z", self.undo, "Undo"), ("Ctrl+Shift+Z", self.redo, "Redo"), ("Ctrl+Y", self.redo, "Redo"),
                ("F", self.canvas.fit, "Fit the image to the view"), ("O", self.overlay_check.toggle, "Mask overlay"),
                ("+", partial(self.canvas.zoom_by, ZOOM_STEP), "Zoom in"),
                ("=", partial(self.canvas.zoom_by, ZOOM_STEP), "Zoom in"),
                ("-", partial(self.canvas.zoom_by, 1 / ZOOM_STEP), "Zoom out"),
                ("Ctrl+F", self.start_fill, "Fill"), ("Escape", self.cancel_fill, "Cancel the fill")):
            self._shortcut(keys, slot, what)
        return column

    def _strips(self) -> QWidget:
        self.candidate_list = _tile_list("candidateStrip")
        self.continue_button = push_button("Continue from this", "inpaintContinue",
                                           "Paint and fill again on the selected candidate", self.continue_from)
        self.compare_list = _tile_list("comparisonStrip")
        self.compare_label = QLabel(objectName="comparisonCaption", wordWrap=True)
        strips = QWidget()
        layout = QGridLayout(strips)
        layout.addWidget(QLabel("Candidates"), 0, 0)
        layout.addWidget(self.continue_button, 0, 1, Qt.AlignmentFlag.AlignRight)
        layout.addWidget(self.candidate_list, 1, 0, 1, 2)
        layout.addWidget(QLabel("Families side by side"), 0, 2)
        layout.addWidget(self.compare_label, 0, 3)
        layout.addWidget(self.compare_list, 1, 2, 1, 2)
        layout.setColumnStretch(0, 1)
        layout.setColumnStretch(3, 1)
        return strips

    def _shortcut(self, keys: str, slot: Callable[[], object], what: str) -> None:
        shortcut = QShortcut(QKeySequence(keys), self)
        shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        shortcut.setWhatsThis(what)  # Help → Keyboard shortcuts lists it
        shortcut.activated.connect(lambda: slot())

    def _connect(self) -> None:
        self.canvas.mask_changed.connect(self._on_mask_changed)
        self.canvas.pointer_moved.connect(self._on_pointer)
        self.size_spin.valueChanged.connect(lambda r: self.canvas.set_radius(float(r)))
        self.overlay_check.toggled.connect(self.canvas.set_overlay_visible)
        self.candidate_list.currentRowChanged.connect(self._show_candidate)
        self.image_jobs.succeeded.connect(lambda loaded: self.set_image(*loaded))
        self.mask_jobs.succeeded.connect(self._on_mask_read)
        for runner in (self.image_jobs, self.mask_jobs):
            runner.failed.connect(lambda cause, _d: self._fail(cause))
        self.data_jobs.succeeded.connect(self._on_dataset_loaded)
        self.data_jobs.failed.connect(lambda cause, _d: self._fail(f"Could not load the training images: {cause}"))
        self.data_jobs.message.connect(self._say)
        self.fill_jobs.preview.connect(self._on_fill_preview)
        self.fill_jobs.succeeded.connect(self._on_filled)
        self.fill_jobs.failed.connect(lambda cause, _d: self._fail(f"The fill failed: {cause}"))
        self.compare_jobs.progress.connect(self._on_progress)
        self.compare_jobs.message.connect(lambda text: self.compare_label.setText(f"Filling with {text}…"))
        self.compare_jobs.preview.connect(self._on_compared_one)
        self.compare_jobs.succeeded.connect(self._on_compared)
        self.compare_jobs.failed.connect(lambda cause, _d: self._fail(f"The comparison failed: {cause}"))
        self.export_jobs.succeeded.connect(
            lambda paths: self._say("Exported " + ", ".join(str(p) for p in paths)))
        self.export_jobs.failed.connect(lambda cause, _d: self._fail(f"Export failed: {cause}"))
        for runner in self.runners:
            runner.busy_changed.connect(self._update_buttons)

    # -- runs ---------------------------------------------------------------------------------
    def show_unavailable(self, reason: str) -> None:
        self._leave_run(reason)
        self.session.clear()
        self.canvas.clear(reason or "Load an image to paint a mask on it")
        self._update_buttons()

    def _leave_run(self, reason: str) -> None:
        """What any change of run undoes: its jobs, its data and the views of its work."""
        self.cancel_work()
        self.loaded = self.dataset = None
        self.caption.setText(reason)
        self.method_label.clear()
        self.original_view.set_image(None)
        self.result_view.set_image(None)
        self.result_label.clear()
        self.canvas_label.clear()
        self.candidate_list.clear()

    def set_run(self, loaded: LoadedRun) -> None:
        """Inpaint with this run. An image already on the canvas stays, refitted to the
        model's size and colours (with its mask) when those differ."""
        self._leave_run("")
        self.loaded = loaded
        family = loaded.family
        self.caption.setText(f"{family.title} · {loaded.name} · step {loaded.step:,} · "
                             f"{family.spec.size}×{family.spec.size} px")
        self.method_label.setText(f"Method: {family.inpaint_method}")
        self.class_combo.clear()
        self.class_combo.addItems(loaded.class_names if family.spec.num_classes else [])
        for widget in (self.class_combo, self.class_label):
            widget.setVisible(bool(family.spec.num_classes))
        self.size_spin.setMaximum(max(1, family.spec.size // 2))
        self.dataset_spin.setMaximum(2**31 - 1)
        if self.session.refit(family.spec.size, family.spec.channels):
            self._render_picture(new_picture=True)
        else:
            self.session.clear()
            self.canvas.clear("Load an image to paint a mask on it")
        self._update_buttons()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        for path in self.suggested_runs():
            self.add_run(path, checked=None)

    def cancel_work(self) -> None:
        self.cancel_runners()
        self.progress.setVisible(False)

    # -- the image ----------------------------------------------------------------------------
    def _spec(self) -> tuple[int, int]:
        assert self.loaded is not None
        return self.loaded.family.spec.size, self.loaded.family.spec.channels

    def set_image(self, image: np.ndarray, source: str) -> None:
        """Start over on this image (uint8 (H, W, C) at the model's size) with an empty mask."""
        self.session.start(image, source)
        self._render_picture(new_picture=True)

    def _render_picture(self, new_picture: bool) -> None:
        """Show the session's image and mask; a new picture also clears the last fill's views."""
        session = self.session
        if new_picture:
            self.original_view.set_image(to_qimage(session.original))
            self.candidate_list.clear()
            self.result_view.set_image(None)
            self.result_label.clear()
        self.canvas.set_image(session.image, session.history)
        self._on_mask_changed()

    def use_dataset_image(self) -> None:
        if self.loaded is None:
            return
        index = self.dataset_spin.value()
        if self.dataset is None:
            self._pending_index = index
            self.data_jobs.submit(partial(jobs.load_training_images, self.loaded))
            return
        if index >= len(self.dataset):
            self._fail(f"The training set has {len(self.dataset):,} images; #{index} is past its end.")
            return
        self.set_image(self.dataset.images[index], f"training image #{index}")

    def _on_dataset_loaded(self, dataset: ImageDataset) -> None:
        self.dataset = dataset
        self.dataset_spin.setMaximum(max(0, len(dataset) - 1))
        self._say(f"{len(dataset):,} training images loaded")
        if self._pending_index is not None:
            self.dataset_spin.setValue(min(self._pending_index, len(dataset) - 1))
            self._pending_index = None
            self.use_dataset_image()

    def use_gallery_tile(self) -> None:
        if self.loaded is None:
            return
        tiles = self.gallery_images()
        if not tiles:
            self._fail("Select a tile in the gallery first.")
            return
        size, channels = self._spec()
        image, _ = fit_to_model(tiles[0], np.zeros(tiles[0].shape[:2], bool), size, channels)
        self.set_image(image, "a gallery sample")

    def use_file(self) -> None:
        path = self.ask_open_image()
        if not path or self.loaded is None:
            return
        size, channels = self._spec()
        self.image_jobs.submit(partial(read_image_file, path, size, channels))

    def use_mask_file(self) -> None:
        path = self.ask_open_image()
        if not path or self.session.history is None:
            return
        size, _ = self._spec()
        self.mask_jobs.submit(partial(read_mask_file, path, size))

    def _on_mask_read(self, mask: np.ndarray) -> None:
        history = self.session.history
        if history is not None and mask.shape == (history.size, history.size):
            history.replace(mask)
            self.canvas.refresh_mask()
            self._on_mask_changed()

    def continue_from(self) -> None:
        """Work on from the selected candidate: it becomes the image, and the mask is cleared
        (undoably) so the next region can be painted."""
        row, session = self.candidate_list.currentRow(), self.session
        if session.result is None or row < 0 or session.image is None:
            return
        result = session.result
        session.continue_from(result.candidates[row], f"{session.source}, candidate {row + 1} (seed "
                              f"{result.seed + row}) of a {result.loaded.family.title} fill")
        self._render_picture(new_picture=False)

    def back(self) -> None:
        if self.session.back():
            self._render_picture(new_picture=False)

    def revert(self) -> None:
        if self.session.revert():
            self._render_picture(new_picture=False)

    # -- the mask -----------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        self.canvas.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self.canvas.update()

    def _edit(self, action: Callable[[MaskHistory], object]) -> None:
        if self.session.history is None:
            return
        action(self.session.history)
        self.canvas.refresh_mask()
        self._on_mask_changed()

    def invert(self) -> None:
        self._edit(MaskHistory.invert)

    def clear_mask(self) -> None:
        self._edit(MaskHistory.clear)

    def undo(self) -> None:
        self._edit(MaskHistory.undo)

    def redo(self) -> None:
        self._edit(MaskHistory.redo)

    def mask(self) -> np.ndarray | None:
        return None if self.session.history is None else self.session.history.mask.copy()

    def _on_mask_changed(self) -> None:
        history = self.session.history
        if history is not None:
            total = history.size ** 2
            self.canvas_label.setText(f"To fill: {history.filled():,} of {total:,} px "
                                      f"({100 * history.filled() / total:.0f}%)")
        self._update_buttons()

    def _on_pointer(self, column: int, row: int) -> None:
        history = self.session.history
        if history is not None and 0 <= column < history.size and 0 <= row < history.size:
            base = self.canvas_label.text().split(" · ")[0]
            self.canvas_label.setText(f"{base} · pixel ({column}, {row})")

    # -- filling ------------------------------------------------------------------------------
    def start_fill(self) -> None:
        if self.loaded is None or self.session.image is None or self.session.history is None:
            return
        if not self.session.history.filled():
            self._fail("Paint the region to fill first (white in the overlay's tint).")
            return
        label = self.class_combo.currentIndex() if self.loaded.family.spec.num_classes else None
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.result_label.setText("Filling…")
        session = self.session
        self.fill_jobs.submit(partial(jobs.fill_candidates, self.loaded, session.image, session.history.mask.copy(),
                                      self.count_spin.value(), self.seed_spin.value(), label, session.source))

    def cancel_fill(self) -> None:
        if self.fill_jobs.is_busy() or self.compare_jobs.is_busy():
            self.fill_jobs.cancel()
            self.compare_jobs.cancel()
            self.progress.setVisible(False)
            self.result_label.setText("Cancelled.")
            self.compare_label.clear()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_fill_preview(self, preview: jobs.FillPreview) -> None:
        self._on_progress(preview.done, preview.total)
        if preview.image is not None:
            self.result_view.set_image(preview.image)
        self.result_label.setText(f"Filling… step {preview.done:,} of {preview.total:,}")

    def _on_filled(self, result: jobs.Fill) -> None:
        self.progress.setVisible(False)
        self.session.result = result
        self.candidate_list.clear()
        for k, tile in enumerate(result.tiles):
            item = QListWidgetItem(QIcon(_enlarged(tile)), f"seed {result.seed + k}")
            item.setToolTip(f"Candidate {k + 1}: seed {result.seed + k}")
            self.candidate_list.addItem(item)
        self.candidate_list.setCurrentRow(0)
        self._say(f"{len(result.candidates)} candidates in {result.seconds:.1f} s")
        self._update_buttons()

    def _show_candidate(self, row: int) -> None:
        result = self.session.result
        if result is None or not 0 <= row < len(result.tiles):
            return
        self.result_view.set_image(result.tiles[row])
        self.result_label.setText(f"Candidate {row + 1} of {len(result.tiles)} · seed "
                                  f"{result.seed + row} · {result.seconds:.1f} s for all")
        self._update_buttons()

    # -- comparing families -------------------------------------------------------------------
    def add_run(self, path: str, checked: bool | None = True) -> None:
        """List a run to compare with; checked=None leaves a listed run's tick as it is (and
        ticks a new one)."""
        path = str(Path(path))
        for i in range(self.run_list.count()):
            if self.run_list.item(i).data(Qt.ItemDataRole.UserRole) == path:
                if checked is not None:
                    self.run_list.item(i).setCheckState(Qt.CheckState.Checked if checked
                                                        else Qt.CheckState.Unchecked)
                return
        item = QListWidgetItem(Path(path).name)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Unchecked if checked is False else Qt.CheckState.Checked)
        self.run_list.addItem(item)
        self._update_buttons()

    def ask_add_run(self) -> None:
        path = self.ask_run_folder()
        if path:
            self.add_run(path)

    def ticked_runs(self) -> list[str]:
        return [self.run_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.run_list.count())
                if self.run_list.item(i).checkState() == Qt.CheckState.Checked]

    def start_compare(self) -> None:
        if self.loaded is None or self.session.image is None or self.session.history is None:
            return
        if not self.session.history.filled():
            self._fail("Paint the region to fill first.")
            return
        mask = self.session.history.mask.copy()
        self._compared_input = (self.session.image, mask, self.seed_spin.value())
        self.compare_list.clear()
        self.compare_label.setText("Opening the runs…")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.compare_jobs.submit(partial(jobs.compare_fills, self.loaded, self.ticked_runs(), self.device(),
                                         self.session.image, mask, self.seed_spin.value()))

    def _on_compared_one(self, entry: jobs.ComparedFill) -> None:
        """One run's fill, shown as soon as it is ready."""
        if entry.tile is not None:
            item = QListWidgetItem(QIcon(_enlarged(entry.tile)), f"{entry.title}\n{entry.seconds:.1f} s")
            item.setToolTip(f"{entry.name}\n{entry.method}")
        else:
            item = QListWidgetItem(f"{entry.title}\n(no fill)")
            item.setToolTip(f"{entry.name}: {entry.error}")
        self.compare_list.addItem(item)

    def _on_compared(self, compared: list[jobs.ComparedFill]) -> None:
        self.progress.setVisible(False)
        self.compared = compared
        failed = [e for e in compared if e.tile is None]
        filled = len(compared) - len(failed)
        self.compare_label.setText(f"{filled} run{'s' * (filled != 1)}, seed {self.seed_spin.value()}"
                                   + (f"; {len(failed)} could not fill (hover for why)" if failed else ""))
        self._update_buttons()

    # -- export -------------------------------------------------------------------------------
    def export_result(self) -> None:
        row = self.candidate_list.currentRow()
        if self.session.result is None or row < 0:
            return
        path = self.ask_save_path("inpainting.png")
        if path:
            self.export_jobs.submit(partial(jobs.export_fill, self.session.result, row, path, self.scale_spin.value()))

    def export_comparison(self) -> None:
        if not self.compared or self._compared_input is None:
            return
        path = self.ask_save_path("inpainting-comparison.png")
        if path:
            image, mask, seed = self._compared_input
            self.export_jobs.submit(partial(jobs.export_comparison, self.compared, image, mask, seed, path,
                                            self.scale_spin.value()))

    # -- helpers ------------------------------------------------------------------------------
    def _update_buttons(self, *_args) -> None:
        have_run = self.loaded is not None
        can_fill = have_run and Capability.INPAINT in self.loaded.family.capabilities
        have_image = self.session.image is not None and self.session.history is not None
        filling = self.fill_jobs.is_busy() or self.compare_jobs.is_busy()
        has_mask = have_image and self.session.history.filled() > 0
        for widget in (self.dataset_button, self.dataset_spin, self.gallery_button, self.file_button):
            widget.setEnabled(have_run)
        for widget in (*self.tool_buttons.values(), self.invert_button, self.clear_button,
                       self.mask_file_button, self.fit_button, self.size_spin):
            widget.setEnabled(have_image)
        self.undo_button.setEnabled(have_image and self.session.history.can_undo)
        self.redo_button.setEnabled(have_image and self.session.history.can_redo)
        self.back_button.setEnabled(bool(self.session.earlier))
        self.revert_button.setEnabled(self.session.can_revert)
        self.fill_button.setEnabled(can_fill and has_mask and not filling)
        self.compare_button.setEnabled(can_fill and has_mask and not filling and bool(self.ticked_runs()))
        self.compare_button.setToolTip(COMPARE_TIP if self.ticked_runs() else "Tick the runs to compare with first")
        self.cancel_button.setEnabled(filling)
        selected = self.session.result is not None and self.candidate_list.currentRow() >= 0
        self.continue_button.setEnabled(selected)
        self.export_button.setEnabled(selected)
        self.export_compare_button.setEnabled(any(c.image is not None for c in self.compared))

    def _say(self, text: str) -> None:
        self.status.emit(text)

    def _fail(self, message: str) -> None:
        self.progress.setVisible(False)
        self.result_label.setText(message)
        self.status.emit(message)

    def _ask_open_image(self) -> str:
        return file_dialogs.open_file(self, "Open an image", IMAGE_FILTER)

    def _ask_save_path(self, name: str) -> str:
        return file_dialogs.save_file(self, "Export", name, "PNG image (*.png)")

    def _ask_run_folder(self) -> str:
        return file_dialogs.choose_folder(self, "A run folder to compare", file_dialogs.RUNS)


def _tile_list(name: str) -> QListWidget:
    tiles = QListWidget(objectName=name)
    tiles.setViewMode(QListView.ViewMode.IconMode)
    tiles.setFlow(QListView.Flow.LeftToRight)
    tiles.setWrapping(False)
    tiles.setIconSize(QSize(TILE, TILE))
    tiles.setMovement(QListView.Movement.Static)
    tiles.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    tiles.setMinimumHeight(TILE + 48)
    return tiles


def _enlarged(image) -> QPixmap:
    """A model-sized image as a TILE-sized icon with square pixels (icons smooth by default)."""
    return QPixmap.fromImage(image.scaled(TILE, TILE, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.FastTransformation))

