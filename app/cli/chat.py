"""``minmo chat TEXT``: one turn with the LLM, its reply streamed to stdout as it is made."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from app.cli.options import add_device, number, text_argument, whole_number
from minmo_core.common.paths import model_folder
from minmo_core.config import LLMConfig
from minmo_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "chat",
        parents=parents,
        help="send one message to the LLM and stream its reply",
        description="Send one message to Qwen2.5-Instruct and print its reply as it is made.",
    )
    p.add_argument("text", nargs="*", help="the message (several words are joined)")
    p.add_argument(
        "--llm",
        metavar="DIR",
        help="Qwen2.5-Instruct folder (default: $MINMO_LLM_DIR or the models folder)",
    )
    add_device(p)
    p.add_argument(
        "--max-new-tokens", type=whole_number(1), metavar="N", help="longest reply in tokens"
    )
    p.add_argument(
        "--temperature", type=number(0.0), metavar="T", help="0 picks the likeliest token"
    )
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--seed", type=int, help="sampling seed, for a repeatable reply")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.common.devices import resolve_device
    from minmo_core.llm.chat import DEFAULT_MODEL, LLM_DIR_ENV, ChatLLM

    try:
        text = text_argument(args.text)
    except ConfigError:
        raise ConfigError('nothing to send: give the message, e.g. minmo chat "Hello!"') from None
    overrides = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "system_prompt": args.system,
    }
    config = replace(LLMConfig(), **{k: v for k, v in overrides.items() if v is not None})
    device = resolve_device(args.device)
    folder = model_folder(args.llm, LLM_DIR_ENV, DEFAULT_MODEL, "--llm")
    llm = ChatLLM(folder, config, device=str(device))
    for event in llm.stream(text, seed=args.seed):
        sys.stdout.write(event.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
