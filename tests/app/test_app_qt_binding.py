"""The Qt binding itself: PySide6 6.12.0 lost a reference to True on every Signal.emit() and
to None on every processEvents(), so after some hundreds of emits (a training run, a few
fills) Python aborted with "deallocating True or False". pyproject excludes that release;
this guards the one installed."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    changed = Signal(bool)
    done = Signal()


def test_emitting_signals_keeps_reference_counts(qapp):
    emitter = _Emitter()
    received = []
    emitter.changed.connect(received.append)
    true_before = sys.getrefcount(True)
    for _ in range(100):
        emitter.changed.emit(True)
        emitter.done.emit()
    del received[:]  # the slot's own references to True
    # Not lower (the bug: 200 lower); one higher can be a cache of the interpreter's.
    assert sys.getrefcount(True) >= true_before


def test_processing_events_keeps_the_reference_count_of_none(qapp):
    before = sys.getrefcount(None)
    for _ in range(100):
        qapp.processEvents()
    assert sys.getrefcount(None) >= before  # the bug: 100 lower
