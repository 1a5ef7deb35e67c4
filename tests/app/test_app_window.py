"""The window as it opens: defaults, the family list, accessibility, capabilities → panels."""

from __future__ import annotations

import dataclasses
import threading
import time

from app_helpers import SIZE, TINY_MODEL, close_and_delete, wait_for_dataset
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QLineEdit,
    QListWidget,
    QScrollArea,
    QSlider,
)

from genstudio.app.capabilities import PANEL_REQUIREMENTS, enabled_panels
from genstudio.app.layout import PREFERRED_WINDOW_SIZE
from genstudio.app.main_window import MainWindow
from genstudio.core.families import Capability, available_families, family_class


def test_opens_with_shapes_and_vae_ready_to_start(window):
    assert window.objectName() == "MainWindow"
    assert window.dataset_panel.source_combo.currentData() == "builtin:shapes"
    assert window.family_picker.current() == "vae"
    assert window.preview.dataset.source == "builtin:shapes"
    assert "6,000 images" in window.dataset_panel.info.text()
    assert "circle" in window.dataset_panel.classes.text()
    assert window.dataset_panel.thumbnails.image() is not None
    assert window.training_panel.start_button.isEnabled()
    assert not window.training_panel.pause_button.isEnabled()
    assert not window.training_panel.stop_button.isEnabled()
    assert "Train a model or open a run" in window.gallery.placeholder._placeholder
    # A grid every 30 s of training as well as every 250 steps: a CPU shows samples early.
    values = window.training_panel.values()
    assert (values["sample_every"], values["sample_seconds"]) == (250, 30.0)


def test_lists_every_registered_family_by_its_title(window):
    items = window.family_picker.items()
    assert [item.data(Qt.ItemDataRole.UserRole) for item in items] == available_families()
    assert [item.text() for item in items] == [family_class(n).title for n in available_families()]
    assert all(item.flags() & Qt.ItemFlag.ItemIsEnabled and item.toolTip() for item in items)
    assert "ELBO" in window.family_picker.summary.text()
    assert "sample" in window.family_picker.capabilities.text()


def test_family_knobs_come_from_the_config_dataclass(window):
    editors = window.training_panel.config_form.editors
    assert set(editors) >= {"latent_dim", "base_channels", "lr", "beta"}
    lr = editors["lr"]
    assert isinstance(lr, QLineEdit) and float(lr.text()) == 1e-3
    assert lr.toolTip()  # the field's comment in the dataclass
    lr.setText("fast please")
    assert not window.training_panel.start_button.isEnabled()
    assert "Learning rate" in window.training_panel.start_button.toolTip()
    lr.setText("3e-4")
    assert window.training_panel.start_button.isEnabled()
    assert window.training_panel.values()["family_config"]["lr"] == 3e-4


def test_the_model_form_follows_the_image_size_and_keeps_what_the_person_changed(qtbot, window):
    form = window.training_panel.config_form
    width, latent = form.editors["base_channels"], form.editors["latent_dim"]
    assert width.value() == 32 and "suggested" not in width.toolTip()  # 16 px: the defaults
    latent.setValue(7)
    window.dataset_panel.size_spin.setValue(64)
    wait_for_dataset(qtbot, window, lambda p: p.request.size == 64)
    assert width.value() == 16 and latent.value() == 7
    assert "Suggested for 64 px images on a CPU (the defaults suit up to 32 px): 16; default 32" in width.toolTip()
    assert window.training_panel.values()["family_config"]["base_channels"] == 16

    width.setValue(24)  # the person's choice outlives the next suggestion
    window.dataset_panel.size_spin.setValue(48)
    wait_for_dataset(qtbot, window, lambda p: p.request.size == 48)
    assert width.value() == 24
    window.family_picker.select("diffusion")  # a new form: the diffusion model's width for 48 px
    assert form.editors["base_channels"].value() == 24 and "48 px" in form.editors["base_channels"].toolTip()
    window.family_picker.select("flow")
    assert form.editors["hidden_channels"].value() == 40  # 64 × 32/48, to a multiple of 8
    window.dataset_panel.size_spin.setValue(SIZE)
    wait_for_dataset(qtbot, window, lambda p: p.request.size == SIZE)
    hidden = form.editors["hidden_channels"]
    assert hidden.value() == 64 and "suggested" not in hidden.toolTip().lower()


def test_a_knob_with_fixed_choices_is_a_drop_down(window):
    window.family_picker.select("gan")
    loss = window.training_panel.config_form.editors["loss"]
    assert isinstance(loss, QComboBox)
    assert [loss.itemText(i) for i in range(loss.count())] == ["non-saturating", "least-squares", "wgan-gp"]
    loss.setCurrentIndex(2)
    assert window.training_panel.values()["family_config"]["loss"] == "wgan-gp"


def test_a_knob_whose_empty_value_means_automatic_says_so_instead_of_showing_it(window):
    # The GAN's () and 0 read as values; they mean "the loss's usual".
    window.family_picker.select("gan")
    form, panel = window.training_panel.config_form, window.training_panel
    betas, n_critic = form.editors["adam_betas"], form.editors["n_critic"]
    assert betas.text() == "" and betas.placeholderText() == "the loss's usual"
    assert n_critic.value() == 0 and n_critic.text() == "the loss's usual"
    assert panel.values()["family_config"]["adam_betas"] == () and panel.start_button.isEnabled()
    betas.setText("(0.0, 0.9)")
    n_critic.setValue(3)
    assert (panel.values()["family_config"]["adam_betas"], panel.values()["family_config"]["n_critic"]) == ((0.0, 0.9), 3)
    form.set_values({"adam_betas": [], "n_critic": 0})  # as config.json gives them back
    assert betas.text() == "" and form.invalid_fields() == [] and panel.values()["family_config"]["adam_betas"] == ()
    betas.setText("(0.5,")
    assert form.invalid_fields() == ["Adam betas"] and not panel.start_button.isEnabled()


def test_every_interactive_control_has_an_accessible_name(window):
    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget, QSlider, QCheckBox)
    unnamed = [w for kind in kinds for w in window.findChildren(kind)
               if w.isVisibleTo(window) and not w.accessibleName()
               and w.parent().metaObject().className() not in ("QAbstractSpinBox", "QTabBar", "QComboBox")
               and not isinstance(w.parent(), QAbstractSpinBox | QComboBox)]
    assert not unnamed, [f"{type(w).__name__} {w.objectName()!r} {getattr(w, 'text', lambda: '')()}"
                         for w in unnamed]


def test_main_widgets_have_stable_object_names(window):
    for name in ("familyPicker", "datasetPanel", "trainingPanel", "metricsPlot", "gallery",
                 "startButton", "pauseButton", "stopButton", "trainingProgress", "seedField",
                 "regenerateButton"):
        assert window.findChild(object, name) is not None, name


def test_conditional_checkbox_needs_classes_and_the_capability(qtbot, window):
    check = window.training_panel.conditional_check
    assert check.isEnabled()  # VAE can condition, shapes has three classes
    window.dataset_panel.source_combo.setCurrentIndex(
        window.dataset_panel.source_combo.findData("builtin:tins"))
    qtbot.waitUntil(lambda: window.preview is not None
                    and window.preview.dataset.source == "builtin:tins", timeout=20_000)
    assert not check.isEnabled() and "no classes" in check.toolTip()


def test_capability_table_drives_the_panels():
    assert PANEL_REQUIREMENTS["gallery"] == frozenset({Capability.SAMPLE})
    assert enabled_panels({Capability.SAMPLE}) == {"gallery"}
    assert enabled_panels(set()) == set()
    assert enabled_panels({Capability.SAMPLE, Capability.CONDITIONAL}) == {"gallery", "conditional"}


def test_default_size_fits_the_layout(window):
    assert (window.width(), window.height()) == (1280, 800)
    assert window.minimumSizeHint().width() <= 1280
    assert window.minimumSizeHint().height() <= 800


def test_a_first_launch_on_a_small_screen_opens_a_window_that_fits_it(qtbot):
    screen = QGuiApplication.primaryScreen().availableGeometry().size()  # offscreen: 800×800
    assert screen.width() < PREFERRED_WINDOW_SIZE.width()
    window = MainWindow()
    try:
        assert window.width() <= max(screen.width(), window.minimumSizeHint().width()) < 1280
        assert window.height() <= screen.height()
    finally:
        close_and_delete(qtbot, window)


def test_the_training_controls_stay_in_view_when_the_window_is_low(qtbot, window):
    # The settings scroll; Start, the progress bar and what the run said stay below them.
    window.resize(1000, 560)
    panel = window.training_panel
    window.family_picker.select("diffusion")  # a long form
    qtbot.waitUntil(lambda: panel.height() < 560, timeout=2_000)
    for widget in (panel.start_button, panel.continue_button, panel.progress):
        assert widget.isVisible()
        bottom = widget.mapTo(window, widget.rect().bottomLeft()).y()
        assert bottom < window.height(), widget.objectName()
    window.resize(1280, 800)


def test_continue_takes_the_forms_schedule_and_keeps_the_runs_own_sample_metrics(window):
    panel = window.training_panel
    panel.set_values(sample_every=7, checkpoint_every=0, eval_every=30, eval_metrics=("bpd",))
    assert panel.recording(("bpd", "fid", "precision", "recall")) == {
        "minutes": 0.0, "sample_every": 7, "sample_seconds": 30.0, "checkpoint_every": 0, "eval_every": 30,
        "eval_metrics": ("bpd",)}
    assert panel.recording(("bpd",))["eval_metrics"] == ("bpd",)
    panel.set_values(eval_metrics=("bpd", "fid"))  # ticks the box
    assert panel.recording(("bpd", "kid"))["eval_metrics"] == ("bpd", "kid")  # the box agrees: the run's
    assert panel.recording(("bpd",))["eval_metrics"] == ("bpd", "fid", "precision", "recall")


def test_space_toggles_pause_only_when_not_typing(qtbot, window):
    from app_helpers import ENDLESS, start_training

    start_training(qtbot, window, steps=ENDLESS)
    qtbot.waitUntil(lambda: window.training_panel.state == "running", timeout=10_000)
    window.tabs.setCurrentWidget(window.gallery)
    qtbot.keyClick(window.gallery.seed_spin, Qt.Key.Key_Space)  # typing: ignored
    assert window.training_panel.state == "running"
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.training_panel.state == "paused"
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.training_panel.state == "running"
    window.stop_training()
    qtbot.waitUntil(lambda: not window.busy(), timeout=30_000)


def test_keyboard_shortcuts_start_pause_and_stop(qtbot, window):
    from app_helpers import ENDLESS, tiny_settings

    window.training_panel.set_values(**tiny_settings(steps=ENDLESS))
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    ctrl = Qt.KeyboardModifier.ControlModifier
    qtbot.keyClick(window, Qt.Key.Key_Return, ctrl)
    qtbot.waitUntil(lambda: window.training_panel.state == "running", timeout=30_000)
    qtbot.keyClick(window, Qt.Key.Key_P, ctrl)
    assert window.training_panel.state == "paused"
    with qtbot.waitSignal(window.training_ended, timeout=30_000) as ended:
        qtbot.keyClick(window, Qt.Key.Key_Period, ctrl)
        assert window.training_panel.state == "stopping"
    assert ended.args == ["stopped"]


def test_field_comments_are_read_without_parsing_the_module(monkeypatch):
    # inspect.getsource(a class) parses its module with `ast` in Python 3.11, which raised
    # SystemError when a worker formatted a traceback at the same moment (workers.SOURCE_PARSING).
    import ast

    from genstudio.app.panels import config_form
    from genstudio.core.families.vae import VAEConfig

    def no_parsing(*args, **kwargs):
        raise AssertionError("the form parsed source to find its tooltips")

    monkeypatch.setattr(ast, "parse", no_parsing)
    comments = config_form._field_comments.__wrapped__(VAEConfig)  # noqa: SLF001 - past the cache
    assert comments["lr"] == "Adam learning rate"
    assert set(comments) <= {f.name for f in dataclasses.fields(VAEConfig)}
    assert len(comments) >= 4


def test_a_literal_field_is_parsed_only_while_no_other_thread_parses():
    from genstudio.app.panels import config_form
    from genstudio.app.workers import SOURCE_PARSING

    parsed = []
    with SOURCE_PARSING:
        reader = threading.Thread(target=lambda: parsed.append(config_form._parse("(1, 2)", (0,))))  # noqa: SLF001
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not parsed  # waits for the lock
    reader.join(5)
    assert parsed == [(1, 2)]


def test_the_speed_suite_sets_the_apps_dataset_to_what_it_was_asked(window, qtbot):
    # The app trains on what its dataset panel shows: `benchmarks.speed --size 64` used to
    # measure the app at the panel's 32 px beside a CLI and a bare loop at 64.
    from benchmarks.speed import show_dataset

    def wait(condition, timeout):
        qtbot.waitUntil(condition, timeout=int(timeout * 1000))

    show_dataset(window, "builtin:tins", 12, wait)
    assert window.preview.request.source == "builtin:tins" and window.preview.dataset.size == 12
    show_dataset(window, "builtin:shapes", 12, wait)
    assert window.preview.request.source == "builtin:shapes" and window.preview.dataset.size == 12


def test_the_speed_suites_app_pairing_holds_the_window_still_for_each_bare_step(window, qtbot, tmp_path, monkeypatch):
    # benchmarks.speed's paired section measures the app's loop against bare steps run on the
    # app's training thread; those must see no window at work, as a process without one would.
    from PySide6.QtCore import QTimer

    from benchmarks import speed
    from genstudio.core.runs.run import TrainSettings

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(2)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    bare_spans: list[tuple[float, float]] = []
    real_bare_step = speed.bare_train_step

    def bare_step_long_enough_to_see_ticks(*args):
        began = time.perf_counter()
        time.sleep(0.06)
        real_bare_step(*args)
        bare_spans.append((began, time.perf_counter()))

    monkeypatch.setattr(speed, "bare_train_step", bare_step_long_enough_to_see_ticks)
    app = speed.App(window)
    settings = TrainSettings(family="vae", data="builtin:shapes", size=16, batch=8, steps=7, seed=0,
                             device="cpu", family_config=dict(TINY_MODEL), log_every=1)
    timer.start()
    pairs = app.paired_steps(settings, warmup=1, home=tmp_path)
    timer.stop()
    assert len(pairs) == 5 and len(bare_spans) == 7
    for iteration, bare, step in pairs:
        assert bare >= 0.06 and 0 < step < iteration < 0.06  # no bare step inside an iteration
    assert ticks and not [t for t in ticks for began, ended in bare_spans if began < t < ended]
    assert [t for t in ticks if t > bare_spans[-1][1]]  # and the window went on after


def test_every_tab_fits_a_1024_by_700_window_and_no_knob_is_clipped(qtbot, window):
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.width() == 1024, timeout=5_000)  # not held wider by a tab
    window.gallery._set_class_names(["circle", "square", "triangle"])  # a conditional model's class box
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        page = window.tabs.widget(index)
        assert page.minimumSizeHint().width() <= window.tabs.width(), window.tabs.tabText(index)
    window.tabs.setCurrentIndex(0)
    window.family_picker.select("gan")  # the longest knob labels
    form = window.training_panel.config_form
    viewport = form.parentWidget()
    while not isinstance(viewport.parentWidget(), QScrollArea):
        viewport = viewport.parentWidget()

    def clipped() -> list[str]:
        return [name for name, editor in form.editors.items() if not editor.isHidden()  # e.g. conditional-only
                and (editor.mapTo(viewport, editor.rect().topRight()).x() > viewport.width() or editor.width() < 40)]

    qtbot.waitUntil(lambda: form.isVisible() and not clipped(), timeout=5_000)  # once laid out


def test_the_map_legend_sits_in_the_corner_with_the_fewest_points():
    import numpy as np

    from genstudio.app.panels.latent_map import _emptiest_corner

    rng = np.random.default_rng(0)
    crowded_top_left = np.column_stack([rng.uniform(0, 0.3, 200), rng.uniform(0.7, 1, 200)])
    spread = rng.uniform(0, 1, (40, 2))
    points = np.concatenate([crowded_top_left, spread, [[1.0, 0.0]]])
    assert _emptiest_corner(points) != (5, 5)  # not the default top-left, which is full
    assert _emptiest_corner(np.zeros((0, 2))) == (5, 5)
