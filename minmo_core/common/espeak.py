"""espeak-ng as a speech source: the echo simulation, the turn-taking bench and the synthetic
training data all render their speech through here.

``render_file`` runs ``espeak-ng [-m] -v VOICE -s SPEED [-p PITCH] -w FILE TEXT`` once per
(espeak version, voice, speed, pitch, SSML or not, text) and keeps the WAV in the caller's
cache folder under the sha256 of that key. A render is written under a unique temporary name
and moved into place with ``os.replace``, so parallel threads and processes never read a
half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from minmo_core.errors import MissingDependencyError

WAV_HEADER_BYTES = 44  # a file no longer than its header holds no speech


class EspeakNotFoundError(MissingDependencyError):
    """espeak-ng, which renders the speech, is not installed."""


def espeak(purpose: str) -> str:
    """The espeak-ng executable; ``purpose`` says in the error what needed it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakNotFoundError(
            f"espeak-ng not found on PATH: {purpose}. Install it (Debian/Ubuntu: "
            "`sudo apt-get install espeak-ng`, or `make system-deps`; macOS: "
            "`brew install espeak-ng`)."
        )
    return exe


@functools.cache
def espeak_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def phonemes(exe: str, text: str, voice: str = "en") -> list[list[str]]:
    """espeak-ng's pronunciation of ``text``: per word, its phoneme mnemonics (``-x``) without
    stress marks, e.g. "seven" -> [["s", "E", "v", "@", "n"]]."""
    proc = subprocess.run([exe, "-q", "-x", "--sep=_", "-v", voice, text],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed on {text!r} ({proc.returncode}): {proc.stderr}")
    words = []
    for word in proc.stdout.split():
        found = [p.strip("'," + "%=") for p in word.split("_")]
        if found := [p for p in found if p]:
            words.append(found)
    return words


def render_file(
    exe: str,
    text: str,
    folder: Path,
    voice: str,
    speed: int,
    pitch: int | None = None,
    ssml: bool = False,
    prefix: str = "",
) -> Path:
    """espeak-ng's WAV of ``text`` in ``folder`` (rendered on a cache miss).

    RuntimeError names the text and voice when espeak-ng fails or writes no speech."""
    fields = [espeak_version(exe), voice, str(speed), str(pitch), str(ssml), text]
    key = hashlib.sha256("\0".join(fields).encode()).hexdigest()[:32]
    path = folder / f"{prefix}{key}.wav"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f"{prefix}{key}.", suffix=".tmp", dir=folder)
    os.close(handle)
    command = [exe, *(["-m"] if ssml else []), "-v", voice, "-s", str(speed)]
    if pitch is not None:
        command += ["-p", str(pitch)]
    try:
        proc = subprocess.run([*command, "-w", tmp, text], capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) <= WAV_HEADER_BYTES:
            raise RuntimeError(
                f"espeak-ng failed on {text!r} with voice {voice} ({proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only left when espeak-ng failed
    return path


__all__ = ["EspeakNotFoundError", "espeak", "espeak_version", "render_file"]
