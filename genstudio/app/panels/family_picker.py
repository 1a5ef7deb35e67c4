"""Pick the model family: every registered one, with its summary and what it can do."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from genstudio.core.families import FAMILIES, Capability, family_class

from ..capabilities import CAPABILITY_LABELS

DEFAULT_FAMILY = "vae"


class FamilyPicker(QWidget):
    family_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("familyPicker")
        self.list = QListWidget()
        self.list.setObjectName("familyList")
        self.list.setAccessibleName("Model family")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.summary = QLabel()
        self.summary.setObjectName("familySummary")
        self.summary.setWordWrap(True)
        self.capabilities = QLabel()
        self.capabilities.setObjectName("familyCapabilities")
        self.capabilities.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addWidget(self.summary)
        layout.addWidget(self.capabilities)
        self._fill()
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.select(DEFAULT_FAMILY)

    def _fill(self) -> None:
        for name in FAMILIES:
            cls = family_class(name)
            item = QListWidgetItem(cls.title)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setToolTip(cls.summary)
            self.list.addItem(item)
        rows = self.list.count()
        self.list.setFixedHeight(self.list.sizeHintForRow(0) * rows + 2 * self.list.frameWidth() + 4)

    def current(self) -> str:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else DEFAULT_FAMILY

    def select(self, name: str) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == name and item.flags() & Qt.ItemFlag.ItemIsEnabled:
                self.list.setCurrentItem(item)
                return

    def items(self) -> list[QListWidgetItem]:
        return [self.list.item(row) for row in range(self.list.count())]

    def _on_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None:
            return
        name = current.data(Qt.ItemDataRole.UserRole)
        cls = family_class(name)
        self.summary.setText(cls.summary)
        self.capabilities.setText("Can: " + describe_capabilities(cls.capabilities, cls.log_prob_kind))
        self.family_changed.emit(name)


def describe_capabilities(capabilities: frozenset[Capability], log_prob_kind) -> str:
    parts = []
    for capability, label in CAPABILITY_LABELS.items():
        if capability in capabilities:
            if capability is Capability.LOG_PROB and log_prob_kind is not None:
                label = f"{label} ({log_prob_kind.value})"
            parts.append(label)
    return " · ".join(parts)
