"""What every ``minmo`` subcommand shares: one-line argument errors, validated option types,
the device and model-folder options, the style options, output files."""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from minmo_core.common.releases import ALLOW_FLAG

# The official model folders a command may take: (environment variable, folder name, option)
from minmo_core.engine.stack import COSYVOICE_FOLDER, SENSEVOICE_FOLDER  # noqa: F401
from minmo_core.errors import ConfigError


def folder_help(folder: tuple[str, str, str], purpose: str = "") -> str:
    env, name, _ = folder
    return f"{name} folder{purpose} (default: ${env} or the models folder)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``minmo tts: error: ... (see minmo tts --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole_number(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(minimum: float, inclusive: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum or (not inclusive and value == minimum):
            bound = "at least" if inclusive else "more than"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"use auto, cpu, cuda or cuda:N, not {text!r}")
    return text


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="DEVICE",
        help="auto (default: $MINMO_DEVICE, else the GPU when there is one), cpu, cuda or cuda:N",
    )


def add_voice_lm(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--voice-lm",
        choices=["standard", "rl"],
        default="standard",
        help="CosyVoice 3's voice LM: standard (llm.pt) or rl, its RL-tuned twin with lower "
        "error rates (llm.rl.pt: `minmo models download PACK --also llm.rl.pt`); CosyVoice 2 "
        "has one",
    )


def add_allow_unpinned(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="load weights that differ from the pinned official release (fine-tunes, tests)",
    )


def add_style(p: argparse.ArgumentParser) -> None:
    """--emotion/--dialect/--rate/--persona/--volume with their values listed in --help."""
    from minmo_core.voice.styles import choices

    menus = {g: choices(g) for g in (2, 3)}
    helps = {
        "emotion": "how it feels",
        "dialect": "a Chinese dialect (CosyVoice 2: with --wording zh)",
        "rate": "speaking rate",
        "persona": "a role to play",
        "volume": "how loud",
    }
    for slot, entries in menus[2].items():
        values = ", ".join(c.value for c in entries)
        untrained = [
            f"on CosyVoice {g}: " + ", ".join(c.value for c in menus[g][slot] if c.experimental)
            for g in menus
            if any(c.experimental for c in menus[g][slot])
        ]
        note = f" (experimental {'; '.join(untrained)})" if untrained else ""
        p.add_argument(f"--{slot}", metavar="NAME", help=f"{helps[slot]}: {values}{note}")
    p.add_argument(
        "--wording",
        choices=["zh", "en"],
        default="zh",
        help="language of CosyVoice 2's style instruction (default zh; CosyVoice 3 uses its "
        "release's sentences)",
    )


def style_from_args(args: argparse.Namespace):
    """The VoiceStyle the options name, checked against the wording rules of the CosyVoice
    release that will speak: the one in --cosyvoice or MINMO_COSYVOICE_DIR when that folder
    exists, else the default CosyVoice 2 (checked again with :func:`check_style_for` once
    the folder is known)."""
    from minmo_core.voice.styles import VoiceStyle

    style = VoiceStyle.parse(args.emotion, args.dialect, args.rate, args.persona, args.volume)
    given = getattr(args, "cosyvoice", None) or os.environ.get(COSYVOICE_FOLDER[0])
    check_style_for(style, args.wording, Path(given) if given else None)
    return style


def check_style_for(style, wording: str, folder: Path | None) -> None:
    """ConfigError when the CosyVoice release in ``folder`` (None or not there: CosyVoice 2,
    the default) cannot word ``style`` in ``wording``; reads only the folder's yaml."""
    from minmo_core.common.release_config import release_generation
    from minmo_core.voice.styles import check_style

    generation = release_generation(folder) if folder is not None and folder.is_dir() else 2
    check_style(style, wording, generation)


def text_argument(words: list[str]) -> str:
    text = " ".join(words).strip()
    if not text:
        raise ConfigError("nothing to say: the text is empty")
    return text


def existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file")
    return path


# soundfile format and subtype per output suffix (what ``tts -o`` can write)
AUDIO_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def audio_output(path: Path) -> tuple[str, str]:
    """Check, before any model loads, that an audio file can be written at ``path``.

    Returns its (format, subtype); raises ConfigError naming the problem.
    """
    import soundfile as sf

    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder; give a file name")
    formats = {s: f for s, f in AUDIO_FORMATS.items() if f[0] in sf.available_formats()}
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot write {path}: unknown audio type {path.suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(formats)}"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {path.parent} does not exist")
    probe = path.with_name(path.name + ".partial")
    try:
        with open(probe, "ab"):
            pass
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {path}: the existing file is read-only")
    return fmt
