"""Safe checkpoint loading.

Every checkpoint is read with safetensors or ``torch.load(weights_only=True)``: nothing is
ever unpickled beyond tensors and plain containers. Which files are the official ones, and
their pins, is ``minmo_core.common.releases``.

The official ``.pt`` files are converted once into a safetensors cache, keyed by the source
file's sha256 (the hash cache makes that key cheap once the file was verified), and read from
there afterwards: no unpickling at all, memory-mapped. ``MINMO_SAFETENSORS_CACHE=0`` turns it
off; a damaged cache entry is dropped and rebuilt.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from minmo_core.errors import CheckpointError

CACHE_ENV = "MINMO_SAFETENSORS_CACHE"


def safetensors_cache_dir() -> Path:
    root = os.environ.get("MINMO_CACHE_DIR") or user_cache_dir("minmo-assistant")
    return Path(root) / "safetensors"


def _cache_enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").lower() not in ("0", "false", "no", "off")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint of tensors without unpickling arbitrary objects.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``, once, then through its safetensors conversion. A state
    dict nested under "state_dict" or "model" is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    converted = None
    if path.suffix != ".safetensors" and _cache_enabled():
        from minmo_core.common.releases import cached_sha256

        converted = safetensors_cache_dir() / f"{cached_sha256(path)}.safetensors"
        if converted.is_file():
            try:
                return load_safetensors(str(converted))
            except (SafetensorError, OSError, RuntimeError, ValueError):
                converted.unlink(missing_ok=True)  # damaged: rebuilt below
    state = _load(path)
    if converted is not None:
        _convert(state, converted)
    return state


def _convert(state: dict[str, torch.Tensor], target: Path) -> None:
    """Write ``state`` as safetensors at ``target`` (atomically); a failure costs only the
    speed-up (a full disk, a read-only cache)."""
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for key, value in state.items():  # shared storage is not allowed: give repeats their own
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        tensors[key] = value.contiguous() if ident not in seen else value.clone().contiguous()
        seen.add(ident)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(tensors, str(tmp))
        tmp.replace(target)
    except (OSError, RuntimeError, ValueError, SafetensorError):
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> dict[str, torch.Tensor]:
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
