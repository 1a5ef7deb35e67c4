"""The latent explorer: sliders over a latent, a 2-D map of the encoded training images,
interpolation strips, and how well the latent predicts known factors.

State lives here (the current latent, where it started, the encoded sample); every decode,
encode and export is a job in a background thread that calls core (genstudio.core.trained.latent).
Decodes for sliders and map drags go through a LatestOnlyRunner: while one decodes, only the
newest position waits, so the image keeps up with the pointer instead of queueing behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QRadioButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.families import Capability
from genstudio.core.runs.run import LoadedRun
from genstudio.core.trained.latent import (
    INTERPOLATION_MODES,
    DecodedLatent,
    Endpoint,
    LatentPosition,
    decode_one,
    prior_latents,
)

from .. import file_dialogs, jobs
from ..imaging import PixelView, to_qimage
from ..layout import panel_shortcut, push_button
from ..workers import LatestOnlyRunner, TaskRunner
from .run_panel import RunToolPanel

SLIDERS = 8              # sliders shown at a time (principal directions or raw dimensions)
SLIDER_UNITS = 100       # slider ticks per unit (σ for principal directions, z for raw ones)
SLIDER_RANGE = 3.0       # ± this many units
DEFAULT_ENCODE = 500     # training images encoded for the directions, the map and the probes
CONTROLS_WIDTH = 330


class _SliderRow(QWidget):
    """A named slider with its value: one principal direction or one raw dimension."""

    moved = Signal(int, float)  # row, value in units

    def __init__(self, row: int):
        super().__init__()
        self.row = row
        self.name = QLabel()
        self.name.setMinimumWidth(92)
        self.slider = QSlider(Qt.Orientation.Horizontal, objectName=f"latentSlider{row}")
        self.slider.setRange(-int(SLIDER_RANGE * SLIDER_UNITS), int(SLIDER_RANGE * SLIDER_UNITS))
        self.value = QLabel("+0.00")
        self.value.setMinimumWidth(44)
        self._unit = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.name)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.value)
        self.slider.valueChanged.connect(self._on_value)

    def configure(self, name: str, tooltip: str, unit: str) -> None:
        self.name.setText(name)
        self.setToolTip(tooltip)
        self.slider.setAccessibleName(name)
        self._unit = unit

    def set_value(self, value: float) -> None:
        """Show a value without reporting it as a move."""
        clipped = max(-SLIDER_RANGE, min(SLIDER_RANGE, value))
        self.slider.blockSignals(True)
        self.slider.setValue(round(clipped * SLIDER_UNITS))
        self.slider.blockSignals(False)
        self.value.setText(f"{value:+.2f}{self._unit}")

    def _on_value(self, ticks: int) -> None:
        value = ticks / SLIDER_UNITS
        self.value.setText(f"{value:+.2f}{self._unit}")
        self.moved.emit(self.row, value)


class EndpointPicker(QWidget):
    """Where one end of an interpolation comes from."""

    KINDS = ("Current image", "Seed", "Dataset image", "Gallery selection", "Image file")

    def __init__(self, name: str, default_kind: str, default_number: int):
        super().__init__()
        self.kind = QComboBox(objectName=f"endpointKind{name}", accessibleName=f"Endpoint {name}")
        self.kind.addItems(self.KINDS)
        self.kind.setCurrentText(default_kind)
        self.number = QSpinBox(objectName=f"endpointNumber{name}")
        self.number.setRange(0, 2**31 - 1)
        self.number.setValue(default_number)
        self.file_button = push_button("File…", f"endpointFile{name}", "Choose the image file")
        self.path = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel(f"{name}:"))
        layout.addWidget(self.kind, 1)
        layout.addWidget(self.number)
        layout.addWidget(self.file_button)
        self.kind.currentTextChanged.connect(self._update)
        self._update()

    def _update(self) -> None:
        kind = self.kind.currentText()
        self.number.setVisible(kind in ("Seed", "Dataset image", "Gallery selection"))
        self.number.setToolTip({"Seed": "the seed of a latent drawn from the prior",
                                "Dataset image": "the image's index in the training set",
                                "Gallery selection": "which selected gallery tile (0: the first)"}.get(kind, ""))
        self.file_button.setVisible(kind == "Image file")

    def endpoint(self, current: torch.Tensor | None, dataset_images: np.ndarray | None,
                 gallery: list[np.ndarray]) -> Endpoint:
        """This end as a core Endpoint; ValueError with a sentence when it cannot be had yet."""
        kind, n = self.kind.currentText(), self.number.value()
        if kind == "Current image":
            if current is None:
                raise ValueError("there is no current image yet")
            return Endpoint(latent=current.clone(), name="the current image")
        if kind == "Seed":
            return Endpoint(seed=n)
        if kind == "Dataset image":
            if dataset_images is None:
                raise ValueError("the training images are not loaded yet (they load with the encoding)")
            if n >= len(dataset_images):
                raise ValueError(f"the training set has {len(dataset_images):,} images; #{n} is beyond it")
            return Endpoint(image=dataset_images[n], name=f"training image #{n}")
        if kind == "Gallery selection":
            if n >= len(gallery):
                raise ValueError("select that many tiles in the gallery first" if gallery
                                 else "select tiles in the gallery first")
            return Endpoint(image=gallery[n], name=f"gallery tile {n + 1} of the selection")
        if not self.path:
            raise ValueError("choose an image file first")
        return Endpoint(path=self.path)


class LatentExplorer(RunToolPanel):

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loaded: LoadedRun | None = None
        self.encoded: jobs.EncodedData | None = None
        self.estimate: jobs.EncodingEstimate | None = None  # an encoding waiting for Encode
        self.position: LatentPosition | None = None  # the current latent, Reset's, the sliders' axes
        self.interpolation: jobs.Interpolation | None = None
        self.latencies_ms: list[float] = []       # slider/map request → image shown
        self._stop_encoding = threading.Event()
        self._encode_stage, self._encode_started = "", 0.0
        # An encoding expected to take longer starts only when Encode is pressed; the run's
        # other jobs are not held up meanwhile.
        self.encode_unasked_seconds = 20.0
        # Replaceable in tests: file dialogs and the gallery's selection.
        self.ask_open_image: Callable[[], str] = self._ask_open_image
        self.ask_save_path: Callable[[str], str] = self._ask_save_path
        self.gallery_images: Callable[[], list[np.ndarray]] = lambda: []
        self.decode_jobs = LatestOnlyRunner(self)
        self.encode_jobs, self.start_jobs, self.interpolate_jobs, self.export_jobs = (
            TaskRunner(self) for _ in range(4))
        self.runners = (self.decode_jobs, self.encode_jobs, self.start_jobs, self.interpolate_jobs,
                        self.export_jobs)
        self._build()
        self._connect()
        self.show_unavailable("Open a run (File → Open run…) or train one to explore its latent space.")

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        from .latent_map import LatentMapView

        self.caption = QLabel(objectName="explorerCaption", wordWrap=True)
        self.image_view = PixelView("The decoded image appears here")
        self.image_view.setObjectName("explorerImage")
        self.latency_label = QLabel(objectName="explorerLatency")
        self.map_view = LatentMapView()
        self.hover_view = PixelView("")
        self.hover_view.setFixedSize(84, 84)
        self.hover_label = QLabel(wordWrap=True, objectName="mapHoverCaption")
        # Short, since the map's column is narrow on a small screen; the rest is the map's tooltip.
        self.hover_label.setText("Hover a point: its image. Click: decode.")
        self.map_view.setToolTip("Hover a point to see its image; click it to decode its latent; "
                                 "click or drag in the plane to decode any point. Wheel: zoom; "
                                 "right drag: pan.")

        # Texts wrap in the width they are given: a long line must not widen the window.
        for label in (self.latency_label, self.hover_label):
            label.setWordWrap(True)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.addWidget(self.image_view, 1)
        centre_layout.addWidget(self.latency_label)
        map_box = QGroupBox("Latent map")
        map_layout = QVBoxLayout(map_box)
        map_layout.addWidget(self.map_view, 1)
        hover_row = QHBoxLayout()
        hover_row.addWidget(self.hover_view)
        hover_row.addWidget(self.hover_label, 1)
        map_layout.addLayout(hover_row)

        # The map gets the larger share of what is left: it holds hundreds of points and its
        # hover caption, where the image is one small picture scaled up. The strip below is one
        # row of small frames.
        self.lay_out(self.caption, self._controls(), CONTROLS_WIDTH, centre, map_box, self._interpolation_box(),
                     shares=(1, 2), top_sizes=[CONTROLS_WIDTH, 300, 500], body_sizes=[640, 200])

    def _controls(self) -> QWidget:
        column = QWidget()
        layout = QVBoxLayout(column)

        start = QGroupBox("Start from")
        grid = QGridLayout(start)
        self.seed_spin = QSpinBox(objectName="explorerSeed", accessibleName="Seed")
        self.seed_spin.setRange(0, 2**31 - 1)
        self.randomise_button = push_button("Randomise", "randomiseButton",
                                            "A new latent drawn from the prior (R)", self.randomise)
        self.reset_button = push_button("Reset", "resetButton",
                                        "Back to where this exploration started (0)", self.reset)
        self.seed_button = push_button("Use seed", "useSeedButton", "The prior latent of this seed",
                                       self.use_seed)
        self.dataset_spin = QSpinBox(objectName="explorerDatasetIndex", accessibleName="Dataset image")
        self.dataset_spin.setRange(0, 0)
        self.dataset_button = push_button("Use image", "useDatasetImageButton",
                                          "Encode this training image and start from it", self.use_dataset_image)
        self.file_button = push_button("Image file…", "useFileButton", "Encode an image file and start from it",
                                       self.use_file)
        self.gallery_button = push_button("Gallery tile", "useGalleryButton",
                                          "Encode the first selected gallery tile and start from it",
                                          self.use_gallery_tile)
        self.class_combo = QComboBox(objectName="explorerClass", accessibleName="Class")
        grid.addWidget(self.randomise_button, 0, 0)
        grid.addWidget(self.reset_button, 0, 1)
        grid.addWidget(QLabel("Seed"), 1, 0)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.seed_button)
        grid.addLayout(seed_row, 1, 1)
        grid.addWidget(QLabel("Training image #"), 2, 0)
        data_row = QHBoxLayout()
        data_row.addWidget(self.dataset_spin, 1)
        data_row.addWidget(self.dataset_button)
        grid.addLayout(data_row, 2, 1)
        grid.addWidget(self.file_button, 3, 0)
        grid.addWidget(self.gallery_button, 3, 1)
        self.class_label = QLabel("Class")
        grid.addWidget(self.class_label, 4, 0)
        grid.addWidget(self.class_combo, 4, 1)
        layout.addWidget(start)

        directions = QGroupBox("Directions")
        directions_layout = QVBoxLayout(directions)
        modes = QHBoxLayout()
        self.principal_radio = QRadioButton("Principal", objectName="principalRadio")
        self.principal_radio.setToolTip("Slide along the directions in which the encoded training images "
                                        "vary most (GANSpace-style), in standard deviations")
        self.raw_radio = QRadioButton("Raw dimensions", objectName="rawRadio")
        self.raw_radio.setToolTip("Slide single latent dimensions (prior: mean 0, std 1)")
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self.principal_radio)
        self._mode_group.addButton(self.raw_radio)
        modes.addWidget(self.principal_radio)
        modes.addWidget(self.raw_radio)
        directions_layout.addLayout(modes)
        offset_row = QHBoxLayout()
        self.offset_label = QLabel("First dimension")
        self.offset_spin = QSpinBox(objectName="rawOffset", accessibleName="First dimension")
        offset_row.addWidget(self.offset_label)
        offset_row.addWidget(self.offset_spin, 1)
        directions_layout.addLayout(offset_row)
        self.slider_rows = [_SliderRow(i) for i in range(SLIDERS)]
        for row in self.slider_rows:
            directions_layout.addWidget(row)
        self.directions_note = QLabel(wordWrap=True, objectName="directionsNote")
        directions_layout.addWidget(self.directions_note)
        layout.addWidget(directions)

        encode = QGroupBox("Encoded training images")
        encode_layout = QVBoxLayout(encode)
        count_row = QHBoxLayout()
        self.encode_spin = QSpinBox(objectName="encodeCount", accessibleName="Images to encode")
        self.encode_spin.setRange(10, 100_000)
        self.encode_spin.setSingleStep(100)
        self.encode_spin.setValue(DEFAULT_ENCODE)
        self.encode_button = push_button("Encode", "encodeButton",
                                         "Encode this many training images: the principal directions, the "
                                         "map and the factor check come from them", self.start_encoding)
        self.stop_encode_button = push_button("Stop", "stopEncodeButton",
                                              "Stop and use the images encoded so far", self.stop_encoding)
        count_row.addWidget(self.encode_spin, 1)
        count_row.addWidget(self.encode_button)
        count_row.addWidget(self.stop_encode_button)
        encode_layout.addLayout(count_row)
        self.encode_progress = QProgressBar(objectName="encodeProgress")
        self.encode_progress.setVisible(False)
        encode_layout.addWidget(self.encode_progress)
        self.encode_status = QLabel(wordWrap=True, objectName="encodeStatus")
        encode_layout.addWidget(self.encode_status)
        self.probe_label = QLabel(wordWrap=True, objectName="factorProbes")
        self.probe_label.setTextFormat(Qt.TextFormat.RichText)
        encode_layout.addWidget(self.probe_label)
        layout.addWidget(encode)
        layout.addStretch(1)
        return column

    def _interpolation_box(self) -> QWidget:
        box = QGroupBox("Interpolation")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.endpoint_a = EndpointPicker("A", "Seed", 0)
        self.endpoint_b = EndpointPicker("B", "Seed", 1)
        self.mode_combo = QComboBox(objectName="interpolationMode", accessibleName="Path")
        self.mode_combo.addItems(INTERPOLATION_MODES)
        self.mode_combo.setToolTip("spherical: along the great circle, keeping Gaussian latents typical; "
                                   "linear: the straight line")
        self.steps_spin = QSpinBox(objectName="interpolationSteps", accessibleName="Steps")
        self.steps_spin.setRange(2, 64)
        self.steps_spin.setValue(8)
        self.interpolate_button = push_button("Interpolate", "interpolateButton",
                                              "Decode the path from A to B", self.start_interpolation)
        for widget in (self.endpoint_a, self.endpoint_b):
            row.addWidget(widget, 1)
        layout.addLayout(row)
        # The path and the button on a line of their own: on one line with the endpoints the
        # tab needed 830 px, more than a 1,024 px screen leaves beside the dataset column.
        path_row = QHBoxLayout()
        path_row.addWidget(QLabel("Path"))
        path_row.addWidget(self.mode_combo)
        path_row.addWidget(QLabel("Steps"))
        path_row.addWidget(self.steps_spin)
        path_row.addStretch(1)
        path_row.addWidget(self.interpolate_button)
        layout.addLayout(path_row)
        self.strip_view = PixelView("The frames from A to B appear here")
        self.strip_view.setObjectName("interpolationStrip")
        self.strip_view.setMinimumHeight(72)
        layout.addWidget(self.strip_view, 1)
        export_row = QHBoxLayout()
        self.strip_caption = QLabel(objectName="interpolationCaption")
        self.scale_spin = QSpinBox(objectName="exportScale", accessibleName="Export scale")
        self.scale_spin.setRange(1, 16)
        self.scale_spin.setPrefix("×")
        self.scale_spin.setToolTip("Enlarge exported frames by this whole factor (nearest neighbour)")
        self.export_png_button = push_button("Export PNG strip…", "exportStripButton",
                                             "Write the frames side by side as one PNG",
                                             partial(self.export_interpolation, ".png"))
        self.export_gif_button = push_button("Export GIF…", "exportGifButton",
                                             "Write the frames as an animated GIF (forward and back)",
                                             partial(self.export_interpolation, ".gif"))
        export_row.addWidget(self.strip_caption, 1)
        export_row.addWidget(QLabel("Scale"))
        export_row.addWidget(self.scale_spin)
        export_row.addWidget(self.export_png_button)
        export_row.addWidget(self.export_gif_button)
        layout.addLayout(export_row)
        return box

    def _connect(self) -> None:
        for row in self.slider_rows:
            row.moved.connect(self._on_slider_moved)
        self.principal_radio.toggled.connect(lambda on: self._set_raw(not on))
        self.offset_spin.valueChanged.connect(lambda _v: self._configure_sliders())
        self.class_combo.currentIndexChanged.connect(lambda _i: self._request_decode())
        self.map_view.point_clicked.connect(self._on_point_clicked)
        self.map_view.plane_picked.connect(self._on_plane_picked)
        self.map_view.point_hovered.connect(self._on_point_hovered)
        self.endpoint_a.file_button.clicked.connect(lambda: self._choose_endpoint_file(self.endpoint_a))
        self.endpoint_b.file_button.clicked.connect(lambda: self._choose_endpoint_file(self.endpoint_b))
        self.decode_jobs.succeeded.connect(self._on_decoded)
        self.decode_jobs.failed.connect(lambda cause, _d: self._fail(f"Decoding failed: {cause}"))
        self.encode_jobs.progress.connect(self._on_encode_progress)
        self.encode_jobs.message.connect(self._on_encode_stage)
        self.encode_jobs.succeeded.connect(self._on_encoded)
        self.encode_jobs.failed.connect(self._on_encode_failed)
        self.encode_jobs.busy_changed.connect(lambda _b: self._update_buttons())
        self.start_jobs.succeeded.connect(self._on_start_latent)
        self.start_jobs.failed.connect(lambda cause, _d: self._fail(f"Could not start from that image: {cause}"))
        self.start_jobs.busy_changed.connect(lambda _b: self._update_buttons())
        self.interpolate_jobs.succeeded.connect(self._on_interpolated)
        self.interpolate_jobs.message.connect(self.strip_caption.setText)
        self.interpolate_jobs.failed.connect(lambda cause, _d: self._fail(f"Interpolation failed: {cause}"))
        self.interpolate_jobs.busy_changed.connect(lambda _b: self._update_buttons())
        self.export_jobs.succeeded.connect(lambda paths: self.status.emit(f"Wrote {paths[0]}"))
        self.export_jobs.failed.connect(lambda cause, _d: self._fail(f"Export failed: {cause}"))
        for keys, slot, what in (("R", self.randomise, "Next seed"), ("0", self.reset, "Reset the latent")):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.setWhatsThis(what)  # Help → Keyboard shortcuts lists it
            shortcut.activated.connect(slot)
        panel_shortcut(self, "Ctrl+Shift+E", self.encode_button)
        panel_shortcut(self, "Ctrl+I", self.interpolate_button)

    # -- runs ---------------------------------------------------------------------------------
    def show_unavailable(self, reason: str) -> None:
        """No run, or a run whose family has no latent: say why and disable everything."""
        self.cancel_work()
        self.loaded = self.encoded = self.estimate = self.position = self.interpolation = None
        self.caption.setText(reason)
        self.image_view.set_image(None)
        self.strip_view.set_image(None)
        self.latency_label.clear()
        self.probe_label.clear()
        self.encode_status.clear()
        self.map_view.show_message(reason)
        self._update_buttons()

    def set_run(self, loaded: LoadedRun) -> None:
        """Explore a loaded run whose family can decode; starts at the prior latent of seed 0."""
        self.show_unavailable("")
        family = loaded.family
        self.loaded = loaded
        self.position = LatentPosition(family.latent_dim)
        self.caption.setText(f"{family.title} · {loaded.name} · step {loaded.step:,} · "
                             f"{family.latent_dim:,}-dimensional latent")
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItems(loaded.class_names if family.spec.num_classes else [])
        self.class_combo.blockSignals(False)
        self.class_combo.setVisible(bool(family.spec.num_classes))
        self.class_label.setVisible(bool(family.spec.num_classes))
        self.offset_spin.setRange(0, max(0, family.latent_dim - SLIDERS))
        self.offset_spin.setValue(0)
        can_encode = Capability.ENCODE in family.capabilities
        self.map_view.show_message("The map appears once training images are encoded." if can_encode
                                   else f"{family.title} cannot encode images, so there is no map.")
        self._set_raw(True)
        self._set_latent(prior_latents(family.latent_dim, 1, self.seed_spin.value())[0], origin=True)
        if can_encode and self.isVisible():
            self.start_encoding(asked=False)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        # Encoding costs a few seconds to minutes (GAN inversion optimises each latent), so it
        # starts when someone comes to look, not whenever a run is opened.
        if (self.loaded is not None and self.encoded is None and self.estimate is None
                and not self.encode_jobs.is_working() and Capability.ENCODE in self.loaded.family.capabilities):
            self.start_encoding(asked=False)

    def cancel_work(self) -> None:
        """Drop every pending result and stop an encoding (exports still finish writing)."""
        self._stop_encoding.set()
        self.cancel_runners()
        self.encode_progress.setVisible(False)

    # -- the current latent -------------------------------------------------------------------
    def _label(self) -> int | None:
        if self.loaded is None or not self.loaded.family.spec.num_classes:
            return None
        return max(0, self.class_combo.currentIndex())

    def _set_latent(self, z: torch.Tensor, origin: bool = False) -> None:
        self.position.set(z, origin)
        self._sync_sliders()
        self._request_decode()

    def randomise(self) -> None:
        if self.loaded is None:
            return
        self.seed_spin.setValue(self.seed_spin.value() + 1)
        self.use_seed()

    def use_seed(self) -> None:
        if self.loaded is not None:
            self._set_latent(prior_latents(self.loaded.family.latent_dim, 1, self.seed_spin.value())[0],
                             origin=True)

    def reset(self) -> None:
        if self.position is not None and self.position.reset():
            self._sync_sliders()
            self._request_decode()

    def use_dataset_image(self) -> None:
        if self.encoded is None:
            self._fail("The training images load with the encoding; wait for it to start.")
            return
        image = self.encoded.dataset.images[self.dataset_spin.value()]
        self._start_from(Endpoint(image=image), f"training image #{self.dataset_spin.value()}")

    def use_file(self) -> None:
        path = self.ask_open_image()
        if path:
            self._start_from(Endpoint(path=path), path)

    def use_gallery_tile(self) -> None:
        tiles = self.gallery_images()
        if not tiles:
            self._fail("Select a tile in the gallery first.")
            return
        self._start_from(Endpoint(image=tiles[0]), "the selected gallery tile")

    def _start_from(self, endpoint: Endpoint, what: str) -> None:
        if self.loaded is None:
            return
        self.latency_label.setText(f"Encoding {what}…")
        self.start_jobs.submit(partial(jobs.latent_of, self.loaded, endpoint, self._label()))

    def _on_start_latent(self, latent: torch.Tensor) -> None:
        self._set_latent(latent, origin=True)

    # -- sliders ------------------------------------------------------------------------------
    def _set_raw(self, raw: bool) -> None:
        if self.position is not None:
            self.position.set_axes(raw, self.encoded.basis if self.encoded is not None else None)
        raw = self.position is None or not self.position.principal
        for radio, checked in ((self.raw_radio, raw), (self.principal_radio, not raw)):
            radio.blockSignals(True)
            radio.setChecked(checked)
            radio.blockSignals(False)
        self._configure_sliders()

    def _configure_sliders(self) -> None:
        dim = self.loaded.family.latent_dim if self.loaded is not None else 0
        basis = self.encoded.basis if self.encoded is not None else None
        raw = self.position is None or not self.position.principal
        self.offset_label.setVisible(raw and dim > SLIDERS)
        self.offset_spin.setVisible(raw and dim > SLIDERS)
        offset = self.offset_spin.value()
        if self.position is not None:
            self.position.offset = offset
        for i, row in enumerate(self.slider_rows):
            if raw:
                shown = offset + i < dim
                if shown:
                    row.configure(f"z[{offset + i}]", f"latent dimension {offset + i}", "")
            else:
                shown = i < basis.count
                if shown:
                    share = 100 * float(basis.explained[i])
                    row.configure(f"PC{i + 1} · {share:.1f}%",
                                  f"principal direction {i + 1}: {share:.1f}% of the encoded images' variance",
                                  "σ")
            row.setVisible(shown)
        if basis is None:
            self.directions_note.setText("Principal directions appear once training images are encoded."
                                         if self.loaded is not None else "")
        else:
            covered = 100 * float(basis.explained.sum())
            self.directions_note.setText(f"The {basis.count} principal directions explain {covered:.0f}% "
                                         f"of the variance of {len(self.encoded.encoded):,} encoded images.")
        self._sync_sliders()

    def _sync_sliders(self) -> None:
        if self.position is None or self.position.z is None:
            return
        for row, value in zip(self.slider_rows, self.position.slider_values(SLIDERS), strict=True):
            row.set_value(value)

    def _on_slider_moved(self, row: int, value: float) -> None:
        if self.position is None or self.position.z is None:
            return
        self.position.move(row, value)
        self._request_decode()

    # -- decoding -----------------------------------------------------------------------------
    def _request_decode(self) -> None:
        if self.loaded is None or self.position is None or self.position.z is None:
            return
        family, z, label = self.loaded.family, self.position.z.clone(), self._label()
        requested_at = time.perf_counter()
        self.decode_jobs.submit(lambda _job: (decode_one(family, z, label), requested_at))  # on a worker
        self._update_marker()

    def _on_decoded(self, result: tuple[DecodedLatent, float]) -> None:
        decoded, requested_at = result
        self.image_view.set_image(to_qimage(decoded.image))  # a copy of a few KB
        latency = 1000 * (time.perf_counter() - requested_at)
        self.latencies_ms.append(latency)
        self.latency_label.setText(f"decode {decoded.decode_ms:.0f} ms · request → image {latency:.0f} ms")

    def _update_marker(self) -> None:
        mapped = self.encoded.map if self.encoded is not None else None
        if mapped is None or self.position is None or self.position.z is None:
            self.map_view.set_marker(None, None)
            return
        x, y = mapped.project(self.position.z)[0]
        self.map_view.set_marker(float(x), float(y))

    # -- encoding, the map and the probes -----------------------------------------------------
    def start_encoding(self, asked: bool = True) -> None:
        """Encode the chosen number of training images; `asked=False` (opening a run) first
        times the encoder and, if the whole would take long, says how long and waits for Encode."""
        if self.loaded is None or self.encode_jobs.is_working():
            return
        self._stop_encoding = threading.Event()
        self.encode_progress.setVisible(True)
        self.encode_progress.setRange(0, 0)
        known = self.encoded or self.estimate
        dataset = known.dataset if known is not None else None  # same run: same images
        self.estimate = None
        self.encode_jobs.submit(partial(jobs.encode_for_explorer, self.loaded, self.encode_spin.value(),
                                        SLIDERS, self._stop_encoding, dataset,
                                        ask_above_seconds=None if asked else self.encode_unasked_seconds))
        self._update_buttons()

    def stop_encoding(self) -> None:
        """End the running encoding after its current batch, keeping the images encoded so far."""
        self._stop_encoding.set()

    def _on_encode_stage(self, text: str) -> None:
        self.encode_progress.setRange(0, 0)  # a new stage: busy until it reports progress
        self.encode_status.setText(f"{text[:1].upper()}{text[1:]}…")
        if self.encoded is None:  # the map's place says what is being done for it
            self.map_view.show_message(f"{text[:1].upper()}{text[1:]}…")
        self._encode_stage = text
        self._encode_started = time.perf_counter()

    def _on_encode_progress(self, done: int, total: int) -> None:
        self.encode_progress.setRange(0, total)
        self.encode_progress.setValue(done)
        if self._encode_stage.startswith("encoding") and 0 < done < total:
            elapsed = time.perf_counter() - self._encode_started
            left = elapsed / done * (total - done)
            eta = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
            self.encode_status.setText(f"Encoding: {done:,} of {total:,} done, about {eta} left. "
                                       "Stop keeps what is done.")

    def _on_encoded(self, data: jobs.EncodedData | jobs.EncodingEstimate) -> None:
        self.encode_progress.setVisible(False)
        if isinstance(data, jobs.EncodingEstimate):
            self._on_estimate(data)
            return
        self.encoded = data
        encoded = data.encoded
        stopped = f" (stopped at {len(encoded):,} of {encoded.requested:,})" if len(encoded) < encoded.requested else ""
        if data.seconds is None:
            self.encode_status.setText(f"{len(encoded):,} training images, encoded before (kept in the run folder).")
        else:
            self.encode_status.setText(f"{len(encoded):,} training images encoded in {data.seconds:.1f} s{stopped}.")
        self.dataset_spin.setRange(0, len(data.dataset) - 1)
        if data.probes:
            lines = "".join(f"<li>{probe.describe()}</li>" for probe in data.probes)
            self.probe_label.setText("How well a linear probe of the latent predicts each known factor "
                                     f"(held-out 30%):<ul style='margin:0'>{lines}</ul>")
        else:
            self.probe_label.setText("This dataset has no known factors or classes to check the latent against.")
        if data.map is not None:
            class_names = encoded.class_names if len(encoded.class_names) > 1 else []
            self.map_view.set_map(data.map.points, encoded.labels, class_names, data.map.axis_names)
        self._set_raw(self.loaded is not None and self.loaded.family.latent_dim <= SLIDERS
                      and self.position is not None and self.position.raw)
        self._update_marker()
        self._update_buttons()
        self.status.emit(f"Encoded {len(encoded):,} training images")

    def _on_estimate(self, estimate: jobs.EncodingEstimate) -> None:
        self.estimate = estimate
        minutes = estimate.seconds / 60
        took = f"about {minutes:.0f} min" if minutes >= 1.5 else f"about {estimate.seconds:.0f} s"
        family = estimate.loaded.family.title
        self.encode_status.setText(f"Encoding {estimate.count:,} training images with this {family} would take "
                                   f"{took} on this machine (timed on a few). Press Encode to start, or "
                                   "lower the count; Stop keeps what is done.")
        self.map_view.show_message(f"No map yet: press Encode ({took} for {estimate.count:,} images).")
        self._update_buttons()

    def _on_encode_failed(self, cause: str, _details: str) -> None:
        self.encode_progress.setVisible(False)
        self.encode_status.setText(f"Encoding failed: {cause}")
        self.map_view.show_message(f"No map: encoding failed ({cause}).")
        self._update_buttons()

    def _on_point_clicked(self, row: int) -> None:
        if self.encoded is not None:
            self._set_latent(self.encoded.encoded.latents[row])

    def _on_plane_picked(self, x: float, y: float) -> None:
        if self.encoded is not None and self.encoded.map is not None:
            self._set_latent(self.encoded.map.to_latent(x, y))

    def _on_point_hovered(self, row: int) -> None:
        if self.encoded is None or row < 0:
            self.hover_view.set_image(None)
            return
        encoded = self.encoded.encoded
        index = int(encoded.indices[row])
        self.hover_view.set_image(to_qimage(self.encoded.dataset.images[index]))
        klass = f" · {encoded.class_names[encoded.labels[row]]}" if len(encoded.class_names) > 1 else ""
        self.hover_label.setText(f"training image #{index}{klass}")

    # -- interpolation ------------------------------------------------------------------------
    def start_interpolation(self) -> None:
        if self.loaded is None:
            return
        dataset = self.encoded.dataset.images if self.encoded is not None else None
        try:
            current = self.position.z if self.position is not None else None
            start = self.endpoint_a.endpoint(current, dataset, self.gallery_images())
            end = self.endpoint_b.endpoint(current, dataset, self.gallery_images())
        except ValueError as exc:
            self._fail(f"Interpolation: {exc}.")
            return
        self.interpolate_jobs.submit(partial(jobs.interpolate_endpoints, self.loaded, start, end,
                                             self.steps_spin.value(), self.mode_combo.currentText(),
                                             self._label()))

    def _on_interpolated(self, interpolation: jobs.Interpolation) -> None:
        self.interpolation = interpolation
        self.strip_view.set_image(interpolation.strip)
        meta = interpolation.metadata
        self.strip_caption.setText(f"{meta['steps']} frames, {meta['mode']}: {meta['start']} → {meta['end']}")
        self._update_buttons()

    def export_interpolation(self, suffix: str) -> None:
        if self.interpolation is None:
            return
        path = self.ask_save_path(suffix)
        if not path:
            return
        if not path.lower().endswith(suffix):
            path += suffix
        self.export_jobs.submit(partial(jobs.export_interpolation, self.interpolation, path,
                                        self.scale_spin.value()))

    def _choose_endpoint_file(self, picker: EndpointPicker) -> None:
        path = self.ask_open_image()
        if path:
            picker.path = path
            picker.file_button.setText(path.rsplit("/", 1)[-1][:18] or "File…")
            picker.file_button.setToolTip(path)

    # -- helpers ------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        have_run = self.loaded is not None
        can_encode = have_run and Capability.ENCODE in self.loaded.family.capabilities
        encoding = self.encode_jobs.is_working()
        for widget in (self.randomise_button, self.reset_button, self.seed_button, self.seed_spin,
                       self.interpolate_button, self.mode_combo, self.steps_spin):
            widget.setEnabled(have_run)
        for widget in (self.file_button, self.gallery_button):
            widget.setEnabled(can_encode and not self.start_jobs.is_busy())
        self.dataset_button.setEnabled(can_encode and self.encoded is not None and not self.start_jobs.is_busy())
        self.encode_button.setEnabled(can_encode and not encoding)
        self.stop_encode_button.setEnabled(encoding)
        self.principal_radio.setEnabled(self.encoded is not None)
        for widget in (self.export_png_button, self.export_gif_button):
            widget.setEnabled(self.interpolation is not None)
        for row in self.slider_rows:
            row.setEnabled(have_run)

    def _fail(self, message: str) -> None:
        self.latency_label.setText(message)
        self.status.emit(message)

    def _ask_open_image(self) -> str:
        return file_dialogs.open_file(self, "Open an image", "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff)")

    def _ask_save_path(self, suffix: str) -> str:
        kind = "Animated GIF (*.gif)" if suffix == ".gif" else "PNG image (*.png)"
        return file_dialogs.save_file(self, "Export the interpolation", f"interpolation{suffix}", kind)

