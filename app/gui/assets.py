"""The files the app ships beside its code (``assets/``), wherever it runs from: a checkout
or a PyInstaller bundle (both keep ``assets/`` two folders above this package), or a pip
install (``<prefix>/share/minmo-assistant/``, pyproject's data-files)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon

ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)


def asset(*parts: str) -> Path | None:
    """The shipped file ``assets/<parts>``, or None when this install lacks it."""
    for root in (
        Path(__file__).resolve().parents[2] / "assets",
        Path(sys.prefix) / "share" / "minmo-assistant",
    ):
        path = root.joinpath(*parts)
        if path.is_file():
            return path
    return None


def app_icon() -> QIcon:
    """The app's icon at every size it ships (an empty icon if none is installed)."""
    icon = QIcon()
    for size in ICON_SIZES:
        path = asset("icon", f"minmo-{size}.png")
        if path is not None:
            icon.addFile(str(path))
    return icon
