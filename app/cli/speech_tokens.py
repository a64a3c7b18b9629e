"""``minmo speech-tokens TEXT``: the voice-token LM's speech tokens for a text (debugging aid).

Prints one line per chunk of 15 tokens as soon as the chunk exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minmo_core.common.devices import resolve_device
from minmo_core.common.paths import model_folder

COSYVOICE_ENV = "MINMO_COSYVOICE_DIR"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "speech-tokens", help="print CosyVoice 2 speech tokens for a text, 15 per line"
    )
    p.add_argument("text", nargs="+", help="what to say")
    p.add_argument("--cosyvoice", metavar="DIR", help=f"CosyVoice2-0.5B folder (${COSYVOICE_ENV})")
    p.add_argument("--emotion", help="e.g. happy, sad, angry, surprised, fearful, calm")
    p.add_argument("--dialect", help="e.g. cantonese, sichuanese, shanghainese, tianjin")
    p.add_argument("--rate", help="very_slow, slow, normal, fast, very_fast")
    p.add_argument("--persona", help="role-play persona, e.g. robot, mysterious")
    p.add_argument("--wording", choices=["zh", "en"], default="zh", help="instruction language")
    p.add_argument("--voice", type=Path, help="a saved voice (.safetensors) to clone")
    p.add_argument(
        "--stream", action="store_true", help="feed the text token by token (5:15 bi-streaming)"
    )
    p.add_argument("--greedy", action="store_true", help="arg-max instead of sampling")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-unpinned", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.voice.speech_tokens import SpeechTokenGenerator
    from minmo_core.voice.styles import VoiceStyle, instruction_is_empty
    from minmo_core.voice.voice_lm import RasSampler, greedy_sampler, load_voice_lm
    from minmo_core.voice.voice_prompt import (
        InstructPrompt,
        VoiceProfile,
        ZeroShotPrompt,
        lm_prompt,
    )

    text = " ".join(args.text)
    style = VoiceStyle.parse(args.emotion, args.dialect, args.rate, args.persona)
    voice = VoiceProfile.load(args.voice) if args.voice else None
    if not instruction_is_empty(style):
        prompt = InstructPrompt(style, voice, args.wording)
    else:
        prompt = ZeroShotPrompt(voice) if voice else None
    folder = model_folder(args.cosyvoice, COSYVOICE_ENV, "CosyVoice2-0.5B", "--cosyvoice")
    device = resolve_device(args.device)
    lm, tokenizer = load_voice_lm(folder, device, allow_unpinned=args.allow_unpinned)
    sampler = greedy_sampler if args.greedy else RasSampler.from_config(lm.cfg, args.seed)
    generator = SpeechTokenGenerator(lm, tokenizer, sampler)
    lm_prompt_ = generator.prompt(*lm_prompt(prompt))
    if args.stream:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        chunks = generator.from_token_ids(ids, lm_prompt_)
    else:
        chunks = generator.from_text(text, lm_prompt_)
    for chunk in chunks:
        print(" ".join(map(str, chunk)), flush=True)
    return 0
