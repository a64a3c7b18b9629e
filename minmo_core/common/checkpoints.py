"""Safe checkpoint loading.

Every checkpoint is read with safetensors or ``torch.load(weights_only=True)``: nothing is
ever unpickled beyond tensors and plain containers. Which files are the official ones, and
their pins, is ``minmo_core.common.releases``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from minmo_core.errors import CheckpointError


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint of tensors without unpickling arbitrary objects.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``. A state dict nested under "state_dict" or "model"
    is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        state = load_safetensors(str(path)) if path.suffix == ".safetensors" else _torch_load(path)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors; refusing to unpickle it "
            f"({str(err).splitlines()[0][:120]})"
        ) from err
    except (RuntimeError, SafetensorError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({str(err).splitlines()[0][:120]})"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors")
    return state


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped where the file format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict(strict=True)`` with a message naming what does not fit."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} in the "
            f"file, {tuple(own[k].shape)} expected)"
        )
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
