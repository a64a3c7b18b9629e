"""``minmo chat TEXT``: one turn with the LLM, its reply streamed to stdout as it is made."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from minmo_core.config import LLMConfig
from minmo_core.errors import CheckpointError, ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "chat",
        help="send one message to the LLM and stream its reply",
        description="Send one message to Qwen2.5-Instruct and print its reply as it is made.",
    )
    p.add_argument("text", nargs="*", help="the message (several words are joined)")
    p.add_argument(
        "--llm",
        metavar="DIR",
        help="Qwen2.5-Instruct folder (default: $MINMO_LLM_DIR or the models folder)",
    )
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="longest reply in tokens")
    p.add_argument("--temperature", type=float, metavar="T", help="0 picks the likeliest token")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--seed", type=int, help="sampling seed, for a repeatable reply")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.llm.chat import LLM_DIR_ENV, ChatLLM, default_llm_dir

    text = " ".join(args.text).strip()
    if not text:
        raise ConfigError('nothing to send: give the message, e.g. minmo chat "Hello!"')
    overrides = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "system_prompt": args.system,
    }
    config = replace(LLMConfig(), **{k: v for k, v in overrides.items() if v is not None})
    if args.llm is None:
        folder = default_llm_dir()
        if not folder.is_dir():
            raise CheckpointError(
                f"no LLM folder at {folder}; pass --llm DIR or set {LLM_DIR_ENV} to a "
                "Qwen2.5-Instruct folder"
            )
    else:
        folder = args.llm
    llm = ChatLLM(folder, config, device=args.device)
    for event in llm.stream(text, seed=args.seed):
        sys.stdout.write(event.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
