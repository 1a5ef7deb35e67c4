"""The skeleton the Explore and Inpaint tabs share: a caption naming the run, a column of
controls beside two views, a strip below, and background jobs that a change of run cancels."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from ..layout import scrolling
from ..workers import TaskRunner


class RunToolPanel(QWidget):
    """A tab that works with one loaded run. Subclasses set `runners` (every job runner) and
    `export_jobs` (the one whose files must be finished), and build with `lay_out`."""

    status = Signal(str)  # a line for the window's status bar
    runners: tuple[TaskRunner, ...] = ()
    export_jobs: TaskRunner | None = None

    def lay_out(self, caption: QLabel, controls: QWidget, controls_width: int, centre: QWidget,
                side: QWidget, strip: QWidget, *, shares: tuple[int, int], top_sizes: list[int] | None,
                body_sizes: list[int]) -> None:
        """Caption on top; below it the controls (scrolling, never collapsed), the centre view
        and the side view side by side with `shares` of the width, over the strip."""
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(scrolling(controls, controls_width))
        top.addWidget(centre)
        top.addWidget(side)
        top.setStretchFactor(1, shares[0])
        top.setStretchFactor(2, shares[1])
        top.setCollapsible(0, False)
        if top_sizes is not None:
            top.setSizes(top_sizes)
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(top)
        body.addWidget(strip)
        body.setStretchFactor(0, 1)
        body.setSizes(body_sizes)
        layout = QVBoxLayout(self)
        layout.addWidget(caption)
        layout.addWidget(body, 1)

    def cancel_runners(self) -> None:
        """Drop every pending result; an export still finishes writing its file."""
        for runner in self.runners:
            if runner is not self.export_jobs:
                runner.cancel()
