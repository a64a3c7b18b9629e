"""``minmo converse``: a conversation in the terminal.

Without options it listens to the microphone and answers through the speakers (full duplex:
talk over it to interrupt; Ctrl+C ends). ``--text`` takes typed turns from standard input
instead, one line per turn (``/reset`` forgets the history, ``/quit`` or end of input ends)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.chat import engine_settings, llm_config
from app.cli.options import add_style, number, whole_number
from app.cli.stack import (
    TerminalView,
    add_stack_options,
    load_adapters_option,
    load_stack,
    write_audio,
)
from minmo_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "converse",
        parents=parents,
        help="a conversation in the terminal (typed turns; spoken replies saved or played)",
    )
    p.add_argument(
        "--text", action="store_true", help="typed turns from standard input (no microphone)"
    )
    p.add_argument("--input-device", metavar="DEVICE", help="microphone: index or part of its name")
    p.add_argument("--output-device", metavar="DEVICE", help="speakers: index or part of its name")
    p.add_argument("--no-voice", action="store_true", help="text replies only (no CosyVoice)")
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save each spoken reply there")
    p.add_argument("--play", action="store_true", help="play the spoken replies")
    add_stack_options(p)
    add_style(p)
    p.add_argument("--max-new-tokens", type=whole_number(1), metavar="N")
    p.add_argument("--temperature", type=number(0.0), metavar="T")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.engine.engine import ConversationEngine
    from minmo_core.engine.turns import SilencePolicy

    if not args.text:
        return converse_live(args)
    speak = not args.no_voice
    if not speak and (args.save_dir or args.play):
        raise ConfigError("--save-dir and --play need spoken replies: drop --no-voice")
    if args.save_dir is not None and not args.save_dir.is_dir():
        raise ConfigError(f"--save-dir {args.save_dir} is not an existing folder")
    if args.play:
        from app.cli.tts import check_output_device

        check_output_device()
    config = llm_config(args)
    settings = engine_settings(args, config, speak)
    adapters = load_adapters_option(args)
    aligned = adapters is not None
    llm, voice, ears = load_stack(args, config, voice=speak or aligned, ears=aligned)
    view = TerminalView()
    player = _Player() if args.play else None
    policy = SilencePolicy()  # typed turns: nothing to judge
    engine = ConversationEngine(llm, voice, view, settings, ears, policy, adapters).start()
    prompt = "> " if sys.stdin.isatty() else ""
    try:
        while True:
            if prompt:
                print(prompt, end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/quit":
                break
            line = line.strip()
            if not line:
                continue
            if line == "/reset":
                engine.reset()
                engine.wait_idle()
                print("(conversation reset)", file=sys.stderr)
                continue
            turn = engine.send_text(line)
            engine.wait_idle()
            if view.error is not None:
                print(f"minmo: error: {view.error}", file=sys.stderr)
                view.error = None
                continue
            audio = view.turn_audio(turn)
            if args.save_dir is not None and audio.size:
                write_audio(args.save_dir / f"turn-{turn}.wav", audio, ("WAV", "PCM_16"))
            if player is not None and audio.size:
                player.play(audio)
    finally:
        engine.shutdown()
        if player is not None:
            player.close()
    return 0


class _Player:
    """Replies to the speakers, one after another."""

    def __init__(self) -> None:
        import sounddevice as sd

        self.stream = sd.OutputStream(samplerate=24000, channels=1, dtype="float32")
        self.stream.start()

    def play(self, audio) -> None:
        self.stream.write(audio[:, None])

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def converse_live(args: argparse.Namespace) -> int:
    """Microphone in, speakers out, through the audio path (echo cancellation, barge-in)."""
    import time

    from app.audio.events import AudioSettings
    from app.conversation import LiveConversation
    from minmo_core.engine.engine import ConversationEngine

    if args.no_voice or args.save_dir or args.play:
        raise ConfigError("--no-voice, --save-dir and --play go with --text")
    config = llm_config(args)
    settings = engine_settings(args, config, speak=True)
    audio = AudioSettings(input_device=_device(args.input_device),
                          output_device=_device(args.output_device))  # fmt: skip
    adapters = load_adapters_option(args)
    llm, voice, ears = load_stack(args, config, voice=True, ears=True)
    view = TerminalView()
    live = LiveConversation(
        lambda on_event: ConversationEngine(llm, voice, on_event, settings, ears, None, adapters),
        view,
        audio,
    )
    live.start()
    print("listening: speak, and talk over the reply to interrupt it (Ctrl+C ends)",
          file=sys.stderr)  # fmt: skip
    try:
        while True:
            time.sleep(0.2)
            if view.error is not None:
                print(f"minmo: error: {view.error}", file=sys.stderr)
                view.error = None
    except KeyboardInterrupt:
        return 0
    finally:
        live.stop()


def _device(name: str | None) -> int | str | None:
    return int(name) if name is not None and name.isdigit() else name
