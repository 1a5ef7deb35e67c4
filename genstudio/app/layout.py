"""Small building blocks the window's layout repeats."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QGroupBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


def push_button(text: str, name: str, tooltip: str, slot: Callable[[], object] | None = None) -> QPushButton:
    """A button with an object name (for tests and style sheets), an accessible name without
    the trailing "…", a tooltip, and optionally a slot called with no arguments."""
    button = QPushButton(text, objectName=name, accessibleName=text.rstrip("…"))
    button.setToolTip(tooltip)
    if slot is not None:
        button.clicked.connect(lambda: slot())  # not slot(checked): clicked passes a bool
    return button


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
