"""The shipped assets: the app's icon at every size the bundles need, its licence, and the
window wearing it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ICON = REPO / "assets" / "icon"


def test_the_icon_files_are_rendered_from_the_svg_at_every_size(qtbot, tmp_path: Path) -> None:
    """The committed PNGs are the SVG rendered at their size (make_icons.py, run as `make
    icons` runs it, into a temporary folder), square and mostly opaque; the Windows and
    macOS files hold the same picture."""
    import os
    import subprocess
    import sys

    import numpy as np
    from PySide6.QtGui import QImage

    from app.gui.assets import ICON_SIZES

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    made = subprocess.run([sys.executable, "installers/make_icons.py", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr

    def channels(image: QImage) -> np.ndarray:
        image = image.convertToFormat(QImage.Format.Format_RGBA8888)
        raw = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
        # a copy: the array would otherwise point into the converted image's memory, which
        # is freed when it goes out of scope (another thread's allocation can then overwrite
        # it: under parallel workers the comparison saw pixels off by up to 112 levels)
        return raw.reshape(image.height(), image.bytesPerLine())[:, : 4 * image.width()].copy()

    for size in ICON_SIZES:
        image = QImage(str(ICON / f"minmo-{size}.png"))
        assert (image.width(), image.height()) == (size, size)
        fresh = QImage(str(tmp_path / f"minmo-{size}.png")).convertToFormat(image.format())
        # Qt's rasteriser rounds a few antialiased edge pixels differently from one CPU to
        # another (1 level in 6 of 1 M pixels at 512 between two x86-64 machines): a stale
        # file differs by far more
        diff = np.abs(channels(fresh).astype(int) - channels(image).astype(int))
        stale = f"minmo-{size}.png is stale: run python installers/make_icons.py"
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, stale
    for name, size in (("minmo.ico", 256), ("minmo.icns", 512)):
        image = QImage(str(ICON / name))
        assert (image.width(), image.height()) == (size, size), name
    centre = QImage(str(ICON / "minmo-256.png")).pixelColor(128, 128)
    assert centre.alpha() == 255  # the picture, not a transparent square


def test_the_assets_say_whose_they_are_and_under_what_licence() -> None:
    text = (REPO / "assets" / "README.md").read_text()
    assert "icon/" in text and "Apache-2.0" in text
    assert "Apache-2.0" in (ICON / "minmo.svg").read_text()


def test_the_window_wears_the_icon(qtbot) -> None:
    from app.gui.assets import app_icon, asset
    from app.gui.window import MainWindow

    assert asset("icon", "minmo-256.png") == ICON / "minmo-256.png"
    assert asset("icon", "no-such.png") is None
    icon = app_icon()
    assert not icon.isNull() and len(icon.availableSizes()) == 7
    w = MainWindow(None)
    qtbot.addWidget(w)
    assert not w.windowIcon().isNull()


@pytest.mark.parametrize("size", [16, 512])
def test_a_missing_icon_file_leaves_a_smaller_icon_not_an_error(monkeypatch, size) -> None:
    from app.gui import assets

    real, gone = assets.asset, f"minmo-{size}.png"
    monkeypatch.setattr(assets, "asset", lambda *p: None if p[-1] == gone else real(*p))
    assert len(assets.app_icon().availableSizes()) == 6
