"""Render assets/genstudio.svg to the PNG sizes desktops ask for (assets/icons/genstudio-N.png).

    .venv/bin/python tools/render_icons.py

The SVG is the source; rerun this after changing it. Runs offscreen (no display needed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZES = (16, 32, 48, 64, 128, 256, 512)


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 — needed by QPainter
    renderer = QSvgRenderer(str(ROOT / "assets" / "genstudio.svg"))
    if not renderer.isValid():
        print("error: assets/genstudio.svg is not a valid SVG", file=sys.stderr)
        return 1
    out = ROOT / "assets" / "icons"
    out.mkdir(exist_ok=True)
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        image.save(str(out / f"genstudio-{size}.png"))
    print(f"wrote {', '.join(f'genstudio-{s}.png' for s in SIZES)} to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
