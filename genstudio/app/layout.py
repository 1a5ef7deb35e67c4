"""Small building blocks the window's layout repeats."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QAbstractButton, QGroupBox, QScrollArea, QVBoxLayout, QWidget


def group_box(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    QVBoxLayout(box).addWidget(widget)
    return box


def scrolling(widget: QWidget, width: int) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(width)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    return area


def make_action(parent: QWidget, text: str, keys, slot: Callable[[], object]) -> QAction:
    action = QAction(text, parent)
    if keys is not None:
        action.setShortcut(QKeySequence(keys))
    action.triggered.connect(lambda: slot())
    parent.addAction(action)  # shortcuts work even with the menu bar hidden (macOS, tests)
    return action


def click_if_enabled(button: QAbstractButton) -> None:
    if button.isEnabled():
        button.click()
