"""The official releases we load, one description per model folder, and their verification.

The descriptions are data: one TOML manifest per release in ``minmo_core/data/releases``.
Each ``Release`` lists every file of the hub repository at a pinned commit, with its size
and sha256 where known, and whether the app reads it (``used``). Loaders verify the files
they read through ``verify_files``; downloads fetch the used files and check them before
anything replaces a working model. A file that differs from its pin is refused unless the
caller allows other revisions (``--allow-unpinned``: fine-tuned or test checkpoints).

Checksums are remembered across runs (hashing 3 GB takes seconds) in a cache keyed by the
file's identity and change time: its path, device, inode, size, mtime and ctime. A tamper
that keeps the size and restores the mtime with ``os.utime`` still changes the ctime, which
no user-space call can set back, so it is hashed again. Entries whose ctime is too close
to the moment of hashing to tell a later change apart (the "racy" window of coarse file
system clocks, as git handles it) are never trusted. Windows has no change time that
``os.stat`` reports, so there every check hashes the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir

from minmo_core.errors import CheckpointError

ALLOW_FLAG = "--allow-unpinned"  # how the command line lets other revisions through


DATA = Path(__file__).resolve().parents[1] / "data"  # release and pack manifests (TOML)


@dataclass(frozen=True)
class Pin:
    size: int  # bytes
    sha256: str


@dataclass(frozen=True)
class ReleaseFile:
    pin: Pin | None  # None: part of the release, but no published size and sha256
    used: bool = True  # read by the app; unused files are listed for completeness only


@dataclass(frozen=True)
class Part:
    """A model inside a release, and the precision it runs in on a GPU."""

    name: str
    parameters: int
    gpu_dtype: str  # "bfloat16", "float16" or "float32"


@dataclass(frozen=True)
class LLMShape:
    """What the memory planner needs of a chat LLM (its config.json)."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool


@dataclass(frozen=True)
class Release:
    """An official model repository on the hub at a pinned commit, and its files."""

    name: str  # also the folder name under the models folder
    repo_id: str
    revision: str | None  # a commit id
    files: dict[str, ReleaseFile] = field(default_factory=dict)
    kind: str = ""  # "sensevoice", "llm", "cosyvoice2"
    licence: str = ""
    parameters: int = 0
    parts: tuple[Part, ...] = ()
    llm: LLMShape | None = None
    modelscope_repo: str | None = None  # the same release on ModelScope, where it is

    @property
    def used_files(self) -> list[str]:
        return [name for name, f in self.files.items() if f.used]

    @property
    def fully_pinned(self) -> bool:
        """Every used file has a published size and sha256."""
        return all(self.files[name].pin is not None for name in self.used_files)

    def pin(self, name: str) -> Pin | None:
        entry = self.files.get(name)
        return entry.pin if entry else None


def parse_release(data: dict, source: str) -> Release:
    """A release manifest (the TOML files in minmo_core/data/releases) as a Release."""
    try:
        files = {}
        for name, entry in data["files"].items():
            pin = Pin(int(entry["size"]), str(entry["sha256"])) if "sha256" in entry else None
            files[name] = ReleaseFile(pin, bool(entry.get("used", True)))
        parts = tuple(
            Part(str(p["name"]), int(p["parameters"]), str(p["gpu_dtype"]))
            for p in data.get("parts", ())
        )
        llm = LLMShape(**data["llm"]) if "llm" in data else None
        return Release(
            name=str(data["name"]),
            repo_id=str(data["repo"]),
            revision=str(data["revision"]),
            files=files,
            kind=str(data["kind"]),
            licence=str(data.get("licence", "")),
            parameters=int(data.get("parameters", 0)),
            parts=parts,
            llm=llm,
            modelscope_repo=data.get("modelscope"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"release manifest {source} is malformed ({err!r})") from err


def load_release_file(path: Path) -> Release:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CheckpointError(f"cannot read release manifest {path}: {err}") from err
    return parse_release(data, str(path))


def all_releases() -> dict[str, Release]:
    """Every release the app knows, by name (the manifests are read once per process)."""
    return dict(_manifests())


@functools.cache
def _manifests() -> dict[str, Release]:
    releases = (load_release_file(p) for p in sorted((DATA / "releases").glob("*.toml")))
    return {r.name: r for r in releases}


SENSEVOICE_SMALL = load_release_file(DATA / "releases" / "sensevoice-small.toml")
BLANK_EN = "CosyVoice-BlankEN"  # the voice LM's Qwen2 config and tokenizer, inside the release
COSYVOICE2 = load_release_file(DATA / "releases" / "cosyvoice2-0.5b.toml")
COSYVOICE3 = load_release_file(DATA / "releases" / "fun-cosyvoice3-0.5b-2512.toml")

RELEASES = {"sensevoice": SENSEVOICE_SMALL, "cosyvoice2": COSYVOICE2, "cosyvoice3": COSYVOICE3}


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_CACHE_FILE = "verified-files.json"
RACY_WINDOW_NS = 2_000_000_000  # a ctime this close to the hashing time may hide a change


def _cache_path() -> Path:
    return Path(os.environ.get("MINMO_CACHE_DIR") or user_cache_dir("minmo-assistant")) / (
        _CACHE_FILE
    )


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def cached_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered while the file's identity and change time hold."""
    if os.name == "nt":  # st_ctime is the creation time there: nothing reveals a rewrite
        return sha256_of(path)
    key = str(Path(path).resolve())
    stat = os.stat(key)
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("identity") == _identity(stat)
        and stat.st_ctime_ns < entry.get("hashed_at_ns", 0) - RACY_WINDOW_NS
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    hashed_at = time.time_ns()
    digest = sha256_of(Path(key))
    after = os.stat(key)
    if _identity(after) == _identity(stat):  # unchanged while it was read: worth keeping
        cache[key] = {"identity": _identity(stat), "hashed_at_ns": hashed_at, "sha256": digest}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return digest


def verify_files(
    folder: Path | str,
    release: Release,
    names: Iterable[str],
    allow_unpinned: bool = False,
) -> None:
    """Check that ``folder`` holds the named files of ``release``, matching their pins.

    A missing file is always an error. A file whose size or sha256 differs from its pin is
    an error unless ``allow_unpinned``. Files are checked size first (cheap), then sha256.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{release.name} model folder {folder} does not exist")
    for name in names:
        if name not in release.files:
            raise ValueError(f"{name} is not a file of {release.name}")  # a programming slip
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{release.name} model folder {folder} has no {name}")
        pin = release.pin(name)
        if pin is None or allow_unpinned:
            continue
        size = path.stat().st_size
        if size != pin.size:
            hint = " (truncated download?)" if size < pin.size else ""
            raise CheckpointError(
                f"{path} is {size} bytes but {name} of the pinned {release.name} release has "
                f"{pin.size}{hint}; download it again, or pass {ALLOW_FLAG} to load other weights"
            )
        if cached_sha256(path) != pin.sha256:
            raise CheckpointError(
                f"{path} does not match {name} of the pinned {release.name} release (same "
                f"size, different sha256: modified or another revision); download it again, "
                f"or pass {ALLOW_FLAG} to load other weights"
            )


def verify_release(folder: Path | str, release: Release, allow_unpinned: bool = False) -> None:
    """Check every file of ``release`` that the app reads."""
    verify_files(folder, release, release.used_files, allow_unpinned)
