"""The app entry point, until the window exists, says so, shows what works and checks the
device it was asked to use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def start(device: str, models: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINMO_DEVICE": device}
    if models is not None:
        env["MINMO_MODELS_DIR"] = models
    return subprocess.run(
        [sys.executable, str(REPO / "main.py")], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip


def test_main_py_explains_and_lists_the_cli_commands(tmp_path) -> None:
    done = start("cpu", str(tmp_path / "models"))
    assert done.returncode == 0
    assert "desktop window is not available yet" in done.stdout
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
