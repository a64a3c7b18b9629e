"""``minmo transcribe AUDIO``: speech -> text plus language, emotion, event and ITN tags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.options import (
    SENSEVOICE_FOLDER,
    add_allow_unpinned,
    add_device,
    existing_file,
    folder_help,
)
from minmo_core.common.paths import model_folder
from minmo_core.understanding.transcript import RichTranscript
from minmo_core.understanding.voice_encoder import LANGUAGE_QUERY


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "transcribe",
        parents=parents,
        help="transcribe an audio file with SenseVoice (text + language/emotion/event tags)",
        description="Transcribe any audio file (WAV/FLAC/OGG, any rate, any length).",
    )
    p.add_argument("audio", type=Path, help="audio file")
    p.add_argument(
        "--language",
        default="auto",
        choices=[k for k in LANGUAGE_QUERY if k != "nospeech"],
        help="spoken language (default: detect)",
    )
    p.add_argument("--itn", action="store_true", help="punctuate and normalise numbers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--sensevoice",
        metavar="DIR",
        help=folder_help(SENSEVOICE_FOLDER),
    )
    add_device(p)
    add_allow_unpinned(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.common.audio import probe_audio
    from minmo_core.common.devices import resolve_device
    from minmo_core.understanding.sensevoice import SenseVoice

    probe_audio(existing_file(args.audio, "audio file"))  # a bad file is named before loading
    device = resolve_device(args.device)
    folder = model_folder(args.sensevoice, *SENSEVOICE_FOLDER)
    model = SenseVoice.from_folder(folder, device=str(device), allow_unpinned=args.allow_unpinned)
    progress = None
    if not args.json:
        progress = _print_segment if sys.stderr.isatty() else None
    result = model.transcribe_file(args.audio, args.language, args.itn, on_segment=progress)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(result.text)
        print(_tags_line(result))
    return 0


def _print_segment(part: RichTranscript) -> None:
    print(f"[{part.start:7.1f}s] {part.text}", file=sys.stderr, flush=True)


def _tags_line(result: RichTranscript) -> str:
    fields = {
        "language": result.language,
        "emotion": result.emotion,
        "event": result.event,
        "itn": None if result.itn is None else ("yes" if result.itn else "no"),
    }
    return "  ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
