"""``minmo speech-tokens TEXT``: the voice-token LM's speech tokens for a text (debugging aid).

Prints one line per chunk of 15 tokens as soon as the chunk exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.options import (
    COSYVOICE_FOLDER,
    add_allow_unpinned,
    add_device,
    add_style,
    check_style_for,
    folder_help,
    style_from_args,
    text_argument,
)
from minmo_core.common.paths import model_folder


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "speech-tokens",
        parents=parents,
        help="print CosyVoice 2 speech tokens for a text, 15 per line (a debugging aid)",
    )
    p.add_argument("text", nargs="+", help="what to say")
    p.add_argument("--cosyvoice", metavar="DIR", help=folder_help(COSYVOICE_FOLDER))
    add_style(p)
    p.add_argument("--voice", type=Path, help="a saved voice (.safetensors) to clone")
    p.add_argument(
        "--stream", action="store_true", help="feed the text token by token (5:15 bi-streaming)"
    )
    p.add_argument("--greedy", action="store_true", help="arg-max instead of sampling")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    add_device(p)
    add_allow_unpinned(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.common.devices import resolve_device
    from minmo_core.voice.speech_tokens import SpeechTokenGenerator
    from minmo_core.voice.styles import instruction_is_empty
    from minmo_core.voice.voice_lm import RasSampler, greedy_sampler, load_voice_lm
    from minmo_core.voice.voice_prompt import (
        InstructPrompt,
        VoiceProfile,
        ZeroShotPrompt,
        lm_prompt,
    )

    text = text_argument(args.text)
    style = style_from_args(args)
    voice = VoiceProfile.load(args.voice) if args.voice else None
    device = resolve_device(args.device)
    folder = model_folder(args.cosyvoice, *COSYVOICE_FOLDER)
    check_style_for(style, args.wording, folder)
    if not instruction_is_empty(style):
        prompt = InstructPrompt(style, voice, args.wording)
    else:
        prompt = ZeroShotPrompt(voice) if voice else None
    lm, tokenizer = load_voice_lm(folder, device, allow_unpinned=args.allow_unpinned)
    sampler = greedy_sampler if args.greedy else RasSampler.from_config(lm.cfg, args.seed)
    generator = SpeechTokenGenerator(lm, tokenizer, sampler)
    lm_prompt_ = generator.prompt(*lm_prompt(prompt, lm.cfg.cosyvoice))
    if args.stream:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        chunks = generator.from_token_ids(ids, lm_prompt_)
    else:
        chunks = generator.from_text(text, lm_prompt_)
    for chunk in chunks:
        if chunk:  # an empty chunk only marks a sentence group's end
            print(" ".join(map(str, chunk)), flush=True)
    return 0
