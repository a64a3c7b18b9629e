"""Render assets/icon/minmo.svg into the icon files the bundles need (run by `make icons`;
the results are committed, so a build needs no SVG renderer):

    assets/icon/minmo-<size>.png   16 .. 512 px (Linux: the .desktop file's icon, AppImage)
    assets/icon/minmo.ico          256 px (Windows: PyInstaller's --icon, the installer)
    assets/icon/minmo.icns         512 px (macOS: the .app's CFBundleIconFile)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICON = Path(__file__).resolve().parents[1] / "assets" / "icon"
SIZES = (16, 32, 48, 64, 128, 256, 512)


def render(size: int):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(ICON / "minmo.svg")).render(painter)
    painter.end()
    return image


def main(argv: list[str] | None = None) -> int:
    """Writes the icon files into assets/icon, or into the folder given (the test compares
    a fresh process's rendering with the committed files)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else ICON
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841
    out.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        if not render(size).save(str(out / f"minmo-{size}.png")):
            raise SystemExit(f"could not write minmo-{size}.png")
    for name, size in (("minmo.ico", 256), ("minmo.icns", 512)):
        if not render(size).save(str(out / name)):
            raise SystemExit(f"could not write {name} (Qt's image format plugins)")
    print(f"wrote {len(SIZES) + 2} icon files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
