"""The dataset panel: choosing a folder, the skipped-files report, bad sources."""

from __future__ import annotations

from app_helpers import wait_for_dataset
from PySide6.QtCore import Qt

from genstudio.app.panels import DatasetPanel


def choose(qtbot, window, folder) -> None:
    window.dataset_panel.ask_folder = lambda: str(folder)
    qtbot.mouseClick(window.dataset_panel.folder_button, Qt.MouseButton.LeftButton)


def test_a_folder_shows_count_classes_and_skipped_files(qtbot, window, image_folder):
    choose(qtbot, window, image_folder)
    wait_for_dataset(qtbot, window, lambda p: p.dataset.source == str(image_folder))
    panel = window.dataset_panel
    assert panel.source_combo.currentData() == str(image_folder)
    assert "6 images" in panel.info.text()
    assert "blue (3)" in panel.classes.text() and "red (3)" in panel.classes.text()
    assert panel.skipped_label.isVisible() and panel.skipped_label.text() == "2 files skipped"
    lines = sorted(panel.skipped_list.item(i).text() for i in range(panel.skipped_list.count()))
    assert len(lines) == 2
    assert lines == ["blue/empty.png — zero-byte file", "red/notes.png — not an image"]
    assert panel.skipped_label.toolTip().startswith("2 skipped")
    assert not panel.error.isVisible()
    assert window.training_panel.start_button.isEnabled()


def test_a_bad_folder_shows_the_reason_in_red_and_disables_start(qtbot, window, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    choose(qtbot, window, empty)
    qtbot.waitUntil(lambda: window.dataset_panel.error.isVisible(), timeout=20_000)
    message = window.dataset_panel.error.text()
    assert message and "DatasetError" not in message  # the sentence, not the type
    assert "c62828" in window.dataset_panel.error.styleSheet()
    assert not window.training_panel.start_button.isEnabled()
    assert window.training_panel.start_button.toolTip() == message
    assert not window.dataset_panel.thumbnails.isVisible()
    # Going back to a good source enables Start again.
    window.dataset_panel.source_combo.setCurrentIndex(0)
    wait_for_dataset(qtbot, window)
    assert window.training_panel.start_button.isEnabled()


def test_recent_folders_are_remembered(qtbot, window, image_folder):
    choose(qtbot, window, image_folder)
    wait_for_dataset(qtbot, window, lambda p: p.dataset.source == str(image_folder))
    again = DatasetPanel()
    qtbot.addWidget(again)
    assert again.source_combo.findData(str(image_folder)) > 0
    assert again.source_combo.currentData() == "builtin:shapes"


def test_changing_the_size_reloads_and_drops_the_stale_load(qtbot, window):
    received = []
    window.dataset_jobs.succeeded.connect(received.append)
    for size in (20, 24, 28):
        window.dataset_panel.size_spin.setValue(size)
    wait_for_dataset(qtbot, window, lambda p: p.request.size == 28)
    qtbot.waitUntil(lambda: not window.dataset_jobs.is_busy(), timeout=20_000)
    assert [p.request.size for p in received] == [28]  # the debounce sent one request
    assert "28×28" in window.dataset_panel.info.text()


def test_channels_grey_gives_one_channel(qtbot, window):
    combo = window.dataset_panel.channels_combo
    combo.setCurrentIndex(combo.findText("Grey"))
    wait_for_dataset(qtbot, window, lambda p: p.dataset.channels == 1)
    assert "greyscale" in window.dataset_panel.info.text()
