"""The conversation engine's model stack for the command line: folder options, loading,
and the events turned into terminal output."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

from app.cli.options import (
    COSYVOICE_FOLDER,
    SENSEVOICE_FOLDER,
    add_allow_unpinned,
    add_device,
    add_voice_lm,
    folder_help,
)
from minmo_core.errors import MinMoError

API_KEY_ENV = "MINMO_LLM_API_KEY"


def add_stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--llm",
        metavar="DIR",
        help="chat LLM folder (default: $MINMO_LLM_DIR or the models folder)",
    )
    p.add_argument(
        "--llm-url",
        metavar="URL",
        help="use a remote OpenAI-compatible chat server instead (vLLM, SGLang, llama.cpp, "
        "Ollama), e.g. http://gpu-box:8000/v1",
    )
    p.add_argument("--llm-model", metavar="NAME", help="the served model's name (with --llm-url)")
    p.add_argument(
        "--llm-api-key", metavar="KEY", help=f"API key for --llm-url (or ${API_KEY_ENV})"
    )
    p.add_argument(
        "--cosyvoice",
        metavar="DIR",
        help=folder_help(COSYVOICE_FOLDER, ", for spoken replies"),
    )
    p.add_argument(
        "--sensevoice",
        metavar="DIR",
        help=folder_help(SENSEVOICE_FOLDER, ", for spoken input"),
    )
    add_voice_lm(p)
    p.add_argument(
        "--llm-bits",
        type=int,
        choices=[16, 8, 4],
        default=None,
        help="LLM weights in 8 or 4 bits on a CUDA GPU (bitsandbytes; experimental), for "
        "cards `minmo models plan` finds too small for 16",
    )
    p.add_argument(
        "--adapters",
        metavar="DIR",
        help="MinMo adapters folder from our training pipeline: aligned mode (speech into the "
        "LLM, semantic vectors into the voice, the duplex predictor taking turns)",
    )
    add_device(p)
    add_allow_unpinned(p)


def load_adapters_option(args: argparse.Namespace):
    """The MinMo adapters ``--adapters`` names, or None (composed mode)."""
    from minmo_core.errors import ConfigError
    from minmo_core.llm.adapters import load_adapters

    if getattr(args, "adapters", None) is None:
        return None
    if args.llm_url is not None:
        raise ConfigError("aligned mode (--adapters) needs the local LLM, not --llm-url")
    return load_adapters(args.adapters)


def load_stack(args: argparse.Namespace, llm_config, voice: bool, ears: bool):
    """(ChatLLM, SpeechSynthesizer or None, SenseVoice or None) for the options given."""
    from minmo_core.engine.stack import load_stack as load

    stack = load(stack_spec(args), llm_config, voice, ears)
    return stack.llm, stack.voice, stack.ears


def stack_spec(args: argparse.Namespace):
    """The options as a StackSpec, their conflicts refused with the flags named."""
    import os

    from minmo_core.engine.stack import StackSpec
    from minmo_core.errors import ConfigError

    if args.llm_url is None and args.llm_model is not None:
        raise ConfigError("--llm-model names the model of a remote server: give --llm-url")
    if args.llm_url is not None and args.llm is not None:
        raise ConfigError("give either --llm (a local folder) or --llm-url (a server), not both")
    key = getattr(args, "llm_api_key", None) or os.environ.get(API_KEY_ENV)
    return StackSpec(
        device=args.device, llm_dir=args.llm, llm_url=args.llm_url, llm_model=args.llm_model,
        llm_api_key=key, cosyvoice=args.cosyvoice, sensevoice=args.sensevoice,
        allow_unpinned=args.allow_unpinned, seed=getattr(args, "seed", None),
        voice_lm=args.voice_lm,
    )  # fmt: skip


class TerminalView:
    """Engine events to the terminal: reply text to stdout as it streams, the rest to stderr;
    audio collected per turn. Remembers the last error to raise after the turn."""

    def __init__(self, show_timing: bool = True) -> None:
        self.show_timing = show_timing
        self.audio: dict[int, list[np.ndarray]] = {}
        self.error: str | None = None
        self.lock = threading.Lock()

    def __call__(self, event) -> None:
        from minmo_core.engine import events as ev
        from minmo_core.engine.timing import timing_line

        if isinstance(event, ev.AssistantTextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ev.FinalTranscript):
            print(f"you said: {event.text or '(nothing)'}", file=sys.stderr, flush=True)
        elif isinstance(event, ev.AssistantAudio):
            with self.lock:
                self.audio.setdefault(event.turn_id, []).append(event.audio)
        elif isinstance(event, ev.TurnEnded):
            sys.stdout.write("\n")
            sys.stdout.flush()
            if event.interrupted:
                print("(interrupted)", file=sys.stderr, flush=True)
        elif isinstance(event, ev.UserSpeechStarted):
            print("(you are speaking)", file=sys.stderr, flush=True)
        elif isinstance(event, ev.TurnTimings) and self.show_timing:
            print(timing_line(event), file=sys.stderr, flush=True)
        elif isinstance(event, ev.EngineError):
            self.error = event.message

    def turn_audio(self, turn_id: int) -> np.ndarray:
        with self.lock:
            pieces = self.audio.pop(turn_id, [])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def raise_error(self) -> None:
        if self.error is not None:
            message, self.error = self.error, None
            raise MinMoError(message)


def write_audio(path: Path, audio: np.ndarray, fmt: tuple[str, str]) -> None:
    """The whole reply into ``path`` (through ``path.partial``: never a truncated file)."""
    import soundfile as sf

    partial = path.with_name(path.name + ".partial")
    try:
        sf.write(partial, audio, 24000, subtype=fmt[1], format=fmt[0])
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
