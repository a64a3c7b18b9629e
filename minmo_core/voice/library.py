"""The user's cloned voices, kept in the data folder, and the steps that make a new one.

    <data folder>/voices/
        grandma/
            voice.json              {"name", "transcript", "created", "seconds", "source"}
            voice.safetensors       the VoiceProfile for CosyVoice 2 (tokens, mel, embedding)
            voice.cv3.safetensors   the VoiceProfile for CosyVoice 3
            reference.flac          the clip at 24 kHz, for previews and cloning again later

A voice holds a profile for at least one release; the other is cloned from reference.flac
the first time that release speaks with it (:meth:`VoiceStudio.profile`).

Listing reads only ``voice.json`` and the safetensors header, without torch, so the window
can list voices on its GUI thread; loading, renaming and cloning import torch when called
(worker threads). A voice is written into a hidden temporary folder and renamed into place,
and deleted by renaming it away first, so a crash never leaves half a voice in the list.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from platformdirs import user_data_dir

from minmo_core.common.audio import read_audio, resample, to_mono_float32
from minmo_core.errors import AudioError, ConfigError, first_line

if TYPE_CHECKING:
    from minmo_core.voice.voice_clone import VoiceCloner
    from minmo_core.voice.voice_prompt import VoiceProfile

INFO = "voice.json"
PROFILE = "voice.safetensors"  # CosyVoice 2's profile (the only one of older versions)
PROFILES = {2: PROFILE, 3: "voice.cv3.safetensors"}  # per CosyVoice generation
REFERENCE = "reference.flac"
REFERENCE_RATE = 24000  # Hz: CosyVoice 2's prompt mel rate
MAX_NAME = 60  # characters
SOURCES = ("recorded", "imported")
MAX_FILE_SECONDS = 600.0  # imports longer than 10 minutes are refused before reading
TRANSCRIBE_SECONDS = 30.0  # the speech-understanding model hears at most one segment
STALE_SECONDS = 3600.0  # a hidden temporary folder this old is a crash's leftover
_PROFILE_FORMAT = "minmo-voice-profile"  # voice_prompt.PROFILE_FORMAT, without torch
_WINDOWS_DEVICES = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"{p}{i}" for p in ("com", "lpt") for i in range(10)),
}
_MAX_HEADER = 1 << 20  # bytes: a voice's safetensors header is a few hundred


class NotClonedYet(ConfigError):
    """The voice has no profile for the release asked for (its recording can make one)."""


def voices_dir() -> Path:
    root = os.environ.get("MINMO_DATA_DIR") or user_data_dir("minmo-assistant")
    return Path(root) / "voices"


def check_name(name: str) -> str:
    """The name without surrounding spaces; ConfigError when it is blank, too long or holds
    control characters."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a voice needs a name")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ConfigError(f"a voice name can be at most {MAX_NAME} characters ({len(name)} given)")
    if any(not ch.isprintable() for ch in name):
        raise ConfigError("a voice name must be one line of text")
    if name.startswith("__") and name.endswith("__"):
        raise ConfigError(f"{name!r} is reserved for the app's menus: choose another name")
    return name


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ConfigError(f"a voice's source is one of {', '.join(SOURCES)}, not {source!r}")


def slugify(name: str) -> str:
    """A folder name for ``name``: lower-case letters and digits (any script) joined by '-'
    (never one of the device names Windows reserves, such as ``con``)."""
    words = "".join(ch if ch.isalnum() else " " for ch in name.casefold()).split()
    slug = "-".join(words)[:40].strip("-") or "voice"
    return f"{slug}-voice" if slug in _WINDOWS_DEVICES else slug


@dataclass(frozen=True)
class VoiceEntry:
    """One saved voice as listed: what menus and the manager show."""

    name: str
    transcript: str  # the words spoken in the reference clip
    created: str  # ISO 8601 local time with its offset
    seconds: float  # the reference clip's length
    source: str  # "recorded" or "imported"
    folder: Path
    releases: tuple[int, ...] = (2,)  # the CosyVoice generations it has a profile for


class VoiceLibrary:
    """The voice folders under ``root`` (``voices_dir()`` by default).

    ``problems`` holds one line per folder the last :meth:`list` skipped, for the window to
    show; a damaged voice never stops the others from being listed.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else voices_dir()
        self.problems: list[str] = []
        self._lock = threading.Lock()  # add and rename choose names and folders atomically

    # -- reading (no torch) --------------------------------------------------------------------
    def list(self) -> list[VoiceEntry]:
        """The voices sorted by name (case-insensitive); unreadable folders are skipped and
        described in ``problems``."""
        self.problems = []
        try:
            folders = sorted(p for p in self.root.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as err:
            self.problems.append(f"the voice folder {self.root} cannot be read ({err.strerror})")
            return []
        entries: dict[str, VoiceEntry] = {}
        for folder in folders:
            if not folder.is_dir():
                continue
            try:
                entry = _read_entry(folder)
            except ConfigError as err:
                self.problems.append(str(err))
                continue
            key = entry.name.casefold()
            if key in entries:
                self.problems.append(
                    f"{folder} is skipped: {entries[key].folder.name} has the same name "
                    f"{entry.name!r}"
                )
                continue
            entries[key] = entry
        return sorted(entries.values(), key=lambda e: (e.name.casefold(), e.name))

    def names(self) -> list[str]:
        return [entry.name for entry in self.list()]

    def exists(self, name: str) -> bool:
        return self._find(name) is not None

    def check_free(self, name: str) -> None:
        """ConfigError naming the voice that already has ``name`` (case-insensitive)."""
        taken = self._find(name)
        if taken is not None:
            raise ConfigError(f"a voice named {taken.name!r} already exists: choose another name")

    def entry(self, name: str) -> VoiceEntry:
        found = self._find(name)
        if found is None:
            raise ConfigError(f"there is no saved voice named {name!r}")
        return found

    def reference(self, name: str) -> np.ndarray:
        """The voice's reference clip, (N,) float32 at 24 kHz."""
        return read_audio(self.entry(name).folder / REFERENCE, REFERENCE_RATE)

    def load(self, name: str, cosyvoice: int = 2) -> VoiceProfile:
        """The voice's profile for CosyVoice ``cosyvoice``, named as the library lists it
        (imports torch); NotClonedYet when it has none for that release."""
        from minmo_core.voice.voice_prompt import VoiceProfile

        entry = self.entry(name)
        if cosyvoice not in entry.releases:
            raise NotClonedYet(
                f"voice {entry.name!r} has not been cloned for CosyVoice {cosyvoice}"
            )
        path = entry.folder / PROFILES[cosyvoice]
        profile = VoiceProfile.load(path)
        if profile.cosyvoice != cosyvoice:
            raise ConfigError(
                f"voice {entry.name!r}: {path} holds a CosyVoice {profile.cosyvoice} profile"
            )
        return profile if profile.name == entry.name else replace(profile, name=entry.name)

    def add_profile(self, name: str, profile: VoiceProfile) -> VoiceEntry:
        """Keep ``profile`` as the voice's profile for its release (another release's
        clone of the same recording), replacing one there was."""
        with self._lock:
            entry = self.entry(name)
            profile = replace(profile, name=entry.name)
            target = entry.folder / PROFILES[profile.cosyvoice]
            scratch = entry.folder / f".{target.name}.{os.getpid()}.adding"
            try:
                profile.save(scratch)
                scratch.replace(target)
            finally:
                scratch.unlink(missing_ok=True)
        return _read_entry(entry.folder)

    # -- changing ------------------------------------------------------------------------------
    def add(self, profile: VoiceProfile, reference_audio24k: np.ndarray, source: str) -> VoiceEntry:
        """Save a new voice; ConfigError when its name is taken (case-insensitive) or invalid."""
        name = check_name(profile.name)
        check_source(source)
        reference = np.clip(to_mono_float32(reference_audio24k), -1.0, 1.0)
        if not reference.size:
            raise AudioError("the reference clip holds no samples")
        with self._lock:
            self.check_free(name)
            self.root.mkdir(parents=True, exist_ok=True)
            self._sweep()
            temporary = self.root / f".{uuid.uuid4().hex}.adding"
            try:
                temporary.mkdir()
                _write_reference(temporary / REFERENCE, reference)
                profile.save(temporary / PROFILES[profile.cosyvoice])
                info = {
                    "name": name,
                    "transcript": profile.transcript,
                    "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "seconds": round(reference.size / REFERENCE_RATE, 3),
                    "source": source,
                }
                _write_json(temporary / INFO, info)
                folder = self._free_folder(name)
                temporary.rename(folder)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
        return _read_entry(folder)

    def rename(self, old: str, new: str) -> VoiceEntry:
        """Give a voice a new name, in voice.json and inside its safetensors (imports torch)."""
        from minmo_core.voice.voice_prompt import VoiceProfile

        new = check_name(new)
        with self._lock:
            entry = self.entry(old)
            if new.casefold() != entry.name.casefold():
                self.check_free(new)
            renamed = {}
            for generation in entry.releases:
                path = entry.folder / PROFILES[generation]
                scratch = entry.folder / f".{path.name}.renaming"
                replace(VoiceProfile.load(path), name=new).save(scratch)
                renamed[scratch] = path
            info = json.loads((entry.folder / INFO).read_text(encoding="utf-8"))
            _write_json(entry.folder / INFO, {**info, "name": new})
            for scratch, path in renamed.items():
                scratch.replace(path)
            folder = entry.folder
            if slugify(new) != slugify(entry.name):
                folder = self._free_folder(new)
                entry.folder.rename(folder)
        return _read_entry(folder)

    def delete(self, name: str) -> None:
        """Remove a voice: its folder is renamed away (gone from the list at once), then removed."""
        with self._lock:
            entry = self.entry(name)
            doomed = self.root / f".{uuid.uuid4().hex}.deleting"
            entry.folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------
    def _find(self, name: str) -> VoiceEntry | None:
        key = name.strip().casefold()
        return next((e for e in self.list() if e.name.casefold() == key), None)

    def _free_folder(self, name: str) -> Path:
        slug = slugify(name)
        folder, n = self.root / slug, 1
        while folder.exists():
            n += 1
            folder = self.root / f"{slug}-{n}"
        return folder

    def _sweep(self) -> None:
        """Remove hidden temporary folders that a killed process left behind."""
        now = time.time()
        for leftover in [*self.root.glob(".*.adding"), *self.root.glob(".*.deleting")]:
            try:
                old = now - leftover.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
            if old:
                shutil.rmtree(leftover, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    scratch.replace(path)


def _write_reference(path: Path, audio24k: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), audio24k, REFERENCE_RATE, format="FLAC", subtype="PCM_24")


def _read_entry(folder: Path) -> VoiceEntry:
    """The folder's voice.json, checked, plus a check that its other two files are present
    and its profile's header is whole; ConfigError naming the folder and the fault."""
    try:
        info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{folder} is not a voice: it has no {INFO}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{folder / INFO} is unreadable ({first_line(err, 120)})") from err
    if not isinstance(info, dict):
        raise ConfigError(f"{folder / INFO} is not a voice description")
    kinds = {"name": str, "transcript": str, "created": str, "seconds": (int, float), "source": str}
    bad = [key for key, kind in kinds.items() if not isinstance(info.get(key), kind)]
    if bad:
        raise ConfigError(f"{folder / INFO} lacks or has a bad {', '.join(bad)}")
    try:
        name = check_name(info["name"])
    except ConfigError as err:
        raise ConfigError(f"{folder / INFO}: {err}") from err
    if not (folder / REFERENCE).is_file():
        raise ConfigError(f"voice {name!r} in {folder} has no {REFERENCE}")
    releases = tuple(g for g, file in PROFILES.items() if (folder / file).exists())
    if not releases:
        raise ConfigError(f"voice {name!r} has no {PROFILE}")
    for generation in releases:
        _check_profile_header(folder / PROFILES[generation], name)
    return VoiceEntry(
        name=name,
        transcript=info["transcript"],
        created=info["created"],
        seconds=float(info["seconds"]),
        source=info["source"],
        folder=folder,
        releases=releases,
    )


def _check_profile_header(path: Path, name: str) -> None:
    """ConfigError unless ``path`` is a whole voice-profile safetensors file: its header
    parses, says it is a voice profile, and its tensors end where the file ends."""
    broken = ConfigError(f"voice {name!r}: {path} is damaged or not a voice profile")
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _MAX_HEADER:
                raise broken
            header = json.loads(f.read(size))
            total = f.seek(0, os.SEEK_END)
    except FileNotFoundError:
        raise ConfigError(f"voice {name!r} has no {path.name}") from None
    except (OSError, struct.error, UnicodeDecodeError, ValueError) as err:
        raise broken from err
    if not isinstance(header, dict):
        raise broken
    metadata = header.pop("__metadata__", None) or {}
    try:
        end = max((int(tensor["data_offsets"][1]) for tensor in header.values()), default=0)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise broken from err
    if not isinstance(metadata, dict) or metadata.get("format") != _PROFILE_FORMAT:
        raise broken
    if 8 + size + end != total:
        raise broken


class VoiceStudio:
    """What the window's worker threads call to make a voice: transcribe a clip, check it,
    clone it and save it in ``library``.

    ``cloner_factory`` builds the VoiceCloner (e.g. ``lambda: VoiceCloner.from_folder(dir)``)
    the first time a voice is cloned; ``transcriber`` turns (N,) float32 16 kHz audio into
    text (e.g. ``lambda audio: sensevoice.transcribe(audio).text``), or is None when no
    speech-understanding model is installed. ``cosyvoice`` is the release the cloner's folder
    holds, so a saved voice's profile for it is found without loading the cloner.
    """

    def __init__(
        self,
        cloner_factory: Callable[[], VoiceCloner],
        transcriber: Callable[[np.ndarray], str] | None,
        library: VoiceLibrary,
        cosyvoice: int = 2,
    ) -> None:
        self.cloner_factory = cloner_factory
        self.transcriber = transcriber
        self.library = library
        self.cosyvoice = cosyvoice  # the release the cloner is for (its voices speak there)
        self._cloner: VoiceCloner | None = None
        self._cloner_lock = threading.Lock()
        self._transcribe_lock = threading.Lock()  # one model call at a time

    def load_file(self, path: Path | str) -> tuple[np.ndarray, int]:
        """Any audio file soundfile reads -> ((N,) mono float32 at 24 kHz, 24000)."""
        return read_audio(Path(path), REFERENCE_RATE, max_seconds=MAX_FILE_SECONDS), REFERENCE_RATE

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The words in the clip (its first 30 s), as the speech-understanding model hears them."""
        if self.transcriber is None:
            raise ConfigError("no speech-understanding model is installed: type the words")
        audio16k = resample(to_mono_float32(audio), sample_rate, 16000)
        with self._transcribe_lock:
            return self.transcriber(audio16k[: int(TRANSCRIBE_SECONDS * 16000)]).strip()

    def check(self, audio: np.ndarray, sample_rate: int) -> None:
        """AudioError with the clip rules' message when the clip cannot serve as a voice."""
        from minmo_core.voice.voice_clone import check_clip

        check_clip(resample(to_mono_float32(audio), sample_rate, 16000))

    def clone(
        self, audio: np.ndarray, sample_rate: int, transcript: str, name: str, source: str
    ) -> VoiceEntry:
        """Check the clip, clone the voice and save it in the library."""
        name = check_name(name)
        check_source(source)
        if not transcript.strip():
            raise ConfigError("type the words spoken in the clip: the voice needs its transcript")
        self.library.check_free(name)
        mono = to_mono_float32(audio)
        self.check(mono, sample_rate)
        profile = self.cloner().clone(mono, transcript.strip(), name, sample_rate=sample_rate)
        return self.library.add(profile, resample(mono, sample_rate, REFERENCE_RATE), source)

    def profile(self, name: str) -> VoiceProfile:
        """The voice's profile for the release this studio clones for; the first time, it
        is cloned from the voice's recording and kept beside the other release's."""
        generation = self.cosyvoice
        try:
            return self.library.load(name, generation)
        except NotClonedYet:
            pass
        entry = self.library.entry(name)
        audio = self.library.reference(entry.name)
        cloner = self.cloner()
        if cloner.cosyvoice != generation:
            raise ConfigError(
                f"the voice cloner is CosyVoice {cloner.cosyvoice}'s, not {generation}'s"
            )
        profile = cloner.clone(audio, entry.transcript, entry.name, sample_rate=REFERENCE_RATE)
        self.library.add_profile(entry.name, profile)
        return self.library.load(entry.name, generation)

    def cloner(self) -> VoiceCloner:
        with self._cloner_lock:
            if self._cloner is None:
                self._cloner = self.cloner_factory()
            return self._cloner
