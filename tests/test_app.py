"""The app entry point, until the window exists, says so, shows what works and checks the
device it was asked to use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def start(device: str, models: str | None = None, *args: str, **env_extra: str):
    env = {**os.environ, "MINMO_DEVICE": device, **env_extra}
    if models is not None:
        env["MINMO_MODELS_DIR"] = models
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
        timeout=120,
        env=env,
    )  # fmt: skip


def test_main_py_opens_the_window_and_says_what_to_fetch(tmp_path) -> None:
    done = start("cpu", str(tmp_path / "models"), QT_QPA_PLATFORM="offscreen",
                 MINMO_QUIT_AFTER_MS="1500", MINMO_CONFIG_DIR=str(tmp_path / "config"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Models run on the CPU" in done.stdout
    assert "Fetch them with: .venv/bin/minmo models download minmo-" in done.stdout


def test_without_a_display_make_run_points_to_the_terminal(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "main.py")], capture_output=True, text=True, timeout=120,
        env={**env, "MINMO_DEVICE": "cpu", "MINMO_MODELS_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr.count("\n") == 1 and "no display" in done.stderr
    assert "minmo converse" in done.stderr


def test_main_py_no_window_lists_the_cli_commands(tmp_path) -> None:
    done = start("cpu", str(tmp_path / "models"), "--no-window")
    assert done.returncode == 0
    for command in ("transcribe", "chat", "bench"):
        assert command in done.stdout
    assert "Models run on the CPU" in done.stdout
    # nothing installed: the pack that fits, and the command that fetches it
    assert f"No models in {tmp_path / 'models'} yet. For this machine: minmo-" in done.stdout
    assert "Fetch them with: .venv/bin/minmo models download minmo-" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_says_so_clearly() -> None:
    done = start("cuda")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "minmo-assistant: error: device 'cuda' was asked for but PyTorch sees no CUDA GPU"
    )


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs Xvfb (make test installs it)")
def test_make_run_opens_the_window_on_an_x_display(tmp_path) -> None:
    """What `make run` does on a desktop, on a virtual X display: the real window opens
    (Qt's xcb plugin, not offscreen), on the setup screen with no models, and closes."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}  # fmt: skip
    env.update(MINMO_DEVICE="cpu", MINMO_MODELS_DIR=str(tmp_path / "models"),
               MINMO_QUIT_AFTER_MS="2500", MINMO_CONFIG_DIR=str(tmp_path / "config"),
               MINMO_DATA_DIR=str(tmp_path / "data"))  # fmt: skip
    done = subprocess.run(
        ["xvfb-run", "-a", sys.executable, str(REPO / "main.py")], capture_output=True,
        text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-1000:]
    assert "window visible on xcb: MinMo Assistant" in done.stdout
    assert "Traceback" not in done.stderr
