"""The app entry point, until the window exists, says so and shows what works."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_main_py_explains_and_lists_the_cli_commands() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "main.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "desktop window is not available yet" in done.stdout
    for command in ("transcribe", "chat", "bench"):
        assert command in done.stdout
