"""The ``minmo`` command line: one subcommand per job.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func``. Errors the user can fix (``MinMoError``) end the
program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from minmo_core.errors import MinMoError


def build_parser() -> argparse.ArgumentParser:
    from app.cli import bench, chat, download, speech_tokens, transcribe, tts

    parser = argparse.ArgumentParser(
        prog="minmo", description="MinMo Assistant: local voice-interaction models"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (transcribe, chat, speech_tokens, tts, download, bench):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MinMoError as err:
        print(f"minmo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minmo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`minmo ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
