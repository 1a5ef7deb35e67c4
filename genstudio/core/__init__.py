"""The Qt-free model core: families, data, training, checkpoints, export.

Nothing under genstudio.core imports PySide6 or pyqtgraph (tests/core/test_core_is_qt_free.py
enforces it), so the same code serves the desktop app, the CLI and the tests.
"""
