"""Hyper-parameters, the Start/Pause/Stop controls and live progress of a training run."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.device import DEVICE_CHOICES

from ..layout import push_button, scrolling
from ..run_view import FINISHING, IDLE, LOADING, PAUSED, RUNNING, RunView
from .config_form import ConfigForm

ERROR_STYLE = "color: #c62828;"
WARNING_STYLE = "color: #b26a00;"
_DEFAULTS = TrainSettings()


NO_RUN_OPEN = "Open a run (File → Open run…) to train it further"
CONTINUE_TIP = ("Train the open run further, up to Steps, with its own model, data, batch and seed; "
                "the device, the time limit and how often it samples, saves and evaluates come from "
                "this form (Ctrl+Shift+Return)")

APP_SAMPLE_SECONDS = 30  # the Train tab's default; the CLI's is off (TrainSettings.sample_seconds)
LIKELIHOOD_ONLY = ("bpd",)
QUALITY_METRICS = ("bpd", "fid", "precision", "recall")


class TrainingPanel(QWidget):
    start_requested = Signal()
    continue_requested = Signal()  # train the open run further
    pause_requested = Signal()   # toggles pause / resume
    stop_requested = Signal()
    sample_requested = Signal()
    save_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        self.state = IDLE  # the phase of the run shown (render)
        self._ready, self._not_ready_reason = False, "Loading the dataset…"
        self._conditional_allowed = False
        self._interactive = True  # False while a launched (multi-process) run trains
        self._cannot_continue = NO_RUN_OPEN  # why the open run cannot train further; "" if it can
        self._error_details = ""
        self._build_settings()
        self._build_controls()
        self._build_status()
        # The settings scroll; the controls and progress stay in view below them, however
        # long a family's form is and however low the window.
        settings = QWidget()
        settings_layout = QVBoxLayout(settings)
        settings_layout.setContentsMargins(0, 0, 0, 0)
        settings_layout.addWidget(self.settings_box)
        settings_layout.addWidget(self.model_box)
        settings_layout.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scrolling(settings, 0), 1)
        layout.addWidget(self.controls_box)
        self.render(RunView())

    # -- layout -----------------------------------------------------------------------------
    def _build_settings(self) -> None:
        self.steps_spin = _spin("stepsSpin", "Steps", 1, 10_000_000, _DEFAULTS.steps, step=100)
        self.minutes_spin = QDoubleSpinBox(objectName="minutesSpin", accessibleName="Time limit in minutes")
        self.minutes_spin.setRange(0, 100_000)
        self.minutes_spin.setDecimals(2)
        self.minutes_spin.setSuffix(" min")
        self.minutes_spin.setSpecialValueText("none")
        self.minutes_spin.setValue(_DEFAULTS.minutes)
        self.minutes_spin.setToolTip("Stop after this much training time (pauses left out), as Stop does: the "
                                     "last whole step is saved and the final samples drawn. The run ends at "
                                     "Steps or at this time, whichever comes first")
        self.batch_spin = _spin("batchSpin", "Batch size", 1, 4096, _DEFAULTS.batch)
        self.seed_spin = _spin("trainSeedSpin", "Training seed", 0, 2**31 - 1, _DEFAULTS.seed)
        self.device_combo = QComboBox(objectName="deviceCombo", accessibleName="Device")
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setToolTip("auto: CUDA if present, else Apple MPS, else CPU")
        self.processes_spin = _spin("processesSpin", "Processes", 1, max_processes(), 1)
        self.processes_spin.setSpecialValueText("1 (in the app)")
        self.processes_spin.setToolTip(
            "More than 1: a data-parallel run in that many processes, started with torchrun "
            "(gloo on the CPU, one GPU each with NCCL); the batch is split between them and the app "
            "follows the run. Pause, Sample now and Save now are not available for it; Stop is.")
        self.conditional_check = QCheckBox("Class-conditional", objectName="conditionalCheck",
                                           accessibleName="Class-conditional")
        self.sample_every_spin = _spin("sampleEverySpin", "Sample every", 0, 10_000_000,
                                       _DEFAULTS.sample_every, step=50)
        self.sample_every_spin.setSpecialValueText("end only")
        self.sample_every_spin.setSuffix(" steps")
        # By time as well: at the default steps a CPU shows nothing for minutes.
        self.sample_seconds_spin = _spin("sampleSecondsSpin", "Sample every seconds", 0, 86_400,
                                         APP_SAMPLE_SECONDS, step=10)
        self.sample_seconds_spin.setSuffix(" s")
        self.sample_seconds_spin.setSpecialValueText("off")
        self.sample_seconds_spin.setToolTip("Also draw a grid after this many seconds of training without one")
        self.save_every_spin = _spin("saveEverySpin", "Save every", 0, 10_000_000,
                                     _DEFAULTS.checkpoint_every, step=100)
        self.save_every_spin.setSpecialValueText("end only")
        self.eval_every_spin = _spin("evalEverySpin", "Evaluate every", 0, 10_000_000,
                                     _DEFAULTS.eval_every, step=100)
        self.eval_every_spin.setSpecialValueText("end only")
        self.eval_every_spin.setToolTip("Measure held-out bits/dim (and sample metrics if ticked) "
                                        "every this many steps, in the training thread")
        self.quality_check = QCheckBox("Sample metrics (FID, precision, recall)",
                                       objectName="qualityMetricsCheck",
                                       accessibleName="Measure sample metrics during training")
        self.quality_check.setToolTip(f"Adds FID, precision and recall of {_DEFAULTS.eval_samples} "
                                      f"samples to each evaluation, with the {_DEFAULTS.eval_extractor} "
                                      "feature extractor (fast on a CPU)")
        self.settings_box = QGroupBox("Run")
        form = QFormLayout(self.settings_box)
        for label, widget in (("Steps", self.steps_spin), ("Time limit", self.minutes_spin),
                              ("Batch", self.batch_spin),
                              ("Seed", self.seed_spin), ("Device", self.device_combo),
                              ("Processes", self.processes_spin),
                              ("Sample every", self.sample_every_spin),
                              ("or every", self.sample_seconds_spin),
                              ("Save every", self.save_every_spin),
                              ("Evaluate every", self.eval_every_spin)):
            form.addRow(label, widget)
        form.addRow(self.quality_check)
        form.addRow(self.conditional_check)
        self.model_box = QGroupBox("Model")
        self.config_form = ConfigForm()
        self.config_form.changed.connect(self._update_buttons)
        self.conditional_check.toggled.connect(self.config_form.set_conditional)
        QVBoxLayout(self.model_box).addWidget(self.config_form)

    def _build_controls(self) -> None:
        self.start_button = push_button("Start", "startButton", "Start training (Ctrl+Return)")
        self.pause_button = push_button("Pause", "pauseButton", "Pause or resume (Space / Ctrl+P)")
        self.stop_button = push_button("Stop", "stopButton", "Stop after this step and save (Ctrl+.)")
        self.sample_button = push_button("Sample now", "sampleNowButton", "Draw a sample grid now")
        self.save_button = push_button("Save now", "saveNowButton", "Write a checkpoint now")
        self.continue_button = push_button("Continue", "continueButton", CONTINUE_TIP)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start_requested)
        self.continue_button.clicked.connect(self.continue_requested)
        self.pause_button.clicked.connect(self.pause_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.sample_button.clicked.connect(self.sample_requested)
        self.save_button.clicked.connect(self.save_requested)

    def _build_status(self) -> None:
        self.progress = QProgressBar(objectName="trainingProgress", accessibleName="Training progress")
        self.progress.setFormat("not started")
        self.progress.setValue(0)
        self.speed_label = QLabel("", objectName="speedLabel", wordWrap=True)  # or the end-of-run work
        self.eta_label = QLabel("", objectName="etaLabel")
        self.run_label = QLabel("", objectName="runLabel", wordWrap=True)
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.likelihood_label = QLabel("", objectName="likelihoodLabel", wordWrap=True)
        self.likelihood_label.setToolTip("Likelihood bounds measured when the run ended; lower bits/dim is better")
        # Faults training handled itself (a skipped NaN step, a rollback, a damaged
        # checkpoint replaced by the previous one): the run goes on, but the user should know.
        self.notice_label = QLabel("", objectName="trainingNotice", wordWrap=True)
        self.notice_label.setStyleSheet(WARNING_STYLE)
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice_label.hide()
        self.error_label = QLabel("", objectName="trainingError", wordWrap=True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = push_button("Details…", "errorDetailsButton", "Show the full error report")
        self.details_button.clicked.connect(self.show_error_details)
        self.controls_box = QGroupBox("Training")
        grid = QGridLayout(self.controls_box)
        grid.addWidget(self.start_button, 0, 0)
        grid.addWidget(self.pause_button, 0, 1)
        grid.addWidget(self.stop_button, 0, 2)
        # Continue sits under Start: the two ways to begin training, enabled while nothing trains.
        grid.addWidget(self.continue_button, 1, 0)
        grid.addWidget(self.sample_button, 1, 1)
        grid.addWidget(self.save_button, 1, 2)
        grid.addWidget(self.progress, 2, 0, 1, 3)
        speed_row = QHBoxLayout()
        speed_row.addWidget(self.speed_label)
        speed_row.addStretch(1)
        speed_row.addWidget(self.eta_label)
        grid.addLayout(speed_row, 3, 0, 1, 3)
        grid.addWidget(self.run_label, 4, 0, 1, 3)
        grid.addWidget(self.likelihood_label, 5, 0, 1, 3)
        grid.addWidget(self.error_label, 6, 0, 1, 3)
        grid.addWidget(self.details_button, 7, 2)
        grid.addWidget(self.notice_label, 8, 0, 1, 3)
        self.clear_error()

    # -- inputs -------------------------------------------------------------------------------
    def set_family(self, title: str, config_cls: type | None) -> None:
        self.model_box.setTitle(f"Model · {title}")
        self.config_form.set_config_class(config_cls)
        self.config_form.set_conditional(self.conditional_check.isChecked())
        self._update_buttons()

    def set_conditional_allowed(self, allowed: bool, reason: str = "") -> None:
        """Enabled only for a family that can condition and a dataset with several classes."""
        self._conditional_allowed = allowed
        if not allowed:
            self.conditional_check.setChecked(False)
        self.conditional_check.setToolTip("" if allowed else reason)
        self._update_buttons()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Whether Start can be pressed (a dataset is loaded and usable)."""
        self._ready, self._not_ready_reason = ready, reason
        self._update_buttons()

    def set_continuable(self, reason: str) -> None:
        """Whether Continue can be pressed: "" if the open run can train further, else why
        not (no run open, a pretrained model without its optimizer state)."""
        self._cannot_continue = reason
        self._update_buttons()

    def values(self) -> dict[str, Any]:
        """TrainSettings fields from the form; raises ValueError for an invalid knob."""
        return {
            "steps": self.steps_spin.value(), "batch": self.batch_spin.value(),
            "seed": self.seed_spin.value(), "device": self.device_combo.currentText(),
            "conditional": self.conditional_check.isChecked(),
            **self._schedule(),
            "family_config": self.config_form.values(),
        }

    def _schedule(self) -> dict[str, Any]:
        """How long a run trains this time, how often it samples, saves and evaluates, and what it
        measures."""
        return {"minutes": self.minutes_spin.value(),
                "sample_every": self.sample_every_spin.value(), "sample_seconds": float(self.sample_seconds_spin.value()),
                "checkpoint_every": self.save_every_spin.value(),
                "eval_every": self.eval_every_spin.value(),
                "eval_metrics": QUALITY_METRICS if self.quality_check.isChecked() else LIKELIHOOD_ONLY}

    def recording(self, run_metrics: tuple[str, ...]) -> dict[str, Any]:
        """How often a continued run samples, saves and evaluates, and what it measures.

        The box says only whether sample metrics are measured: a run that measures another
        list of them (`train --eval-metrics bpd,kid`) keeps its own while the box agrees."""
        schedule = self._schedule()
        agrees = (tuple(run_metrics) != LIKELIHOOD_ONLY) == (schedule["eval_metrics"] != LIKELIHOOD_ONLY)
        return {**schedule, "eval_metrics": tuple(run_metrics) if agrees else schedule["eval_metrics"]}

    def processes(self) -> int:
        """1: train in the app's own thread; more: a torchrun launch (not a TrainSettings field)."""
        return self.processes_spin.value()

    def set_values(self, **values: Any) -> None:
        """Fill the form (tests, and later: restoring a run's settings)."""
        spins = {"steps": self.steps_spin, "batch": self.batch_spin, "seed": self.seed_spin,
                 "sample_every": self.sample_every_spin, "checkpoint_every": self.save_every_spin,
                 "eval_every": self.eval_every_spin}
        for name, value in values.items():
            if name in spins:
                spins[name].setValue(int(value))
            elif name == "minutes":
                self.minutes_spin.setValue(float(value))
            elif name == "sample_seconds":
                self.sample_seconds_spin.setValue(round(value))
            elif name == "device":
                self.device_combo.setCurrentText(value)
            elif name == "conditional":
                self.conditional_check.setChecked(bool(value))
            elif name == "eval_metrics":
                self.quality_check.setChecked(tuple(value) != LIKELIHOOD_ONLY)
            elif name == "family_config":
                self.config_form.set_values(value)
            else:
                raise KeyError(f"the training panel has no field {name!r}")

    # -- state --------------------------------------------------------------------------------
    def set_interactive(self, interactive: bool) -> None:
        """Whether the run that trains honours pause, sample now and save now."""
        self._interactive = interactive
        self._update_buttons()

    def render(self, view: RunView) -> None:
        """Show `view`: its phase in the buttons, its progress, speed, folder, held-out summary
        and notices. Everything shown here comes from the one view."""
        self.state = view.phase
        self.pause_button.setText("Resume" if view.phase == PAUSED else "Pause")
        finishing = view.phase == FINISHING
        self.stop_button.setText("Skip" if finishing else "Stop")
        self.stop_button.setToolTip("Skip the final samples and evaluation; the checkpoint is saved" if finishing
                                    else "Stop after this step and save (Ctrl+.)")
        self._render_progress(view)
        live = view.phase in (RUNNING, PAUSED)
        speed = "" if view.images_per_sec is None else f"{view.images_per_sec:,.0f} images/s"
        if finishing:
            self.speed_label.setText(f"{view.finishing[:1].upper()}{view.finishing[1:]}…")
        else:
            self.speed_label.setText(speed if live or not speed else f"trained at {speed}")
        self.eta_label.setText("ETA " + format_duration(view.eta_seconds) if view.eta_seconds is not None else "")
        lines = [f"Run folder: {view.run_dir}"] if view.run_dir else []
        lines += [f"Data: {view.data}"] if view.data else []
        lines += [f"Device: {view.device}"] if view.device else []
        self.run_label.setText("\n".join(lines))
        self.likelihood_label.setText(view.likelihood)
        self.notice_label.setText("\n".join(view.notices))
        self.notice_label.setVisible(bool(view.notices))
        self._update_buttons()

    def _render_progress(self, view: RunView) -> None:
        bar = self.progress
        if view.launching:
            bar.setFormat(f"starting {view.launching} processes…")
            bar.setRange(0, 0)  # busy: the processes report nothing until the run starts
        elif view.loading is not None:
            bar.setFormat("loading data %v / %m")
            bar.setRange(0, view.loading[1])
            bar.setValue(view.loading[0])
        elif view.phase == FINISHING:
            # What is being done is the line below the bar: a busy bar shows no text, and a
            # stage's name does not fit in it.
            done, total = view.finishing_done
            bar.setFormat(f"step {view.step:,} saved" + (f" · {done:,}/{total:,}" if total else ""))
            bar.setRange(0, total)  # 0: busy until the stage counts
            bar.setValue(done)
        elif not view.run_dir:
            bar.setFormat("not started" if view.phase == IDLE else "preparing…")
            bar.setRange(0, 1 if view.phase == IDLE else 0)
            bar.setValue(0)
        elif view.minutes > 0 and view.ended:
            bar.setFormat(f"step {view.step:,}")
            bar.setRange(0, 1)
            bar.setValue(1)
        elif view.minutes > 0:  # a time limit: the share of the run done, of its steps or time
            bar.setFormat(f"step {view.step:,} · %p%")
            bar.setRange(0, 1000)
            bar.setValue(round(1000 * (view.done or 0.0)))
        else:
            bar.setFormat("step %v / %m")
            bar.setRange(0, max(view.total_steps, view.step))
            bar.setValue(view.step)

    def _update_buttons(self) -> None:
        idle = self.state in (IDLE, FINISHING)  # finishing: saved, the end-of-run work is skippable
        active = self.state in (RUNNING, PAUSED)
        invalid = self.config_form.invalid_fields()
        can_start = idle and self._ready and not invalid
        self.start_button.setEnabled(can_start)
        self.start_button.setToolTip(self._start_tooltip(invalid))
        self.continue_button.setEnabled(idle and not self._cannot_continue)
        self.continue_button.setToolTip(self._cannot_continue or CONTINUE_TIP)
        controllable = active and self._interactive
        self.pause_button.setEnabled(controllable)
        self.stop_button.setEnabled(self.state in (LOADING, RUNNING, PAUSED, FINISHING))
        self.sample_button.setEnabled(controllable)
        self.save_button.setEnabled(controllable)
        self.settings_box.setEnabled(idle)
        self.model_box.setEnabled(idle)
        self.conditional_check.setEnabled(idle and self._conditional_allowed)

    def _start_tooltip(self, invalid: list[str]) -> str:
        if not self._ready:
            return self._not_ready_reason
        if invalid:
            return "Fix the highlighted model settings: " + ", ".join(invalid)
        return "Start training (Ctrl+Return)"

    def show_error(self, cause: str, details: str = "") -> None:
        self.error_label.setText(cause)
        self.error_label.show()
        self._error_details = details
        self.details_button.setVisible(bool(details))

    def clear_error(self) -> None:
        self.error_label.clear()
        self.error_label.hide()
        self.details_button.hide()

    def show_error_details(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Critical, "Training failed", self.error_label.text(),
                          QMessageBox.StandardButton.Close, self)
        box.setDetailedText(self._error_details)
        box.open()  # not exec(): the window keeps running while the report is open
        return box


def max_processes() -> int:
    """At most one process per GPU, or per CPU core when there is no GPU."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(1, gpus or os.cpu_count() or 1)


def format_duration(seconds: float | None) -> str:
    """h:mm:ss"""
    if seconds is None:
        return ""
    total = max(0, round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _spin(name: str, accessible: str, low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox(objectName=name, accessibleName=accessible)
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setGroupSeparatorShown(True)
    return spin

