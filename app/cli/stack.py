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
    folder_help,
)
from minmo_core.common.paths import model_folder
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
    from minmo_core.common.devices import resolve_device
    from minmo_core.llm.chat import DEFAULT_MODEL, LLM_DIR_ENV, ChatLLM
    from minmo_core.understanding.sensevoice import SenseVoice
    from minmo_core.voice.tts import SpeechSynthesizer

    device = resolve_device(args.device)
    llm = remote_llm(args, llm_config)
    llm_dir = None if llm is not None else _llm_folder(args.llm, LLM_DIR_ENV, DEFAULT_MODEL)
    cosy = model_folder(args.cosyvoice, *COSYVOICE_FOLDER) if voice else None
    sense = model_folder(args.sensevoice, *SENSEVOICE_FOLDER) if ears else None
    sensevoice = None
    if sense is not None:
        sensevoice = SenseVoice.from_folder(sense, str(device), allow_unpinned=args.allow_unpinned)
    synth = None
    if cosy is not None:
        synth = SpeechSynthesizer.from_folder(cosy, device, args.allow_unpinned, seed=args.seed)
    if llm is None:
        llm = ChatLLM(llm_dir, llm_config, device=str(device))
    return llm, synth, sensevoice


def _llm_folder(given, env_var: str, default: str) -> Path:
    """--llm, else $MINMO_LLM_DIR, else the largest installed pack's LLM, else the default
    (whose absence is named with the way to fetch one)."""
    import os

    from minmo_core.manager.store import ModelStore, installed_llm

    if given is None and not os.environ.get(env_var):
        release = installed_llm()
        if release is not None:
            return ModelStore().folder(release)
    return model_folder(given, env_var, default, "--llm")


def remote_llm(args: argparse.Namespace, llm_config):
    """The remote LLM the options name, or None for a local one."""
    import os

    from minmo_core.errors import ConfigError
    from minmo_core.llm.remote import RemoteChatLLM, RemoteLLMSettings

    if args.llm_url is None:
        if args.llm_model is not None:
            raise ConfigError("--llm-model names the model of a remote server: give --llm-url")
        return None
    if args.llm is not None:
        raise ConfigError("give either --llm (a local folder) or --llm-url (a server), not both")
    key = args.llm_api_key or os.environ.get(API_KEY_ENV)
    return RemoteChatLLM(RemoteLLMSettings(args.llm_url, args.llm_model or "", key), llm_config)


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
