"""First launch: the window opens on the pretrained default, so the gallery, the explorer and
the inpainting canvas work before any training; every shipped model is one menu entry away.
Tiny runs packaged here stand in for the shipped ones (tests/core/test_pretrained_shipped.py
checks those)."""

from __future__ import annotations

import pytest
from app_helpers import SIZE, TINY_MODEL, close_and_delete

from genstudio.app.main_window import MainWindow
from genstudio.core.runs import pretrained
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.training import Trainer


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory, dataset_cache):
    root = tmp_path_factory.mktemp("shipped")
    entries = []
    for name, title, steps in ((pretrained.DEFAULT, "VAE · tiny", 3), ("vae-other", "Another VAE", 2)):
        run_dir = tmp_path_factory.mktemp("trained") / name
        settings = TrainSettings(family="vae", data="builtin:shapes", size=SIZE, steps=steps, batch=4,
                                 eval_images=0, sample_every=0, checkpoint_every=0,
                                 family_config=dict(TINY_MODEL))
        for _event in Trainer(settings, str(run_dir)).run():
            pass
        entries.append(pretrained.package(run_dir, root, name, title, "genstudio train …"))
    pretrained.write_manifest(root, entries)
    return root


@pytest.fixture
def first_launch(qtbot, monkeypatch, shipped_root):
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(shipped_root))
    win = MainWindow()
    win.show()
    yield win
    close_and_delete(qtbot, win)


def test_the_window_opens_on_the_pretrained_default_and_can_sample_at_once(qtbot, first_launch):
    win = first_launch
    qtbot.waitUntil(lambda: win.loaded is not None, timeout=30_000)
    assert win.loaded.run.path == pretrained.find(pretrained.DEFAULT).installed_path
    assert win.loaded.step == 3
    assert win.inpaint.loaded is win.loaded and win.explorer.loaded is win.loaded
    # Shipped without its optimizer state: it cannot be trained further, and says so.
    panel = win.training_panel
    assert not panel.continue_button.isEnabled()
    assert "pretrained model" in panel.continue_button.toolTip()
    win.continue_training()  # the shortcut's path
    assert win.training is None
    qtbot.waitUntil(lambda: win.gallery.samples is not None, timeout=30_000)  # drawn unasked
    win.gallery.count_spin.setValue(4)
    win.gallery.regenerate_button.click()
    qtbot.waitUntil(lambda: len(win.gallery.samples.images) == 4, timeout=30_000)


def test_every_shipped_model_is_in_the_file_menu(qtbot, first_launch):
    win = first_launch
    assert [a.text() for a in win.pretrained_menu.actions()] == ["VAE · tiny", "Another VAE"]
    qtbot.waitUntil(lambda: win.loaded is not None, timeout=30_000)
    win.pretrained_menu.actions()[1].trigger()
    qtbot.waitUntil(lambda: win.loaded is not None and win.loaded.name == "pretrained-vae-other",
                    timeout=30_000)
    assert win.loaded.step == 2


def test_without_shipped_models_the_menu_is_disabled_and_nothing_opens(qtbot, window):
    assert not window.pretrained_menu.isEnabled()
    assert window.loaded is None
