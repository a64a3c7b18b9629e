"""Which torch device to run on: "cpu", "cuda", "cuda:N" or "auto".

"auto" takes ``$MINMO_DEVICE`` when set (``make run DEVICE=cuda`` sets it), else the GPU
when PyTorch sees one, else the CPU.
"""

from __future__ import annotations

import os

import torch

from minmo_core.errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = os.environ.get("MINMO_DEVICE") or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but PyTorch sees no CUDA GPU")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda or auto") from err
