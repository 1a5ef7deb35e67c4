"""Small building blocks the window's layout repeats."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QGroupBox,
    QLayout,
    QLayoutItem,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

# The window's size at a first launch, where the screen has room for it.
PREFERRED_WINDOW_SIZE = QSize(1280, 800)
# What a window manager's title bar and borders add around the window, which is not known
# before the window is first shown.
FRAME_ALLOWANCE = QSize(8, 48)


def first_window_size(widget: QWidget) -> QSize:
    """The preferred size, shrunk to the available area of the widget's screen less a frame
    (a 1024×768 laptop must not open a window whose right edge and buttons lie off the screen)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        return PREFERRED_WINDOW_SIZE
    return PREFERRED_WINDOW_SIZE.boundedTo(screen.availableGeometry().size() - FRAME_ALLOWANCE)


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
    """`widget` in a vertically scrolling area whose controls leave the wheel to the area
    unless focused (wheel_scrolls_panel); controls added later call that themselves."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(width)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    for kind in (QAbstractSlider, QAbstractSpinBox, QComboBox):
        for control in widget.findChildren(kind):
            wheel_scrolls_panel(control)
    return area


def wheel_scrolls_panel(control: QWidget) -> None:
    """Over `control` without focus, the wheel scrolls the panel it sits in instead of changing
    its value (scrolling past a slider must not move it); click the control to wheel it."""
    control.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not WheelFocus: a wheel must not take focus
    control.installEventFilter(_WHEEL_GUARD)


class _WheelToScrollArea(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget) or watched.hasFocus():
            return False
        area = watched.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        if area is None:
            return False
        QApplication.sendEvent(area.verticalScrollBar(), event)
        return True


_WHEEL_GUARD = _WheelToScrollArea()


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


def panel_shortcut(panel: QWidget, keys: str, button: QAbstractButton) -> QShortcut:
    """`keys` press `button` while focus is anywhere in `panel` (and only when the button is
    enabled, as a click); the button's tooltip names the keys."""
    shortcut = QShortcut(QKeySequence(keys), panel)
    shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
    shortcut.setWhatsThis(button.text().rstrip("…"))  # Help → Keyboard shortcuts lists it
    shortcut.activated.connect(partial(click_if_enabled, button))
    text = QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)
    button.setToolTip(f"{button.toolTip()} ({text})")
    return shortcut


class FlowLayout(QLayout):
    """Lays its items out left to right and wraps them onto further lines, as words wrap in a
    paragraph: a row of check boxes that grows with a run's metrics never forces the window
    wider or hides boxes behind a scroll bar. Heights follow the width (heightForWidth)."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6):
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    # QLayout's item bookkeeping.
    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    # Geometry.
    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        height = self._arrange(rect, move=True)
        # Qt lays out height-for-width only in top-level windows; inside a splitter the lines
        # would be squeezed onto what is below them. Asking for their height as the widget's
        # minimum makes the splitter (or window) leave room for every line.
        owner = self.parentWidget()
        if owner is not None and owner.minimumHeight() != height:
            owner.setMinimumHeight(height)

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        # As narrow as the widest item: anything wider wraps.
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        margins = self.contentsMargins()
        return size + QSize(margins.left() + margins.right(), margins.top() + margins.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        """Place the items in rect (if move) and return the height they take."""
        margins = self.contentsMargins()
        area = rect.adjusted(margins.left(), margins.top(), -margins.right(), -margins.bottom())
        x, y, line_height = area.x(), area.y(), 0
        for item in self._items:
            if item.isEmpty():  # hidden widgets take no room
                continue
            hint = item.sizeHint()
            if x > area.x() and x + hint.width() > area.right() + 1:
                x, y, line_height = area.x(), y + line_height + self._spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line_height = max(line_height, hint.height())
        return y + line_height - rect.y() + margins.bottom()
