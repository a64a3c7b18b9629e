"""``minmo tts TEXT -o out.wav``: speak a text with CosyVoice 2, streaming into the file."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.options import (
    COSYVOICE_FOLDER,
    add_allow_unpinned,
    add_device,
    add_style,
    add_voice_lm,
    audio_output,
    check_style_for,
    existing_file,
    folder_help,
    style_from_args,
    text_argument,
)
from minmo_core.common.paths import model_folder
from minmo_core.errors import AudioError, ConfigError

PROFILE_SUFFIX = ".safetensors"


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "tts",
        parents=parents,
        help="speak a text into an audio file (and the speakers)",
        description=(
            "Speak a text with CosyVoice 2, streaming 0.6 s chunks into the file (and the "
            "speakers with --play). A style (--emotion, --dialect, --rate, --persona, "
            "--volume) is an instruction to the voice LM; --voice clones a voice from a "
            "3-30 s clip or a saved profile."
        ),
    )
    p.add_argument("text", nargs="+", help="what to say")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="audio file to write (.wav, .flac, .ogg)"
    )
    p.add_argument("--cosyvoice", metavar="DIR", help=folder_help(COSYVOICE_FOLDER))
    add_style(p)
    p.add_argument(
        "--voice",
        type=Path,
        metavar="FILE",
        help=f"a reference clip (3-30 s of speech) or a saved voice ({PROFILE_SUFFIX})",
    )
    p.add_argument("--voice-text", metavar="TEXT", help="what the reference clip says")
    p.add_argument(
        "--save-voice",
        type=Path,
        metavar="FILE",
        help=f"also save the voice cloned from the clip ({PROFILE_SUFFIX}), to reuse with --voice",
    )
    p.add_argument("--play", action="store_true", help="also play through the speakers")
    p.add_argument("--greedy", action="store_true", help="arg-max instead of sampling")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument(
        "--chunks",
        choices=["fixed", "growing"],
        default="growing",
        help="speech per synthesis step: growing (default: 15 tokens, then 25 and 50 while "
        "the audio is ahead of playback; the first audio is as early) or fixed 15",
    )
    add_device(p)
    add_voice_lm(p)
    add_allow_unpinned(p)
    p.set_defaults(func=run)


def check_voice_options(args: argparse.Namespace) -> None:
    """The --voice/--voice-text/--save-voice combinations that make sense."""
    if args.voice is None:
        if args.voice_text is not None:
            raise ConfigError("--voice-text describes a clip: give the clip with --voice")
        if args.save_voice is not None:
            raise ConfigError("--save-voice saves a cloned voice: give a clip with --voice")
        return
    existing_file(args.voice, "voice")
    if args.voice.suffix == PROFILE_SUFFIX:
        if args.voice_text is not None:
            raise ConfigError(
                f"--voice-text goes with a recording; the saved voice {args.voice} carries "
                "its own transcript"
            )
        if args.save_voice is not None:
            raise ConfigError(f"--save-voice needs a recording; {args.voice} is already saved")
        return
    if not args.voice_text or not args.voice_text.strip():
        raise ConfigError("--voice with a recording needs --voice-text: what the clip says")
    if args.save_voice is not None:
        if args.save_voice.suffix != PROFILE_SUFFIX:
            raise ConfigError(f"--save-voice writes a {PROFILE_SUFFIX} file, not {args.save_voice}")
        if not args.save_voice.parent.is_dir():
            raise ConfigError(
                f"cannot write {args.save_voice}: folder {args.save_voice.parent} does not exist"
            )


def _voice(args: argparse.Namespace, folder: Path):
    from minmo_core.common.audio import probe_audio
    from minmo_core.voice.voice_clone import VoiceCloner
    from minmo_core.voice.voice_prompt import VoiceProfile

    if args.voice is None:
        return None
    if args.voice.suffix == PROFILE_SUFFIX:
        return VoiceProfile.load(args.voice)
    probe_audio(args.voice)
    cloner = VoiceCloner.from_folder(folder, allow_unpinned=args.allow_unpinned)
    voice = cloner.clone(args.voice, args.voice_text.strip(), args.voice.stem)
    if args.save_voice is not None:
        voice.save(args.save_voice)
    return voice


def check_output_device() -> None:
    """Raise AudioError, before any model loads, when nothing can play 24 kHz mono."""
    import sounddevice as sd

    try:
        sd.check_output_settings(samplerate=24000, channels=1, dtype="float32")
    except (sd.PortAudioError, OSError, ValueError) as err:
        raise AudioError(f"no usable audio output device for --play ({err})") from err


def _player(play: bool):
    if not play:
        return None
    import sounddevice as sd

    try:
        stream = sd.OutputStream(samplerate=24000, channels=1, dtype="float32")
        stream.start()
    except (sd.PortAudioError, OSError, ValueError) as err:
        raise AudioError(f"no usable audio output device for --play ({err})") from err
    return stream


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from minmo_core.common.devices import resolve_device
    from minmo_core.engine.stack import voice_lm_file
    from minmo_core.voice.token2wav import SCHEDULES
    from minmo_core.voice.tts import SAMPLE_RATE, SpeechSynthesizer

    text = text_argument(args.text)
    style = style_from_args(args)
    file_format, subtype = audio_output(args.output)
    check_voice_options(args)
    if args.play:
        check_output_device()
    device = resolve_device(args.device)
    folder = model_folder(args.cosyvoice, *COSYVOICE_FOLDER)
    check_style_for(style, args.wording, folder)
    voice = _voice(args, folder)
    llm_file = voice_lm_file(folder, args.voice_lm)
    synth = SpeechSynthesizer.from_folder(
        folder, device, args.allow_unpinned, args.greedy, args.seed, llm_file
    )
    player = _player(args.play)
    partial = args.output.with_name(args.output.name + ".partial")
    try:
        with sf.SoundFile(partial, "w", SAMPLE_RATE, 1, subtype, format=file_format) as out:
            chunks = synth.speak(text, style, voice, args.wording, SCHEDULES[args.chunks])
            for chunk in chunks:
                audio = chunk.numpy()
                out.write(audio)
                out.flush()
                if player is not None:
                    player.write(audio[:, None])
        partial.replace(args.output)  # an interrupted run never leaves a truncated file behind
    finally:
        partial.unlink(missing_ok=True)
        if player is not None:
            player.stop()
            player.close()
    print(args.output)
    return 0
