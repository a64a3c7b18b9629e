"""The official releases we load, one description per model folder, and their verification.

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

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir

from minmo_core.errors import CheckpointError

ALLOW_FLAG = "--allow-unpinned"  # how the command line lets other revisions through


@dataclass(frozen=True)
class Pin:
    size: int  # bytes
    sha256: str


@dataclass(frozen=True)
class ReleaseFile:
    pin: Pin | None  # None: part of the release, but no published size and sha256
    used: bool = True  # read by the app; unused files are listed for completeness only


@dataclass(frozen=True)
class Release:
    """An official model repository on the hub at a pinned commit, and its files."""

    name: str  # also the folder name under the models folder
    repo_id: str
    revision: str | None  # a commit id
    files: dict[str, ReleaseFile] = field(default_factory=dict)

    @property
    def used_files(self) -> list[str]:
        return [name for name, f in self.files.items() if f.used]

    def pin(self, name: str) -> Pin | None:
        entry = self.files.get(name)
        return entry.pin if entry else None


def _pinned(size: int, sha256: str, used: bool = True) -> ReleaseFile:
    return ReleaseFile(Pin(size, sha256), used)


SENSEVOICE_SMALL = Release(
    name="SenseVoiceSmall",
    repo_id="FunAudioLLM/SenseVoiceSmall",
    revision="3847d57b6bdf2dd8875cb1508d2af43d80a16bf7",
    files={
        "model.pt": _pinned(
            936291369, "833ca2dcfdf8ec91bd4f31cfac36d6124e0c459074d5e909aec9cabe6204a3ea"
        ),
        "config.yaml": _pinned(
            1855, "f71e239ba36705564b5bf2d2ffd07eece07b8e3f2bbf6d2c99d8df856339ac19"
        ),
        "am.mvn": _pinned(
            11203, "29b3c740a2c0cfc6b308126d31d7f265fa2be74f3bb095cd2f143ea970896ae5"
        ),
        "chn_jpn_yue_eng_ko_spectok.bpe.model": _pinned(
            377341, "aa87f86064c3730d799ddf7af3c04659151102cba548bce325cf06ba4da4e6a8"
        ),
        "configuration.json": _pinned(
            396, "02810a7f8e9e8aee10370a265f7e799728ce25b4c00cdbf4602b303ee395a38e", used=False
        ),
    },
)

BLANK_EN = "CosyVoice-BlankEN"  # the voice LM's Qwen2 config and tokenizer, inside the release

# Sizes and sha256 as the hub lists them at this commit; the four large model files agree
# with the sizes and digests in the repository's git-lfs pointers.
COSYVOICE2 = Release(
    name="CosyVoice2-0.5B",
    repo_id="FunAudioLLM/CosyVoice2-0.5B",
    revision="eec1ae6c79877dbd9379285cf8789c9e0879293d",
    files={
        "llm.pt": _pinned(
            2023316821, "b144ef55b51ce8cfb79a73c90dbba0bdaba4e451c0ebcfab20f769264f84a608"
        ),
        "flow.pt": _pinned(
            450575567, "ff4c2f867674411e0a08cee702996df13fa67c1cd864c06108da88d16d088541"
        ),
        "hift.pt": _pinned(
            83390254, "3386cc880324d4e98e05987b99107f49e40ed925b8ecc87c1f4939432d429879"
        ),
        "speech_tokenizer_v2.onnx": _pinned(
            496082973, "d43342aa12163a80bf07bffb94c9de2e120a8df2f9917cd2f642e7f4219c6f71"
        ),
        "campplus.onnx": _pinned(
            28303423, "a6ac6a63997761ae2997373e2ee1c47040854b4b759ea41ec48e4e42df0f4d73"
        ),
        "cosyvoice2.yaml": _pinned(
            7330, "0af2c0d010c477187c39f3e8fd5f1ae2e4e6f90ad03ba37c10ed6c6a87b05959"
        ),
        f"{BLANK_EN}/config.json": _pinned(
            659, "168aa1bd401abc3bc262ba15ba4e499627a8b4e006e9d050b47c22de20660185"
        ),
        f"{BLANK_EN}/tokenizer_config.json": _pinned(
            1287, "482bd979881423375ca5414e4e0d94cd7c5349dbb17fffd46b4d36d71e62a1bc"
        ),
        f"{BLANK_EN}/vocab.json": _pinned(
            2776833, "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"
        ),
        f"{BLANK_EN}/merges.txt": _pinned(
            1402109, "ac8ff86a72bee70828fbc1119bc4398c6f3a9a6e490d7b0dbe917be025478bd0"
        ),
        # the Qwen2 body's own weights: llm.pt carries them again, so the app never reads it
        f"{BLANK_EN}/model.safetensors": _pinned(
            988097824,
            "130282af0dfa9fe5840737cc49a0d339d06075f83c5a315c3372c9a0740d0b96",
            used=False,
        ),
        f"{BLANK_EN}/generation_config.json": _pinned(
            242, "e558847a8b4402616f1273797b015104dc266fe4b520056fca88823ba8f8ebe6", used=False
        ),
        # the release's TensorRT export of the flow estimator and the hub's card files
        "flow.decoder.estimator.fp32.onnx": _pinned(
            286317026,
            "cd54e4281701e6630730da64502d77b7e8b6e5c057cca65128bffb50f85cbf98",
            used=False,
        ),
        "config.json": _pinned(
            2, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", used=False
        ),
        "configuration.json": _pinned(
            47, "c502b6328c67638b401df8dd05de89e9e8d1cff9cd0ada10dfbdbe13556c20de", used=False
        ),
    },
)

RELEASES = {"sensevoice": SENSEVOICE_SMALL, "cosyvoice2": COSYVOICE2}


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
