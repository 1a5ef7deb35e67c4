"""The Playground tab: 2-D families learning a toy or points a person draws, side by side.

The core's live loop (core/playground/live.py) trains the ticked families on a worker thread
and sends each family's FamilyView several times a second; this tab only draws them (a density
heatmap with samples over it per family, the yardstick's KL against training seconds, a table)
and turns clicks into the loop's PlaygroundControl requests. Changing the data or the families
starts the loop again on fresh models.
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.playground.extras import ExtraView, slice_line
from genstudio.core.playground.families import PLANE_FAMILIES
from genstudio.core.playground.figure import Panel, Recording
from genstudio.core.playground.grid import DEFAULT_EXTENT, GridDensity
from genstudio.core.playground.live import MEASURE_SAMPLES, FamilyView, PlaygroundControl
from genstudio.core.playground.scenario import Scenario, ScenarioError
from genstudio.core.playground.toys import TOYS, PointsError, load_points_csv

from .. import jobs
from ..file_dialogs import open_file, save_file
from ..layout import push_button
from ..workers import PlaygroundWorker, TaskRunner, start_thread
from .config_form import ConfigForm
from .metrics_plot import COLOURS

OWN_POINTS = "own"            # the data combo's entry for drawn or opened points
RESTART_DELAY_MS = 400        # a brush stroke restarts training once the person pauses
TABLE_MS = 500                # the table is refilled at most this often: a view comes ~70 times a second
RECORD_MS = 1000              # a moment of the training kept for the GIF every second
FRAME_MS = 250                # a flow's layers shown four a second…
FRAMES_RESTING = 4            # …and the last held for as many more frames
MAGMA = pg.colormap.get("magma")
# The properties of a good generative model (Prince, Understanding Deep Learning §14.2), each
# as measured here: (header, tooltip).
TABLE_COLUMNS = (
    ("family", ""),
    ("steps", "training steps taken"),
    ("seconds", "training seconds spent"),
    ("KL (nats)", "KL(p_data ‖ p_model) summed over the grid's cells: the one yardstick for all"),
    ("modes", "coverage: the mixture's modes holding at least a fifth of their fair share of the samples"),
    ("precision", f"quality: share of {MEASURE_SAMPLES} samples inside the data's 3-nearest-neighbour balls "
                  "(Kynkäänniemi et al. 2019), against as many data points"),
    ("recall", f"coverage: share of {MEASURE_SAMPLES} data points inside the samples' 3-nearest-neighbour balls"),
    ("sampling ms", f"fast sampling: milliseconds to draw {MEASURE_SAMPLES} samples, measured beside the training"),
    ("latent", "a well-behaved latent: which latent space the family has"),
    ("likelihood", "how its density is had: exact, by an ODE, a bound, unnormalised, or none (a kernel estimate)"),
)
PLANE = QRectF(-DEFAULT_EXTENT, -DEFAULT_EXTENT, 2 * DEFAULT_EXTENT, 2 * DEFAULT_EXTENT)   # the grid's square


class BrushViewBox(pg.ViewBox):
    """A view whose left-button clicks and drags brush points in (right button: out)."""

    brushed = Signal(float, float, bool, bool)   # x, y, erase, the first dab of a stroke

    def __init__(self) -> None:
        super().__init__(enableMouse=False)
        self.drawing = False

    def _brush(self, event, erase: bool, first: bool) -> None:
        point = self.mapSceneToView(event.scenePos())
        self.brushed.emit(point.x(), point.y(), erase, first)

    def mouseClickEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self.drawing or event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            event.ignore()
            return
        event.accept()
        self._brush(event, event.button() == Qt.MouseButton.RightButton, True)

    def mouseDragEvent(self, event, axis=None) -> None:  # noqa: N802 - Qt's name
        if not self.drawing:
            event.ignore()
            return
        event.accept()
        erase = event.button() == Qt.MouseButton.RightButton or bool(event.buttons() & Qt.MouseButton.RightButton)
        self._brush(event, erase, event.isStart())


def _square_plot(view: pg.ViewBox | None = None) -> pg.PlotWidget:
    plot = pg.PlotWidget(viewBox=view) if view is not None else pg.PlotWidget()
    plot.setAspectLocked(True)
    plot.setXRange(-DEFAULT_EXTENT, DEFAULT_EXTENT, padding=0)
    plot.setYRange(-DEFAULT_EXTENT, DEFAULT_EXTENT, padding=0)
    plot.hideButtons()
    plot.setMinimumSize(180, 180)
    return plot


def _segments(extra: ExtraView, lines: np.ndarray | None) -> np.ndarray | None:
    """`lines` (the view's, or one of its frames) and its arrows as one (K, 2) array for
    connect='finite' (NaN: a break)."""
    parts = [] if lines is None else [lines]
    if extra.arrows is not None:
        start, end = extra.arrows[:, :2], extra.arrows[:, :2] + extra.arrows[:, 2:]
        gap = np.full_like(start, np.nan)
        parts.append(np.stack([start, end, gap], 1).reshape(-1, 2))
    return np.concatenate(parts) if parts else None


class FamilyPanel(QWidget):
    """One family: its density and samples, its buttons, and a line of what it measures."""

    def __init__(self, name: str, title: str, on_play, on_pause, on_step, on_reset, on_knobs, on_own_view):
        super().__init__(objectName=f"playground-{name}")
        self.name = name
        self.plot = _square_plot()
        # No axes: the plane is the data panel's, which has them, and repainting seven pairs of
        # axes with every view took nearly as much of the GUI thread as the images (py-spy).
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.image = pg.ImageItem()
        self.image.setColorMap(MAGMA)
        self.samples = pg.ImageItem()   # the samples as the pixels they fall in, over the density
        self.lines = pg.PlotDataItem(connect="finite", pen=pg.mkPen("#4dd0e1", width=1))
        self.extra_points = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush("#ffd54f"))
        self.outlines = pg.PlotDataItem(connect="finite", pen=pg.mkPen("#ffd54f", width=1))
        for item in (self.image, self.samples, self.lines, self.extra_points, self.outlines):
            self.plot.addItem(item)
        # A flow's grid goes through its layers one frame at a time, then rests on the last.
        self.frame = 0
        self.frame_timer = QTimer(self, interval=FRAME_MS)
        self.frame_timer.timeout.connect(self._next_frame)
        self.cursor_x: float | None = None   # x₁ under the cursor, for an autoregressive slice
        self.plot.scene().sigMouseMoved.connect(self._cursor_moved)
        self.caption = QLabel(objectName="playgroundCaption")   # which layer, which slice
        self.title = QLabel(f"<b>{title}</b>")
        self.own_view = QCheckBox("Its own view", objectName=f"ownView-{name}")
        self.own_view.setToolTip("What makes this family what it is, instead of its density and samples")
        self.own_view.toggled.connect(lambda on: on_own_view(name, on))   # the loop sends it from now on
        self.view: FamilyView | None = None
        self._drawn: tuple | None = None   # (measurement, own view) last drawn
        self.status = QLabel("starting…", objectName="playgroundStatus")
        self.status.setWordWrap(True)
        self.play = push_button("Play", f"play-{name}", f"Train {title} (again)", lambda: on_play(name))
        self.pause = push_button("Pause", f"pause-{name}", f"Pause {title}", lambda: on_pause(name))
        self.step = push_button("Step", f"step-{name}", f"One training step of {title}", lambda: on_step(name))
        self.reset = push_button("Reset", f"reset-{name}", f"{title} from fresh weights", lambda: on_reset(name))
        self.knobs = push_button("Knobs…", f"knobs-{name}", f"{title}'s width, depth, learning rate and its own "
                                 "knobs; a change starts it from fresh weights", lambda: on_knobs(name))
        buttons = QHBoxLayout()
        for button in (self.play, self.pause, self.step, self.reset, self.knobs):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        heading = QHBoxLayout()
        heading.addWidget(self.title)
        heading.addStretch(1)
        heading.addWidget(self.own_view)
        layout.addLayout(heading)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.caption)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

    def show_view(self, view: FamilyView, redraw: bool = False) -> None:
        self.view = view
        extra = view.extra if self.own_view.isChecked() else None
        if extra is None:
            self.samples.setImage(view.sample_pixels.transpose(1, 0, 2), autoLevels=False, levels=(0, 255))
            self.samples.setRect(PLANE)
        else:
            self.samples.clear()
        self.play.setEnabled(not view.running)
        self.pause.setEnabled(view.running)
        measured = "" if view.measured is None else f"{view.measured.caption} · "
        self.status.setText(f"{measured}{view.steps:,} steps, {view.train_seconds:.1f} s")
        # The rest changes only with a measurement or a fresh own view (the samples ten times a
        # second, a measurement every few seconds): drawn again only then.
        if not redraw and self._drawn is not None and self._drawn[0] is view.measured and self._drawn[1] is extra:
            return
        self._drawn = (view.measured, extra)
        if extra is not None and extra.image is not None:
            image = extra.image.T          # pyqtgraph's images are x first
        else:
            image = None if view.density is None else view.density.brightness.T
        if image is not None:
            self.image.setImage(image, autoLevels=False, levels=(0.0, 1.0))
            self.image.setRect(PLANE)   # after the image: pyqtgraph scales the image's own size to it
        self.caption.clear()
        self._set_xy(self.extra_points, None if extra is None else extra.points)
        self._set_xy(self.outlines, None if extra is None else extra.outlines)
        if extra is not None and extra.frames:
            if not self.frame_timer.isActive():
                self.frame = 0
                self.frame_timer.start()
            self._draw_frame()
        else:
            self.frame_timer.stop()
            self._set_xy(self.lines, None if extra is None else _segments(extra, extra.lines))
        if extra is not None and extra.slices is not None:
            if self.cursor_x is None:
                self.caption.setText("seven slices; point at the plane to choose x₁")
            else:
                self._draw_slice()
        self.plot.setToolTip(extra.title if extra is not None else "density on the grid, samples in white")

    @staticmethod
    def _set_xy(item: pg.PlotDataItem | pg.ScatterPlotItem, xy: np.ndarray | None) -> None:
        """Lines or points from an (M, 2) array; None clears them."""
        if xy is None:
            item.clear()
        else:
            item.setData(xy[:, 0], xy[:, 1])

    def _shown_extra(self) -> ExtraView | None:
        return self.view.extra if self.view is not None and self.own_view.isChecked() else None

    def _next_frame(self) -> None:
        extra = self._shown_extra()
        if extra is None or not extra.frames:
            self.frame_timer.stop()
            return
        self.frame = (self.frame + 1) % (len(extra.frames) + FRAMES_RESTING)
        self._draw_frame()

    def _draw_frame(self) -> None:
        extra = self._shown_extra()
        shown = min(self.frame, len(extra.frames) - 1)
        self._set_xy(self.lines, _segments(extra, extra.frames[shown]))
        self.caption.setText("the noise grid" if shown == 0 else f"after layer {shown} of {len(extra.frames) - 1}")

    def _cursor_moved(self, position) -> None:
        self.cursor_x = self.plot.getPlotItem().vb.mapSceneToView(position).x()
        extra = self._shown_extra()
        if extra is not None and extra.slices is not None:
            self._draw_slice()

    def _draw_slice(self) -> None:
        """An autoregressive model's conditional p(x₂ | x₁ = a) at the cursor's x₁, from the
        slices its view holds, with the line x₁ = a."""
        extra = self._shown_extra()
        i = int(np.abs(extra.slice_at - self.cursor_x).argmin())
        at = extra.slice_at[i]
        self._set_xy(self.lines, slice_line(at, extra.slice_values, extra.slices[i]))
        self._set_xy(self.outlines, np.array([[at, -DEFAULT_EXTENT], [at, DEFAULT_EXTENT]]))
        self.caption.setText(f"p(x₂ | x₁ = {at:.1f})")

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().leaveEvent(event)
        self.cursor_x = None
        if self.view is not None:
            self.show_view(self.view, redraw=True)


class PlaygroundPanel(QWidget):
    """The tab. `views` holds the latest FamilyView of each family, the state the widgets draw."""

    ended = Signal()   # after stop: the last loop's thread has ended and no GIF is being written

    def __init__(self) -> None:
        super().__init__(objectName="playground")
        self.views: dict[str, FamilyView] = {}
        self.own_points = np.zeros((0, 2))
        self.undo_stack: list[np.ndarray] = []
        self.brush_rng = np.random.default_rng(0)   # where a dab's points fall within the brush
        self.knobs: dict[str, dict] = {}            # per family, the knobs that differ from its defaults
        self.seed = 0
        self.control: PlaygroundControl | None = None
        self.worker: PlaygroundWorker | None = None
        self.thread: QThread | None = None
        self._retired: dict[QThread, PlaygroundWorker] = {}  # stopped loops whose threads have not ended yet
        self.restart_timer = QTimer(self, singleShot=True, interval=RESTART_DELAY_MS)
        self.restart_timer.timeout.connect(self.restart)
        # Moments of the training for an animated GIF, one a second (Recording thins them).
        self.recording = Recording()
        self.started_at = time.monotonic()
        self.target: GridDensity | None = None
        self.shown_points = np.zeros((0, 2))
        self.record_timer = QTimer(self, interval=RECORD_MS)
        self.record_timer.timeout.connect(self._record)
        self.table_timer = QTimer(self, singleShot=True, interval=TABLE_MS)
        self.table_timer.timeout.connect(self._fill_table)
        self.gif_jobs = TaskRunner(self)
        self.gif_jobs.succeeded.connect(lambda path: self.export_status.setText(f"Wrote {path}"))
        self.gif_jobs.failed.connect(lambda cause, _details: self.export_status.setText(f"GIF export failed: {cause}"))
        self.gif_jobs.message.connect(lambda text: self.export_status.setText(f"GIF: {text}…"))
        self.gif_jobs.busy_changed.connect(lambda busy: None if busy or self.is_running() else self.ended.emit())
        self._build()
        self._show_data()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.data_choice = QComboBox(objectName="playgroundData", accessibleName="Data")
        for toy in TOYS.values():
            self.data_choice.addItem(toy.title, toy.name)
        self.data_choice.addItem("My points (draw or open)", OWN_POINTS)
        self.data_choice.currentIndexChanged.connect(self._data_changed)
        self.open_points = push_button("Open points…", "openPoints", "A CSV of x,y rows", self.ask_open_points)
        self.brush_size = QDoubleSpinBox(objectName="brushSize", minimum=0.02, maximum=2.0, value=0.2,
                                         singleStep=0.05, suffix=" wide")
        self.brush_count = QSpinBox(objectName="brushCount", minimum=1, maximum=100, value=10, suffix=" points")
        self.undo = push_button("Undo", "undoPoints", "Take back the last brush stroke", self.undo_points)
        QShortcut(QKeySequence.StandardKey.Undo, self, activated=self.undo_points,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.clear = push_button("Clear", "clearPoints", "Remove every drawn point", self.clear_points)
        self.ticks = {name: QCheckBox(cls.title, objectName=f"tick-{name}", checked=True)
                      for name, cls in PLANE_FAMILIES.items()}
        for tick in self.ticks.values():
            tick.toggled.connect(lambda _on: self.restart_timer.start())
        self.play_all = push_button("Play all", "playAll", "Train every family", self._play_all)
        self.pause_all = push_button("Pause all", "pauseAll", "Pause every family", self._pause_all)
        self.save_scenario = push_button("Save scenario…", "saveScenario",
                                         "The data, families and seed, to reload exactly", self.ask_save_scenario)
        self.open_scenario = push_button("Open scenario…", "openScenario", "A scenario saved before",
                                         self.ask_open_scenario)
        self.export_gif = push_button("Export GIF…", "exportPlaygroundGif",
                                      "The training so far as an animation: every family's density and samples "
                                      "side by side, a moment a second (fewer for a long training)",
                                      self.ask_export_gif)
        self.export_status = QLabel(objectName="playgroundExportStatus")
        self.export = push_button("Export PNG…", "exportPlayground", "The side-by-side panels as an image",
                                  self.ask_export)
        self.field_time = QSlider(Qt.Orientation.Horizontal, objectName="fieldTime", minimum=0, maximum=100, value=50)
        self.field_time.setToolTip("t of the velocity (flow matching: 0 noise, 1 data) and score (diffusion: "
                                   "0 data, 1 noise) fields in the families' own views")
        self.field_time.valueChanged.connect(self._field_time_changed)
        self.field_time_label = QLabel("field t = 0.50")

        controls = QHBoxLayout()
        for widget in (QLabel("Data"), self.data_choice, self.open_points, QLabel("Brush"), self.brush_size,
                       self.brush_count, self.undo, self.clear):
            controls.addWidget(widget)
        controls.addStretch(1)
        families = QHBoxLayout()
        for tick in self.ticks.values():
            families.addWidget(tick)
        families.addStretch(1)
        for widget in (self.field_time_label, self.field_time, self.play_all, self.pause_all, self.open_scenario,
                       self.save_scenario, self.export, self.export_gif, self.export_status):
            families.addWidget(widget)

        self.brush_view = BrushViewBox()
        self.brush_view.brushed.connect(self._brushed)
        self.data_plot = _square_plot(self.brush_view)
        self.data_points = pg.ScatterPlotItem(size=2, pen=None, brush=pg.mkBrush(255, 255, 255, 200))
        self.data_image = pg.ImageItem()   # the data's density, as the yardstick scores against it
        self.data_image.setColorMap(MAGMA)
        self.data_plot.addItem(self.data_image)
        self.data_plot.addItem(self.data_points)
        data_box = QWidget()
        data_layout = QVBoxLayout(data_box)
        data_layout.setContentsMargins(2, 2, 2, 2)
        self.data_title = QLabel("<b>Data</b>")
        data_layout.addWidget(self.data_title)
        data_layout.addWidget(self.data_plot, 1)
        self.data_status = QLabel(objectName="playgroundDataStatus")
        self.data_status.setWordWrap(True)
        data_layout.addWidget(self.data_status)

        self.panels_widget = QWidget(objectName="playgroundPanels")
        self.panels_grid = QGridLayout(self.panels_widget)
        self.panels_grid.addWidget(data_box, 0, 0)
        self.panels: dict[str, FamilyPanel] = {}

        self.kl_plot = pg.PlotWidget(objectName="playgroundKL")
        self.kl_plot.setLabel("bottom", "training seconds")
        self.kl_plot.setLabel("left", "KL(data ‖ model), nats")
        self.kl_plot.setLogMode(y=True)
        self.kl_plot.addLegend(offset=(-5, 5))
        self.kl_curves: dict[str, pg.PlotDataItem] = {}
        self.table = QTableWidget(0, len(TABLE_COLUMNS), objectName="playgroundTable")
        for column, (header, tip) in enumerate(TABLE_COLUMNS):
            item = QTableWidgetItem(header)
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(column, item)
        self.table.verticalHeader().hide()
        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(QLabel("The properties of a good generative model (Prince, <i>Understanding Deep "
                                      "Learning</i> §14.2), measured; hover a heading for how"))
        table_layout.addWidget(self.table)
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.kl_plot)
        side.addWidget(table_box)
        side.setMinimumWidth(380)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(self.panels_widget)
        main.addWidget(side)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 1)
        main.setSizes([1000, 420])   # the chart and table readable beside four columns of panels

        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(families)
        layout.addWidget(main, 1)

    # -- data -------------------------------------------------------------------------------
    def scenario(self) -> Scenario:
        choice = self.data_choice.currentData()
        families = {name: dict(self.knobs.get(name, {})) for name in self.ticked()}
        if choice == OWN_POINTS:
            return Scenario(toy=None, points=self.own_points, families=families, seed=self.seed)
        return Scenario(toy=choice, families=families, seed=self.seed)

    def _data_changed(self) -> None:
        own = self.data_choice.currentData() == OWN_POINTS
        self.brush_view.drawing = own
        for widget in (self.brush_size, self.brush_count, self.undo, self.clear):
            widget.setEnabled(own)
        self._show_data()
        self.restart_timer.start()

    def _show_data(self) -> None:
        self.data_image.clear()   # until the loop sends the new data's density
        choice = self.data_choice.currentData()
        if choice == OWN_POINTS:
            points = self.own_points
            hint = "" if len(points) >= 2 else " Click or drag to draw points (right button erases)."
            self.data_status.setText(f"{len(points):,} points.{hint}")
        else:
            points = TOYS[choice].sample(2000, np.random.default_rng(0))
            self.data_status.setText(f"{TOYS[choice].title}: 2,000 of the 20,000 training points shown")
        self.shown_points = points
        if len(points):
            self.data_points.setData(points[:, 0], points[:, 1])
        else:
            self.data_points.clear()

    def _brushed(self, x: float, y: float, erase: bool, first: bool) -> None:
        if first:   # Undo takes back a whole stroke
            self.undo_stack.append(self.own_points)
        radius = self.brush_size.value() / 2
        if erase:
            keep = np.hypot(self.own_points[:, 0] - x, self.own_points[:, 1] - y) > radius
            self.own_points = self.own_points[keep]
        else:
            count = self.brush_count.value()
            angle = self.brush_rng.random(count) * 2 * math.pi
            distance = radius * np.sqrt(self.brush_rng.random(count))   # uniform over the brush's disc
            new = np.stack([x + distance * np.cos(angle), y + distance * np.sin(angle)], 1)
            self.own_points = np.concatenate([self.own_points, new])
        self._show_data()
        self.restart_timer.start()

    def undo_points(self) -> None:
        if self.undo_stack:
            self.own_points = self.undo_stack.pop()
            self._show_data()
            self.restart_timer.start()

    def clear_points(self) -> None:
        if len(self.own_points):
            self.undo_stack.append(self.own_points)
            self.own_points = np.zeros((0, 2))
            self._show_data()
            self.restart_timer.start()

    def set_points(self, points: np.ndarray) -> None:
        self.undo_stack.append(self.own_points)
        self.own_points = np.asarray(points, dtype=np.float64)
        self.data_choice.setCurrentIndex(self.data_choice.findData(OWN_POINTS))
        self._show_data()
        self.restart_timer.start()

    def ask_open_points(self) -> None:
        path = open_file(self, "Open points", "CSV of x,y (*.csv *.txt);;All files (*)")
        if not path:
            return
        try:
            self.set_points(load_points_csv(path))
        except (PointsError, OSError) as exc:
            QMessageBox.warning(self, "Open points", str(exc))

    # -- scenario and export ------------------------------------------------------------------
    def ask_save_scenario(self) -> None:
        path = save_file(self, "Save scenario", "playground.json", "Playground scenario (*.json)")
        if not path:
            return
        try:
            self.scenario().save(path)
        except (ScenarioError, OSError) as exc:
            QMessageBox.warning(self, "Save scenario", str(exc))

    def ask_open_scenario(self) -> None:
        path = open_file(self, "Open scenario", "Playground scenario (*.json);;All files (*)")
        if path:
            try:
                self.load_scenario(Scenario.load(path))
            except (ScenarioError, OSError) as exc:
                QMessageBox.warning(self, "Open scenario", str(exc))

    def load_scenario(self, scenario: Scenario) -> None:
        self.knobs = {name: dict(knobs) for name, knobs in scenario.families.items()}
        self.seed = scenario.seed
        if scenario.points is not None:
            self.set_points(scenario.points)
        else:
            self.data_choice.setCurrentIndex(self.data_choice.findData(scenario.toy))
        for name, tick in self.ticks.items():
            tick.setChecked(not scenario.families or name in scenario.families)

    def ask_export(self) -> None:
        path = save_file(self, "Export panels", "playground.png", "PNG image (*.png)")
        if path and not self.panels_widget.grab().save(path, "PNG"):
            QMessageBox.warning(self, "Export panels", f"Could not write {path}")

    # -- the live loop ------------------------------------------------------------------------
    def ticked(self) -> list[str]:
        return [name for name, tick in self.ticks.items() if tick.isChecked()]

    def ask_export_gif(self) -> None:
        if not self.recording.moments:
            QMessageBox.information(self, "Export GIF", "Nothing recorded yet: a moment is kept every second "
                                    "once the families have been measured.")
            return
        path = save_file(self, "Export GIF", "playground.gif", "Animated GIF (*.gif)")
        if path:
            self.export_gif_to(path)

    def export_gif_to(self, path: str) -> None:
        """Draw and write the recording so far on a pool thread; export_status says when done."""
        self.gif_jobs.submit(partial(jobs.export_playground_gif, self.recording.snapshot(), path))

    def _record(self) -> None:
        panels = [view.panel() for view in self.views.values()]
        panels = [panel for panel in panels if panel is not None]
        if self.target is not None and panels:
            data = Panel("data", self.target, self.shown_points, (f"{len(self.shown_points):,} points shown",))
            self.recording.add(time.monotonic() - self.started_at, [data, *panels])

    def restart(self) -> None:
        """Stop the loop, then start one on the current data and ticked families (all playing)."""
        self.stop()
        own = self.data_choice.currentData() == OWN_POINTS
        self._rebuild_panels()
        if (own and len(self.own_points) < 2) or not self.ticked() or not self.isVisible():
            return   # a hidden tab trains nothing: showing it starts the loop
        self.control = PlaygroundControl(running=set(self.ticked()))
        self.control.set_field_time(self.field_time.value() / 100)
        self.worker = PlaygroundWorker(self.scenario(), self.ticked(), self.control)
        self.recording, self.started_at, self.target = Recording(), time.monotonic(), None
        self.record_timer.start()
        self.worker.view_ready.connect(self._on_view)   # queued: the panel lives on the GUI thread
        self.worker.target_ready.connect(self._on_target)
        self.worker.failed.connect(self._on_failed)
        self.thread = start_thread(self.worker, self.worker.run, self._thread_ended)

    def is_running(self) -> bool:
        """A loop, or a GIF being written."""
        return self.thread is not None or bool(self._retired) or self.gif_jobs.is_busy()

    def stop(self, wait_ms: int = 0) -> None:
        """Ask the loop to end after its current slice; its thread and worker are kept until the
        thread has ended (`ended` then, once none is left). wait_ms > 0 blocks until then."""
        if self.control is not None:
            self.control.stop()
        self.record_timer.stop()   # what was recorded stays, for Export GIF
        if self.thread is not None:
            self._retired[self.thread] = self.worker
        self.control = self.worker = self.thread = None
        if wait_ms:
            for thread in list(self._retired):
                thread.wait(wait_ms)
            self.gif_jobs.wait(wait_ms)

    def _thread_ended(self, thread: QThread) -> None:
        self._retired.pop(thread, None)
        if thread is self.thread:
            self.control = self.worker = self.thread = None
        if not self.is_running():
            self.ended.emit()

    def _rebuild_panels(self) -> None:
        for panel in self.panels.values():
            self.panels_grid.removeWidget(panel)
            panel.deleteLater()
        self.panels, self.views = {}, {}
        self.kl_plot.clear()
        self.kl_curves = {}
        for i, name in enumerate(self.ticked(), start=1):
            panel = FamilyPanel(name, PLANE_FAMILIES[name].title, self._play, self._pause, self._step, self._reset,
                                self.ask_knobs, self._own_view)
            self.panels[name] = panel
            self.panels_grid.addWidget(panel, i // 4, i % 4)
            colour = COLOURS[i % len(COLOURS)]
            self.kl_curves[name] = self.kl_plot.plot([], [], pen=pg.mkPen(colour, width=2),
                                                     name=PLANE_FAMILIES[name].title)
        self.table.setRowCount(0)

    def _field_time_changed(self, value: int) -> None:
        self.field_time_label.setText(f"field t = {value / 100:.2f}")
        if self.control is not None:
            self.control.set_field_time(value / 100)   # the next own view of each family uses it

    def _play(self, name: str) -> None:
        if self.control is not None:
            self.control.play(name)

    def _pause(self, name: str) -> None:
        if self.control is not None:
            self.control.pause(name)

    def _step(self, name: str) -> None:
        if self.control is not None:
            self.control.step(name)

    def _reset(self, name: str) -> None:
        if self.control is not None:
            self.control.reset(name)

    def ask_knobs(self, name: str) -> None:
        dialog = KnobsDialog(name, self.knobs.get(name, {}), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.set_knobs(name, dialog.knobs)

    def set_knobs(self, name: str, knobs: dict) -> None:
        """A family's knobs (those that differ from its defaults): it starts again from fresh
        weights with them, the others train on; a saved scenario keeps them."""
        self.knobs[name] = dict(knobs)
        if self.control is not None:
            self.control.reset(name, self.knobs[name])

    def _own_view(self, name: str, on: bool) -> None:
        if self.control is not None:
            self.control.show_own_view(name, on)

    def _play_all(self) -> None:
        for name in self.panels:
            self._play(name)

    def _pause_all(self) -> None:
        for name in self.panels:
            self._pause(name)

    def _on_view(self, view: FamilyView) -> None:
        if self.sender() is not self.worker or view.name not in self.panels:
            return  # from a loop that was stopped
        before = self.views.get(view.name)
        self.views[view.name] = view
        self.panels[view.name].show_view(view)
        if before is None or len(before.history) != len(view.history):   # a new measurement, or a reset
            history = np.array([(r.seconds, r.kl) for r in view.history if math.isfinite(r.kl) and r.kl > 0])
            self.kl_curves[view.name].setData(*(history.T if len(history) else ([], [])))
        if not self.table_timer.isActive():
            self.table_timer.start()   # the table follows at most twice a second

    def _on_target(self, target: GridDensity) -> None:
        if self.sender() is not self.worker:
            return
        self.target = target
        self.data_image.setImage(target.brightness.T, autoLevels=False, levels=(0.0, 1.0))
        self.data_image.setRect(PLANE)
        self.data_plot.setToolTip(f"the data's density ({target.kind}), the yardstick's p_data; points in white")

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.views))
        for row, view in enumerate(self.views.values()):
            modes = "" if view.coverage is None else f"{view.coverage.covered}/{view.coverage.modes}"
            measured = view.measured
            cells = (view.title, f"{view.steps:,}", f"{view.train_seconds:.1f}",
                     "" if view.kl is None else f"{view.kl:.3f}", modes,
                     "" if measured is None else f"{measured.precision:.2f}",
                     "" if measured is None else f"{measured.recall:.2f}",
                     "" if measured is None else f"{measured.sample_ms:.0f}",
                     view.latent, "" if view.density is None else view.density.kind)
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))

    def _on_failed(self, cause: str, details: str) -> None:
        QMessageBox.warning(self, "Playground", cause)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self.thread is None:
            self.restart_timer.start()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().hideEvent(event)
        self._pause_all()  # the CPU goes back to the other tabs' work


class KnobsDialog(QDialog):
    """A 2-D family's knobs as a form made from its Config; `knobs` holds, once accepted, those
    that differ from the defaults. A combination the Config refuses is said, and the dialog stays."""

    def __init__(self, name: str, knobs: dict, parent: QWidget | None = None):
        super().__init__(parent, objectName=f"knobsDialog-{name}")
        self.config_cls = PLANE_FAMILIES[name].Config
        self.setWindowTitle(f"{PLANE_FAMILIES[name].title}: knobs")
        self.form = ConfigForm()
        self.form.set_config_class(self.config_cls)
        self.form.set_values(knobs)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
                                   | QDialogButtonBox.StandardButton.RestoreDefaults)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            lambda: self.form.set_values(vars(self.config_cls())))
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("A change starts the family again from fresh weights."))
        layout.addWidget(self.form)
        layout.addWidget(buttons)
        self.knobs: dict = dict(knobs)

    def accept(self) -> None:
        try:
            values = self.form.values()
            self.config_cls(**values)
        except (TypeError, ValueError) as exc:
            QMessageBox.warning(self, self.windowTitle(), str(exc))
            return
        defaults = vars(self.config_cls())
        self.knobs = {name: value for name, value in values.items() if value != defaults[name]}
        super().accept()
