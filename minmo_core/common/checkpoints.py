"""Safe checkpoint loading and release pins.

Every checkpoint is read with safetensors or ``torch.load(weights_only=True)``: nothing is
ever unpickled beyond tensors and plain containers. Files of an official release are
checked against the sizes and sha256 sums pinned in ../shared/MODEL_FACTS.md; a file that
differs is refused unless the caller explicitly allows other revisions (fine-tuned or
test checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from minmo_core.errors import CheckpointError


@dataclass(frozen=True)
class Pin:
    size: int  # bytes
    sha256: str


@dataclass(frozen=True)
class Release:
    """An official model repository on the hub and the files we pin in it."""

    name: str
    repo_id: str
    revision: str | None
    files: dict[str, Pin | None]  # None: required, but no published pin to check against


SENSEVOICE_SMALL = Release(
    name="SenseVoiceSmall",
    repo_id="FunAudioLLM/SenseVoiceSmall",
    revision="3847d57b6bdf2dd8875cb1508d2af43d80a16bf7",
    files={
        "model.pt": Pin(
            936291369, "833ca2dcfdf8ec91bd4f31cfac36d6124e0c459074d5e909aec9cabe6204a3ea"
        ),
        "config.yaml": Pin(
            1855, "f71e239ba36705564b5bf2d2ffd07eece07b8e3f2bbf6d2c99d8df856339ac19"
        ),
        "am.mvn": Pin(11203, "29b3c740a2c0cfc6b308126d31d7f265fa2be74f3bb095cd2f143ea970896ae5"),
        "chn_jpn_yue_eng_ko_spectok.bpe.model": Pin(
            377341, "aa87f86064c3730d799ddf7af3c04659151102cba548bce325cf06ba4da4e6a8"
        ),
    },
)

_VERIFIED_CACHE = "verified-files.json"  # sha256 results keyed by path, size and mtime


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cache_path() -> Path:
    return Path(os.environ.get("MINMO_CACHE_DIR") or user_cache_dir("minmo-assistant")) / (
        _VERIFIED_CACHE
    )


def _cached_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered across runs while its size and mtime are unchanged."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_of(path)
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return cache[key]


def verify_release(folder: Path, release: Release, allow_unpinned: bool = False) -> None:
    """Check that ``folder`` holds the release's files, matching their pins.

    A missing file is always an error. A file whose size or sha256 differs from its pin
    is an error unless ``allow_unpinned``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{release.name} model folder {folder} does not exist")
    for name, pin in release.files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{release.name} model folder {folder} has no {name}")
        if pin is None or allow_unpinned:
            continue
        size = path.stat().st_size
        if size != pin.size:
            hint = " (truncated download?)" if size < pin.size else ""
            raise CheckpointError(
                f"{path} is {size} bytes but the pinned {release.name} release has "
                f"{pin.size}{hint}; re-download it, or allow other revisions explicitly"
            )
        if _cached_sha256(path) != pin.sha256:
            raise CheckpointError(
                f"{path} does not match the pinned {release.name} release (sha256 differs: "
                "modified or another revision); re-download it, or allow other revisions "
                "explicitly"
            )


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
