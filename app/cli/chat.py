"""``minmo chat``: one turn, typed (``"text"``) or spoken (``--audio in.wav``); the reply
streams to stdout as it is written, and is spoken into ``-o reply.wav`` when asked."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from app.cli.options import add_style, audio_output, existing_file, number, whole_number
from app.cli.stack import (
    TerminalView,
    add_stack_options,
    load_adapters_option,
    load_stack,
    write_audio,
)
from minmo_core.config import LLMConfig
from minmo_core.errors import AudioError, ConfigError

MAX_UTTERANCE_S = 30.0  # one spoken turn; longer recordings: minmo transcribe


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "chat",
        parents=parents,
        help="one turn with the assistant: typed or spoken, answered in text (and speech)",
        description=(
            "One turn: a typed message or, with --audio, a spoken one (transcribed by "
            "SenseVoiceSmall). The reply streams as it is written; with -o it is also spoken "
            "(CosyVoice 2) into an audio file."
        ),
    )
    p.add_argument("text", nargs="*", help="the message (several words are joined)")
    p.add_argument("--audio", type=Path, metavar="FILE", help="a spoken message (at most 30 s)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="speak the reply into FILE")
    add_stack_options(p)
    add_style(p)
    p.add_argument(
        "--max-new-tokens", type=whole_number(1), metavar="N", help="longest reply in tokens"
    )
    p.add_argument(
        "--temperature", type=number(0.0), metavar="T", help="0 picks the likeliest token"
    )
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--seed", type=int, help="sampling seed, for a repeatable reply")
    p.set_defaults(func=run)


def llm_config(args: argparse.Namespace) -> LLMConfig:
    overrides = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "system_prompt": args.system,
        "weight_bits": getattr(args, "llm_bits", None),
    }
    return replace(LLMConfig(), **{k: v for k, v in overrides.items() if v is not None})


def engine_settings(args: argparse.Namespace, config: LLMConfig, speak: bool):
    from app.cli.options import style_from_args
    from minmo_core.engine.engine import EngineSettings
    from minmo_core.engine.reply import VoiceSettings

    style = style_from_args(args)
    return EngineSettings(
        system_prompt=config.system_prompt,
        voice=VoiceSettings(style=style, wording=args.wording),
        speak=speak,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from minmo_core.common.audio import read_audio
    from minmo_core.engine.engine import ConversationEngine
    from minmo_core.engine.turns import SilencePolicy

    text = " ".join(args.text).strip()
    if args.audio is not None and text:
        raise ConfigError("give either a typed message or --audio, not both")
    if args.audio is None and not text:
        raise ConfigError('nothing to send: give the message, e.g. minmo chat "Hello!"')
    fmt = audio_output(args.output) if args.output is not None else None
    audio = None
    if args.audio is not None:
        audio = read_audio(existing_file(args.audio, "audio file"), 16000)
        if audio.size > MAX_UTTERANCE_S * 16000:
            raise AudioError(
                f"{args.audio} is {audio.size / 16000:.0f} s long; a spoken turn is at most "
                f"{MAX_UTTERANCE_S:.0f} s (minmo transcribe reads recordings of any length)"
            )
    config = llm_config(args)
    speak = fmt is not None
    settings = engine_settings(args, config, speak)
    adapters = load_adapters_option(args)
    aligned = adapters is not None
    llm, voice, ears = load_stack(
        args, config, voice=speak or aligned, ears=audio is not None or aligned
    )
    view = TerminalView(show_timing=audio is not None or speak)
    # a recording is one whole turn: no end-of-turn model to load
    engine = ConversationEngine(llm, voice, view, settings, ears, SilencePolicy(), adapters).start()
    try:
        turn = engine.send_audio(audio) if audio is not None else engine.send_text(text)
        engine.wait_idle()
    finally:
        engine.shutdown()
    view.raise_error()
    if fmt is not None:
        write_audio(args.output, view.turn_audio(turn), fmt)
        print(f"spoken reply: {args.output}", file=sys.stderr)
    return 0
