"""The main window: composes the panels, wires their intents to background work, and owns the
lifecycle of every thread it starts (closing waits for training to stop and save)."""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QGroupBox,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from genstudio import __version__
from genstudio.core.families import ImageSpec, available_families, family_class
from genstudio.core.families.base import suggestion_reason
from genstudio.core.metrics.evaluate import describe_evaluation
from genstudio.core.runs import pretrained
from genstudio.core.runs.paths import new_run_dir, runs_dir
from genstudio.core.runs.run import RunDir, RunError, TrainSettings, plotted_figures
from genstudio.core.runtime.device import select_device
from genstudio.core.runtime.training import StepObserver, Trainer
from genstudio.core.trained.sampling import kept_beside

from . import file_dialogs, jobs
from .capabilities import panel_enabled
from .imaging import PixelView, to_qimage
from .layout import click_if_enabled, first_window_size, group_box, make_action, scrolling
from .panels import (
    ComparisonView,
    DatasetPanel,
    FamilyPicker,
    Gallery,
    InpaintPanel,
    LatentExplorer,
    MetricsPlot,
    PlaygroundPanel,
    TrainingPanel,
)
from .panels.training_panel import NO_RUN_OPEN
from .remembered import Remembered, load_remembered, save_remembered
from .run_view import FINISHING, IDLE, LOADING, PAUSED, RUNNING, RunView
from .workers import (
    LaunchedTrainingWorker,
    RunningTraining,
    TaskRunner,
    TrainingWorker,
    start_training,
)

log = logging.getLogger(__name__)

LEFT_COLUMN_WIDTH = 320
TRAINING_PANEL_WIDTH = 290


class MainWindow(QMainWindow):
    training_state_changed = Signal(str)  # idle, loading, running, paused, stopping
    training_ended = Signal(str)          # completed, stopped, failed or cancelled

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("genstudio")
        self.resize(first_window_size(self))
        self.preview: jobs.DatasetPreview | None = None
        self.loaded = None  # LoadedRun shown in the gallery (see _set_loaded)
        self._opened_history: list = []  # its metrics.jsonl records, for the curves of Continue
        self.training: RunningTraining | None = None  # the training now running, if any
        # Watches every step of the trainers this window starts in its own process (benchmarks).
        self.observe_training: Callable[[Trainer], StepObserver] | None = None
        self.run_view = RunView()  # what the Train tab shows: one run's, always (render_run_view)
        self._grid_shown = None  # the view's grid now in the latest-samples box
        self._after_training: Callable[[], None] | None = None  # asked for while a run finished
        self._finished_run: str | None = None
        self._end_reason = ""
        self._closing = False
        # The close that follows the last thread's end: a timer of the window's own, so that it
        # dies with the window (one that was never shown is deleted as soon as nothing runs).
        self._close_when_idle = QTimer(self, singleShot=True, interval=0)
        self._close_when_idle.timeout.connect(self.close)
        self.dataset_jobs, self.run_jobs, self.sample_jobs, self.export_jobs = (
            TaskRunner(self) for _ in range(4))
        self.remembered = load_remembered()
        self._build_panels()
        self._build_menus()
        self._connect()
        self._restore(self.remembered)
        self._on_family_changed(self.family_picker.current())
        self.dataset_panel.request_load()  # the dataset chosen, so Start works at once
        # The run open at the last close; else a newcomer sees a trained model at once: the
        # gallery, explorer and inpainting canvas open on the shipped default while the
        # default dataset loads for training.
        last = Path(self.remembered.open_run) if self.remembered.open_run else None
        shipped = {run.name for run in self.pretrained_runs}
        installed = last.name.removeprefix(pretrained.INSTALLED_PREFIX) if last else ""
        if last is not None and last.parent == runs_dir() and installed in shipped:
            self.open_pretrained(installed)  # through the manifest: a newer shipped model replaces the copy
        elif last is not None and RunDir(last).exists():
            self.open_run(str(last))
        elif pretrained.DEFAULT in shipped:
            self.open_pretrained(pretrained.DEFAULT)

    # -- layout -----------------------------------------------------------------------------
    def _build_panels(self) -> None:
        self.family_picker = FamilyPicker()
        self.dataset_panel = DatasetPanel()
        self.training_panel = TrainingPanel()
        self.metrics_plot = MetricsPlot()
        self.latest_samples = PixelView("Sample grids appear here while a run trains; "
                                        "the Gallery draws samples from any run")
        self.latest_samples.setObjectName("latestSamples")
        self.latest_caption = QLabel(objectName="latestCaption")
        # A long path must not widen the window: the label takes the width it is given.
        self.latest_caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.gallery = Gallery()
        self.explorer = LatentExplorer()
        self.inpaint = InpaintPanel()
        self.comparison = ComparisonView()
        # The Playground tab's plots are built the first time it is shown (open_playground): a
        # window that never shows it holds none of pyqtgraph's parentless menus, whose collection
        # by a garbage-collector pass on a worker thread can deadlock against the GUI thread.
        self.playground: PlaygroundPanel | None = None
        self.playground_page = QWidget(objectName="playgroundPage")
        QVBoxLayout(self.playground_page).setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget(objectName="mainTabs", accessibleName="Views")
        self.tabs.addTab(self._train_page(), "Train")
        self.tabs.addTab(self.gallery, "Gallery")
        self.tabs.addTab(self.explorer, "Explore")
        self.tabs.addTab(self.inpaint, "Inpaint")
        self.tabs.addTab(self.comparison, "Compare")
        self.tabs.addTab(self.playground_page, "Playground")
        self.tabs.currentChanged.connect(self._tab_changed)
        splitter = QSplitter(Qt.Orientation.Horizontal, objectName="mainSplitter")
        splitter.addWidget(self._left_column())
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setCollapsible(0, False)
        self.setCentralWidget(splitter)
        self.statusBar().showMessage("Ready")

    def open_playground(self) -> PlaygroundPanel:
        """The Playground tab's panel, made on first use, and the tab shown."""
        if self.playground is None:
            self.playground = PlaygroundPanel()
            self.playground.ended.connect(self._maybe_finish_closing)
            self.playground_page.layout().addWidget(self.playground)
        self.tabs.setCurrentWidget(self.playground_page)
        return self.playground

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.playground_page:
            self.open_playground()

    def _left_column(self) -> QWidget:
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.addWidget(group_box("Model family", self.family_picker))
        layout.addWidget(group_box("Dataset", self.dataset_panel))
        layout.addStretch(1)
        return scrolling(column, LEFT_COLUMN_WIDTH)

    def _train_page(self) -> QWidget:
        samples_box = QGroupBox("Latest samples")
        box_layout = QVBoxLayout(samples_box)
        box_layout.addWidget(self.latest_samples, 1)
        box_layout.addWidget(self.latest_caption)
        # Curves on top at full width (they need it); the square sample grid below.
        right = QSplitter(Qt.Orientation.Vertical, objectName="curvesSplitter")
        right.addWidget(group_box("Training curves", self.metrics_plot))
        right.addWidget(samples_box)
        right.setSizes([380, 340])
        page = QSplitter(Qt.Orientation.Horizontal, objectName="trainSplitter")
        self.training_panel.setMinimumWidth(TRAINING_PANEL_WIDTH)
        page.addWidget(self.training_panel)
        page.addWidget(right)
        page.setStretchFactor(1, 1)
        page.setCollapsible(0, False)
        return page

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = make_action(self, "&Open run…", "Ctrl+O", self.ask_open_run)
        self.export_action = make_action(self, "&Export samples…", None, self._export_all)
        self.quit_action = make_action(self, "&Quit", "Ctrl+Q", self.close)
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &recent run")
        self.pretrained_runs = self._available_pretrained()
        self.pretrained_menu = pretrained_menu = file_menu.addMenu("Open &pretrained model")
        pretrained_menu.setEnabled(bool(self.pretrained_runs))
        for run in self.pretrained_runs:
            pretrained_menu.addAction(make_action(self, run.title, None, partial(self.open_pretrained, run.name)))
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        for index, (text, keys) in enumerate((("&Train", "Ctrl+1"), ("&Gallery", "Ctrl+2"),
                                              ("E&xplore latent space", "Ctrl+3"),
                                              ("&Inpaint", "Ctrl+4"), ("&Compare runs", "Ctrl+5"),
                                              ("2-D &playground", "Ctrl+6"))):
            view_menu.addAction(make_action(self, text, keys, partial(self.tabs.setCurrentIndex, index)))
        view_menu.addSeparator()
        view_menu.addAction(make_action(self, "&Evaluate ticked runs…", "Ctrl+E", self._open_evaluation))
        panel = self.training_panel
        train_menu = self.menuBar().addMenu("&Training")
        help_menu = self.menuBar().addMenu("&Help")
        for text, keys, button in (
            ("&Start", "Ctrl+Return", panel.start_button),
            ("&Continue the open run", "Ctrl+Shift+Return", panel.continue_button),
            ("&Pause / resume", "Ctrl+P", panel.pause_button),
            ("S&top", "Ctrl+.", panel.stop_button),
            ("Sample &now", None, panel.sample_button),
            ("Sa&ve now", None, panel.save_button),
        ):
            # Through the button, so a shortcut obeys the same enabled state as the click.
            train_menu.addAction(make_action(self, text, keys, partial(click_if_enabled, button)))
        help_menu.addAction(make_action(self, "&Keyboard shortcuts", "F1", self.show_shortcuts))
        help_menu.addAction(make_action(self, "&About genstudio", None, self.show_about))

    def _open_evaluation(self) -> None:
        self.tabs.setCurrentWidget(self.comparison)
        if self.comparison.evaluate_button.isEnabled():
            self.comparison.evaluate_button.click()
        else:
            self._status("Tick one or more runs in the Compare list, then Evaluate (Ctrl+E)")

    def _connect(self) -> None:
        self.family_picker.family_changed.connect(self._on_family_changed)
        self.dataset_panel.load_requested.connect(self._load_dataset)
        self.dataset_jobs.progress.connect(self.dataset_panel.show_loading)
        self.dataset_jobs.succeeded.connect(self._on_dataset_loaded)
        self.dataset_jobs.failed.connect(self._on_dataset_failed)
        panel = self.training_panel
        panel.start_requested.connect(self.start_training)
        panel.continue_requested.connect(self.continue_training)
        panel.pause_requested.connect(self.toggle_pause)
        panel.stop_requested.connect(self.stop_training)
        panel.sample_requested.connect(lambda: self.training and self.training.control.request_samples())
        panel.save_requested.connect(lambda: self.training and self.training.control.request_save())
        panel.device_combo.currentTextChanged.connect(self._suggest_config)
        self.run_jobs.succeeded.connect(self._on_run_opened)
        self.run_jobs.failed.connect(self._on_run_failed)
        self.gallery.generate_requested.connect(self._generate)
        self.sample_jobs.succeeded.connect(self.gallery.show_samples)
        self.sample_jobs.preview.connect(self.gallery.show_sampling_progress)
        self.gallery.cancel_requested.connect(self._cancel_sampling)
        self.sample_jobs.failed.connect(lambda cause, _details: self.gallery.show_error(cause))
        self.gallery.export_requested.connect(self._export)
        self.export_jobs.succeeded.connect(self._on_exported)
        self.export_jobs.failed.connect(lambda cause, _d: self._status(f"Export failed: {cause}"))
        self.explorer.status.connect(self._status)
        self.explorer.gallery_images = self._selected_gallery_images
        self.inpaint.status.connect(self._status)
        self.inpaint.gallery_images = self._selected_gallery_images
        self.inpaint.device = self.training_panel.device_combo.currentText
        self.inpaint.suggested_runs = self.comparison.checked_paths
        for runner in self._runners():
            runner.busy_changed.connect(self._maybe_finish_closing)

    def _runners(self) -> tuple[TaskRunner, ...]:
        """Every runner of background jobs, the panels' included."""
        return (self.dataset_jobs, self.run_jobs, self.sample_jobs, self.export_jobs,
                *self.comparison.runners, *self.explorer.runners, *self.inpaint.runners)

    def _selected_gallery_images(self) -> list:
        samples = self.gallery.samples
        if samples is None:
            return []
        return [samples.images[i] for i in self.gallery.selected_indices()]

    # -- family and dataset -------------------------------------------------------------------
    def _on_family_changed(self, name: str) -> None:
        cls = family_class(name)
        self.training_panel.set_family(cls.title, cls.Config)
        self._update_conditional()
        self._suggest_config()

    def _load_dataset(self, request: jobs.DatasetRequest) -> None:
        self.preview = None
        self.training_panel.set_ready(False, "Loading the dataset…")
        self.dataset_panel.show_loading()
        self.dataset_jobs.submit(partial(jobs.load_preview, request))

    def _on_dataset_loaded(self, preview: jobs.DatasetPreview) -> None:
        self.preview = preview
        self.dataset_panel.show_preview(preview)
        self.training_panel.set_ready(True)
        self._update_conditional()
        self._suggest_config()
        self._status(f"Dataset: {preview.dataset.describe()}")

    def _on_dataset_failed(self, cause: str, details: str) -> None:
        log.info("dataset not loaded: %s\n%s", cause, details)
        self.dataset_panel.show_error(cause)
        self.training_panel.set_ready(False, cause)
        self._status(f"Dataset not usable: {cause}")

    def _suggest_config(self) -> None:
        """The Model form follows the job: knobs the person has not changed take the values the
        family suggests for the loaded images on the chosen device."""
        if self.preview is None:
            return
        dataset = self.preview.dataset
        spec = ImageSpec(dataset.channels, dataset.size)
        choice = self.training_panel.device_combo.currentText()
        try:
            device = select_device(choice)
        except ValueError:  # a device this machine lacks: Start will say so
            return
        suggestion = family_class(self.family_picker.current()).suggested_config(spec, device)
        self.training_panel.config_form.suggest(suggestion, suggestion_reason(spec))

    def _update_conditional(self) -> None:
        capabilities = family_class(self.family_picker.current()).capabilities
        family_can = panel_enabled("conditional", capabilities)
        classes = self.preview.dataset.num_classes if self.preview else 0
        reason = ("This family cannot be class-conditional" if not family_can
                  else "The dataset has no classes (subfolders)")
        self.training_panel.set_conditional_allowed(family_can and classes > 1, reason)

    # -- training -----------------------------------------------------------------------------
    def start_training(self) -> None:
        if self._after_finishing(self.start_training) or self.training is not None or self.preview is None:
            return
        try:
            values = self.training_panel.values()
        except ValueError as exc:
            self.training_panel.show_error(str(exc))
            return
        request = self.dataset_panel.request()
        settings = TrainSettings(family=self.family_picker.current(), data=request.source,
                                 size=request.size, channels=request.channels, **values)
        if self._start(settings, str(new_run_dir(settings.family, settings.data))):
            self.metrics_plot.set_first_shown(family_class(settings.family).plotted_metrics)

    def continue_training(self) -> None:
        """Train the open run further, up to the form's Steps, with its own model, data, batch
        and seed; the device, process count and how often it samples, saves and evaluates come
        from the form (what `train --resume` lets change, core.training.RESUME_MAY_CHANGE)."""
        loaded = self.loaded
        if self._after_finishing(self.continue_training):
            return
        if self.training is not None or loaded is None or loaded.weights_only:
            return
        panel = self.training_panel
        steps = panel.steps_spin.value()
        if steps <= loaded.step:
            panel.show_error(f"The open run is at step {loaded.step:,}: set Steps above that to train it further")
            return
        settings = dataclasses.replace(loaded.settings, steps=steps, device=panel.device_combo.currentText(),
                                       **panel.recording(loaded.settings.eval_metrics))
        history = [r for r in self._opened_history if int(r.get("step", 0)) <= loaded.step]
        # The same run goes on: its view keeps the latest grid and held-out summary.
        view = dataclasses.replace(self.run_view, step=loaded.step, total_steps=steps, ended=False)
        if not self._start(settings, str(loaded.run.path), resume=True, view=view):
            return
        # The form shows what trains: the run's family, settings and data (a new run started
        # after this one starts from them too); the curves go on from the run's history.
        self._show_run_settings(settings, loaded.family.config)
        panel.set_values(**self._form_values(settings))
        self.metrics_plot.set_first_shown(loaded.family.plotted_metrics)
        self.metrics_plot.load_history(history)
        self._status(f"Continuing {loaded.name} from step {loaded.step:,} to {steps:,}…")

    def _show_run_settings(self, settings: TrainSettings, family_config) -> None:
        """The family picker, the model form and the Dataset box show a run's own."""
        self.family_picker.select(settings.family)
        self.training_panel.set_values(conditional=settings.conditional,
                                       family_config=dataclasses.asdict(family_config))
        request = self.dataset_panel.request()
        if (request.source, request.size, request.channels) != (settings.data, settings.size, settings.channels):
            self.dataset_panel.set_request(settings.data, settings.size, settings.channels)
            self.dataset_panel.request_load()

    def _after_finishing(self, action: Callable[[], None]) -> bool:
        """While a stopped run draws its final samples and evaluation, a new start, Continue
        or open skips that work and happens once the run has ended. True if deferred."""
        if self.run_view.phase != FINISHING or self.training is None:
            return False
        self._after_training = action
        self.training.control.hurry()
        self._status("Skipping the final samples and evaluation of the stopped run…")
        return True

    @staticmethod
    def _form_values(settings: TrainSettings) -> dict:
        return {"batch": settings.batch, "seed": settings.seed, "conditional": settings.conditional,
                "minutes": settings.minutes,
                "sample_every": settings.sample_every, "sample_seconds": settings.sample_seconds,
                "checkpoint_every": settings.checkpoint_every,
                "eval_every": settings.eval_every, "eval_metrics": settings.eval_metrics}

    def _start(self, settings: TrainSettings, run_dir: str, resume: bool = False,
               view: RunView | None = None) -> bool:
        """Start training `settings` into `run_dir` (a new run, or `resume` the one there) in
        the app's thread or torchrun's processes; False (with the reason shown) if it cannot.
        `view`: what the tab shows of the run until its events arrive (default: a new run's)."""
        processes = self.training_panel.processes()
        if processes > 1:  # a data-parallel run in torchrun's processes, followed from here
            try:
                worker: TrainingWorker = LaunchedTrainingWorker(settings, run_dir, processes, resume=resume)
            except RunError as exc:
                self.training_panel.show_error(str(exc))
                return False
        else:
            # The preview already holds these images unless the panel changed since it loaded.
            request = jobs.DatasetRequest(settings.data, settings.size, settings.channels)
            dataset = self.preview.dataset if self.preview and self.preview.request == request else None
            worker = TrainingWorker(settings, run_dir, dataset=dataset, resume=resume,
                                    observe=self.observe_training)
        # A run still opening (the pretrained default at launch, say) would land in the
        # training's plot, run label and panels: it is dropped.
        self.run_jobs.cancel()
        self.training_panel.set_interactive(worker.control.interactive)
        self._connect_training(worker)
        self._finished_run, self._end_reason = None, ""
        self.training = start_training(worker, self._on_training_ended)
        view = view or RunView(family=settings.family, total_steps=settings.steps)
        view.starting(settings.data, settings.minutes, processes)
        self._show_view(view)
        self.training_panel.clear_error()
        self.metrics_plot.clear()
        self._set_loaded(None)
        self.gallery.show_placeholder("Training has started; its samples will appear here.")
        self.explorer.show_unavailable("Training has started; its latent space opens here when it ends.")
        if processes > 1:
            self._status(f"Starting {processes} training processes with torchrun…")
        else:
            self._status("Preparing the data and the model…")
        return True

    def _connect_training(self, worker: TrainingWorker) -> None:
        worker.loading.connect(self._on_loading)
        worker.run_started.connect(self._on_run_started)
        worker.step_logged.connect(self._on_step_logged)
        worker.samples_ready.connect(self._on_samples_ready)
        worker.checkpoint_saved.connect(self._on_checkpoint_saved)
        worker.evaluated.connect(self._on_evaluated)
        worker.pause_changed.connect(self._on_pause_changed)
        worker.notice.connect(self._on_notice)
        worker.batch_lowered.connect(lambda event: self._status(event.message[:1].upper() + event.message[1:]))
        worker.stopping.connect(self._on_stopping)
        worker.finishing.connect(self._on_finishing)
        worker.training_finished.connect(self._on_training_finished)
        worker.cancelled.connect(self._on_training_cancelled)
        worker.failed.connect(self._on_training_failed)

    def toggle_pause(self) -> None:
        control = self.training and self.training.control
        if not control or not control.interactive or self.run_view.phase not in (RUNNING, PAUSED):
            return
        if control.paused:
            control.resume()
            self._status("Resumed")
        else:
            control.pause()
            self._status("Paused — press Resume (or Space) to continue")
        self.run_view.pause_changed(control.paused)
        self.render_run_view()

    def stop_training(self) -> None:
        if self.training is None:
            return
        if self.run_view.phase == FINISHING:  # the button reads Skip
            self.training.control.hurry()
            self._status("Skipping the final samples and evaluation…")
            return
        self.training.control.stop()
        self.run_view.stop_asked()
        self.render_run_view()
        self._status("Stopping…")

    # -- the run on the Train tab ---------------------------------------------------------
    def _show_view(self, view: RunView) -> None:
        """Another run takes the Train tab: nothing of the last one stays."""
        self.run_view = view
        self.render_run_view()

    def render_run_view(self) -> None:
        view = self.run_view
        changed = view.phase != self.training_panel.state
        self.training_panel.render(view)
        if view.latest_grid is not self._grid_shown:  # converted once per grid, not per logged step
            self._grid_shown = view.latest_grid
            self.latest_samples.set_image(None if view.latest_grid is None else to_qimage(view.latest_grid))
            self.latest_caption.setText("" if view.latest_grid is None else
                                        f"step {view.latest_grid_step:,} · {Path(view.latest_grid_path).name}")
            self.latest_caption.setToolTip(view.latest_grid_path)
        free = view.phase in (IDLE, FINISHING)  # finishing: what is asked for skips the rest first
        self.family_picker.setEnabled(free)
        self.dataset_panel.setEnabled(free)
        self.open_action.setEnabled(free)
        self.recent_menu.setEnabled(free and not self.recent_menu.isEmpty())
        self.pretrained_menu.setEnabled(free and bool(self.pretrained_runs))
        if changed:
            self.training_state_changed.emit(view.phase)

    def _on_loading(self, done: int, total: int) -> None:
        self.run_view.loaded_images(done, total)
        self.render_run_view()

    def _on_run_started(self, event) -> None:
        self.run_view.run_started(event, paused=self.training.control.paused)
        self.render_run_view()
        self._status(f"Training {event.num_parameters:,} parameters on {event.device}: {event.dataset}")

    def _on_step_logged(self, event) -> None:
        self.run_view.step_logged(event)
        self.render_run_view()
        self.metrics_plot.add_record(event.step, event.metrics)

    def _on_stopping(self, event) -> None:
        self.run_view.stopped_at(event.step)
        self.render_run_view()
        self._status(f"Stopped at step {event.step:,}; saving a checkpoint, then drawing the last samples…")

    def _on_samples_ready(self, event) -> None:
        self.run_view.samples_ready(event)
        self.render_run_view()
        self.gallery.show_training_grid(to_qimage(event.grid), event.step)

    def _on_checkpoint_saved(self, event) -> None:
        text = f"Saved checkpoint at step {event.step:,}: {event.path}"
        # The last save of a run: the final grid and evaluation follow (minutes for a PixelCNN).
        if self.run_view.checkpoint_saved(event):
            text += " — drawing the last samples and measuring; Skip (or closing the window) skips them…"
            self.render_run_view()
        self._status(text)

    def _on_finishing(self, what: str, done: int, total: int) -> None:
        self.run_view.finishing_progress(what, done, total)
        self.render_run_view()

    def _on_evaluated(self, event) -> None:
        self.run_view.evaluated(event)
        self.render_run_view()
        self.metrics_plot.add_record(event.step, plotted_figures(event.figures))

    def _on_pause_changed(self, _event) -> None:
        self.run_view.pause_changed(self.training.control.paused)  # the control's word, not the event's
        self.render_run_view()

    def _on_notice(self, event) -> None:
        self.run_view.notices.append(event.message)
        self.render_run_view()
        self._status(event.message)

    def _on_training_finished(self, event) -> None:
        self._finished_run, self._end_reason = event.run_dir, event.reason
        self.run_view.finished(event.step)
        self.render_run_view()
        self._status(f"Training {event.reason} at step {event.step:,}; run saved in {event.run_dir}")

    def _on_training_cancelled(self) -> None:
        self._end_reason = "cancelled"
        self._status("Training was stopped before it began")

    def _on_training_failed(self, cause: str, details: str) -> None:
        self._end_reason = "failed"
        log.error("training failed: %s\n%s", cause, details)
        self.training_panel.show_error(f"Training failed: {cause}", details)
        self._status(f"Training failed: {cause}")

    def _on_training_ended(self, _thread: QThread) -> None:
        self.training = None
        self.run_view.session_ended()
        self.render_run_view()
        self.training_ended.emit(self._end_reason or "failed")
        action, self._after_training = self._after_training, None
        if action is not None and not self._closing:
            action()  # asked for while the run finished: it replaces opening the finished run
        elif self._finished_run and not self._closing:
            self.open_run(self._finished_run)
        self._maybe_finish_closing()

    # -- runs and the gallery -------------------------------------------------------------
    def ask_open_run(self) -> None:
        path = self.ask_run_folder()
        if path:
            self.open_run(path)

    def ask_run_folder(self) -> str:
        """The Open run dialog; tests replace this method to bypass it."""
        return file_dialogs.choose_folder(self, "Open a genstudio run folder", file_dialogs.RUNS)

    def _available_pretrained(self) -> list:
        try:
            return pretrained.available()
        except pretrained.PretrainedError as exc:  # a damaged manifest must not stop the app
            log.warning("pretrained runs unavailable: %s", exc)
            return []

    def open_pretrained(self, name: str) -> None:
        if self._after_finishing(partial(self.open_pretrained, name)):
            return
        self._status(f"Opening the pretrained {name} model…")
        device = self.training_panel.device_combo.currentText()
        self.run_jobs.submit(partial(jobs.open_pretrained, name, device))

    def open_run(self, path: str) -> None:
        if self._after_finishing(partial(self.open_run, path)):
            return
        self._status(f"Opening run {path}…")
        device = self.training_panel.device_combo.currentText()
        self.run_jobs.submit(partial(jobs.open_run, str(path), device))

    def _set_loaded(self, loaded, history: list | None = None) -> None:
        """The run the gallery, explorer and inpainting canvas show, and Continue trains further."""
        self.loaded = loaded
        self._opened_history = history or []
        if loaded is None:
            reason = NO_RUN_OPEN
        elif loaded.weights_only:
            reason = (f"{loaded.name} is a pretrained model, shipped without its optimizer state: "
                      "it cannot train further; start a new run instead")
        else:
            reason = ""
        self.training_panel.set_continuable(reason)

    def _on_run_opened(self, opened: jobs.OpenedRun) -> None:
        loaded = opened.loaded
        self.remembered.open_run = str(loaded.run.path)
        self.remembered.add_recent_run(str(loaded.run.path))
        self._fill_recent_menu()
        self._set_loaded(loaded, opened.metrics)
        self.metrics_plot.set_first_shown(loaded.family.plotted_metrics)
        self.metrics_plot.load_history(opened.metrics)
        settings = loaded.settings
        evaluations = [r for r in opened.metrics if "reference_images" in r]
        grid_step, grid_path, grid = opened.latest_grid or (0, "", None)
        same_run = self.run_view.run_dir == str(loaded.run.path)  # e.g. reopened as its training ends
        self._show_view(RunView(
            images_per_sec=self.run_view.images_per_sec if same_run else None,
            run_dir=str(loaded.run.path), family=loaded.family.name, data=settings.data, step=loaded.step,
            total_steps=settings.steps, minutes=settings.minutes, ended=True,
            likelihood=describe_evaluation(evaluations[-1]) if evaluations else "",
            # the newest checkpoint was damaged; the previous one was opened
            notices=[loaded.notice] if loaded.notice else [],
            latest_grid=grid, latest_grid_step=grid_step, latest_grid_path=grid_path))
        self._show_run_settings(settings, loaded.family.config)
        title = f"{loaded.family.title} · {loaded.name} · step {loaded.step:,}"
        if panel_enabled("gallery", loaded.family.capabilities):
            self.gallery.set_run(title, loaded.class_names if loaded.family.spec.num_classes else [],
                                 loaded.family.sampling_defaults())
        else:
            self.gallery.show_placeholder(f"{loaded.family.title} cannot draw samples.")
        if panel_enabled("explorer", loaded.family.capabilities):
            self.explorer.set_run(loaded)
        else:
            self.explorer.show_unavailable(f"{loaded.family.title} has no latent space to explore: "
                                           f"{loaded.family.why_no_latent}")
        if panel_enabled("inpaint", loaded.family.capabilities):
            self.inpaint.set_run(loaded)
        else:
            self.inpaint.show_unavailable(f"{loaded.family.title} cannot inpaint.")
        self._status(f"Opened run {loaded.run.path} (step {loaded.step:,})")

    def _on_run_failed(self, cause: str, details: str) -> None:
        log.info("run not opened: %s\n%s", cause, details)
        self._status(f"Could not open the run: {cause}")
        self.gallery.show_error(f"Could not open the run: {cause}")

    def _generate(self, count: int, seed: int, label: int | None, options: dict) -> None:
        if self.loaded is not None:
            self.sample_jobs.submit(partial(jobs.generate_samples, self.loaded, count, seed, label, options))

    def _cancel_sampling(self) -> None:
        self.sample_jobs.cancel()  # the sampler stops at its next step; its result is dropped
        self.gallery.show_cancelled()

    def _export(self, request: jobs.ExportRequest) -> None:
        self.export_jobs.submit(partial(jobs.export, request))

    def _export_all(self) -> None:
        if self.gallery.samples is None:
            self._status("Nothing to export yet: train a model or open a run first")
            return
        self.gallery.export_all()

    def _on_exported(self, paths: list) -> None:
        where = paths[0] if len(paths) == 1 else f"{paths[0].parent} as {paths[0].name}, …"
        beside = sum(map(kept_beside, paths))
        note = f"; {beside} named -2, -3, … beside files already there (nothing replaced)" if beside else ""
        self._status(f"Exported {len(paths)} image{'s' * (len(paths) != 1)} to {where}{note}")

    # -- shutdown -------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        # Space reaches the window only when no focused field or button took it (not typing).
        if event.key() == Qt.Key.Key_Space and not event.modifiers():
            click_if_enabled(self.training_panel.pause_button)
            return
        super().keyPressEvent(event)

    def busy(self) -> bool:
        return (self.training is not None or any(r.is_busy() for r in self._runners())
                or (self.playground is not None and self.playground.is_running()))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if not self.busy():
            self._remember()
            event.accept()
            return
        # Stop, let the worker save (skipping its final grid and evaluation) and close once
        # every thread ended; the window stays responsive meanwhile.
        event.ignore()
        self._closing = True
        if self.training is not None:
            self.training.control.hurry()
            if self.run_view.phase in (LOADING, RUNNING, PAUSED):
                self.run_view.stop_asked()
                self.render_run_view()
        for runner in (self.dataset_jobs, self.run_jobs, self.sample_jobs, *self.comparison.runners):
            runner.cancel()
        self.explorer.cancel_work()
        self.inpaint.cancel_work()
        if self.playground is not None:
            self.playground.stop()
        self._status("Stopping training and saving before closing…")

    def _maybe_finish_closing(self, *_args) -> None:
        if self._closing and not self.busy():
            self._close_when_idle.start()

    def shutdown(self, timeout_ms: int = 60_000) -> None:
        """Blocking stop of every thread (when the application quits without closing us)."""
        if self.training is not None:
            self.training.control.hurry()
        self.explorer.cancel_work()
        self.inpaint.cancel_work()
        for runner in self._runners():
            runner.cancel()
            runner.wait(timeout_ms)
        if self.training is not None:
            self.training.thread.wait(timeout_ms)
        if self.playground is not None:
            self.playground.stop(wait_ms=timeout_ms)

    def _status(self, text: str) -> None:
        self.statusBar().showMessage(text)

    # -- what is remembered between launches ----------------------------------------------
    def _splitters(self) -> list[QSplitter]:
        return self.findChildren(QSplitter)

    def _restore(self, remembered: Remembered) -> None:
        if remembered.geometry:
            self.restoreGeometry(QByteArray.fromHex(remembered.geometry.encode()))
        for splitter in self._splitters():
            if splitter.objectName() in remembered.splitters:
                splitter.restoreState(QByteArray.fromHex(remembered.splitters[splitter.objectName()].encode()))
        if remembered.family in available_families():
            self.family_picker.select(remembered.family)
        dataset = remembered.dataset
        if isinstance(dataset.get("source"), str) and isinstance(dataset.get("size"), int):
            self.dataset_panel.set_request(dataset["source"], dataset["size"], dataset.get("channels"))
        self.gallery.seed_spin.setValue(remembered.gallery_seed)
        if remembered.gallery_count:
            self.gallery.count_spin.setValue(remembered.gallery_count)
        self.comparison.tick_when_listed(remembered.compare_ticked)
        self.tabs.setCurrentIndex(min(max(remembered.tab, 0), self.tabs.count() - 1))
        self._fill_recent_menu()

    def _remember(self) -> None:
        remembered = self.remembered
        remembered.geometry = bytes(self.saveGeometry().toHex()).decode()
        remembered.splitters = {s.objectName(): bytes(s.saveState().toHex()).decode() for s in self._splitters()
                                if s.objectName()}
        remembered.tab = self.tabs.currentIndex()
        remembered.family = self.family_picker.current()
        request = self.dataset_panel.request()
        remembered.dataset = {"source": request.source, "size": request.size, "channels": request.channels}
        remembered.gallery_seed = self.gallery.seed_spin.value()
        remembered.gallery_count = self.gallery.count_spin.value()
        remembered.compare_ticked = self.comparison.checked_paths()
        save_remembered(remembered)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.remembered.recent_runs:
            if RunDir(path).exists():
                action = make_action(self.recent_menu, Path(path).name, None, partial(self.open_run, path))
                action.setToolTip(path)
        self.recent_menu.setEnabled(not self.recent_menu.isEmpty() and self.training_panel.state == IDLE)

    # -- help -----------------------------------------------------------------------------
    def keyboard_shortcuts(self) -> list[tuple[str, str, str]]:
        """(where, what, keys) of every shortcut: the menus', then each tab's."""
        native = QKeySequence.SequenceFormat.NativeText
        rows = [("Window", action.text().replace("&", "").rstrip("…"), action.shortcut().toString(native))
                for action in self.actions() if not action.shortcut().isEmpty()]
        for index in range(self.tabs.count()):
            for shortcut in self.tabs.widget(index).findChildren(QShortcut):
                if shortcut.whatsThis():
                    rows.append((self.tabs.tabText(index), shortcut.whatsThis(), shortcut.key().toString(native)))
        return rows

    def show_shortcuts(self) -> QMessageBox:
        rows = "".join(f"<tr><td>{html.escape(where)}</td><td>{html.escape(what)}</td><td><b>{html.escape(keys)}</b></td></tr>"
                       for where, what, keys in self.keyboard_shortcuts())
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard shortcuts",
                          f"<table cellspacing='6'>{rows}</table>", QMessageBox.StandardButton.Close, self)
        box.setObjectName("shortcutsDialog")
        box.open()  # not exec(): the window keeps running
        return box

    def show_about(self) -> QMessageBox:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        tour = (f"<p>The tour of every panel is in <a href='{readme.as_uri()}'>README.md</a>.</p>"
                if readme.is_file() else "")
        box = QMessageBox(QMessageBox.Icon.Information, "About genstudio",
                          f"<p><b>genstudio {__version__}</b>: train generative models of every family on "
                          f"your own images and see what each learns.</p>{tour}"
                          "<p>Help → Keyboard shortcuts (F1) lists every key.</p>",
                          QMessageBox.StandardButton.Close, self)
        box.setObjectName("aboutDialog")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.open()
        return box
