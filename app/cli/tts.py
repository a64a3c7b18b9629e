"""``minmo tts TEXT -o out.wav``: speak a text with CosyVoice 2, streaming into the file."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.speech_tokens import COSYVOICE_ENV
from minmo_core.common.devices import resolve_device
from minmo_core.common.paths import model_folder
from minmo_core.errors import AudioError, ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tts", help="speak a text into a WAV file (and the speakers)")
    p.add_argument("text", nargs="+", help="what to say")
    p.add_argument("-o", "--output", type=Path, required=True, help="WAV file to write")
    p.add_argument("--cosyvoice", metavar="DIR", help=f"CosyVoice2-0.5B folder (${COSYVOICE_ENV})")
    p.add_argument("--emotion")
    p.add_argument("--dialect")
    p.add_argument("--rate")
    p.add_argument("--persona")
    p.add_argument("--wording", choices=["zh", "en"], default="zh", help="instruction language")
    p.add_argument(
        "--voice", type=Path, help="reference clip (3-30 s) or a saved .safetensors voice"
    )
    p.add_argument("--voice-text", help="what the reference clip says")
    p.add_argument("--play", action="store_true", help="also play through the speakers")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-unpinned", action="store_true")
    p.set_defaults(func=run)


def _voice(args: argparse.Namespace, folder: Path):
    from minmo_core.voice.voice_clone import VoiceCloner
    from minmo_core.voice.voice_prompt import VoiceProfile

    if args.voice is None:
        return None
    if args.voice.suffix == ".safetensors":
        return VoiceProfile.load(args.voice)
    if not args.voice_text:
        raise ConfigError("--voice with a recording needs --voice-text: what the clip says")
    cloner = VoiceCloner.from_folder(folder, allow_unpinned=args.allow_unpinned)
    return cloner.clone(args.voice, args.voice_text, args.voice.stem)


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

    from minmo_core.voice.styles import VoiceStyle
    from minmo_core.voice.tts import SAMPLE_RATE, SpeechSynthesizer

    text = " ".join(args.text)
    style = VoiceStyle.parse(args.emotion, args.dialect, args.rate, args.persona)
    folder = model_folder(args.cosyvoice, COSYVOICE_ENV, "CosyVoice2-0.5B", "--cosyvoice")
    if not args.output.parent.is_dir():
        raise ConfigError(f"cannot write {args.output}: folder {args.output.parent} does not exist")
    voice = _voice(args, folder)
    synth = SpeechSynthesizer.from_folder(
        folder, resolve_device(args.device), args.allow_unpinned, args.greedy, args.seed
    )
    player = _player(args.play)
    partial = args.output.with_name(args.output.name + ".partial")
    try:
        with sf.SoundFile(partial, "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as out:
            for chunk in synth.speak(text, style, voice, args.wording):
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
