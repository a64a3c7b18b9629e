"""Device choice: explicit names, MINMO_DEVICE for "auto", clear errors."""

from __future__ import annotations

import pytest
import torch

from minmo_core.common.devices import resolve_device
from minmo_core.errors import ConfigError


def test_auto_follows_minmo_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINMO_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_without_setting_picks_what_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINMO_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_asking_for_cuda_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINMO_DEVICE", "cuda")
    with pytest.raises(ConfigError, match="PyTorch sees no CUDA GPU"):
        resolve_device("auto")


def test_unknown_device_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
