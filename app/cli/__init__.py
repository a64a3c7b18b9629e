"""The ``minmo`` command line: one subcommand per job, behind one error boundary.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func``; it validates its arguments and inputs before any model loads.
Whatever goes wrong ends the program with one line on stderr naming the file, option or
problem: exit status 2 for what the user can fix (bad arguments, inputs, model folders),
1 for anything else. ``--debug`` (or ``MINMO_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from app.cli.options import Parser
from minmo_core.errors import MinMoError, first_line, is_out_of_memory

PROG = "minmo"
DEBUG_ENV = "MINMO_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    from app.cli import bench, chat, converse, models, speech_tokens, train, transcribe, tts

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)",
    )
    parser = Parser(
        prog=PROG,
        description="MinMo Assistant: local voice-interaction models",
        parents=[debug],
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (transcribe, chat, converse, speech_tokens, tts, models, bench, train):
        module.register(subparsers, [debug])
    return parser


def describe(err: BaseException) -> str:
    """One line naming the problem, for an exception from any library we call."""
    import soundfile as sf

    if isinstance(err, MinMoError):
        text = str(err)
    elif is_out_of_memory(err):
        text = (
            f"the GPU ran out of memory ({first_line(err)}); close other GPU programs, "
            "use a smaller model or --device cpu"
        )
    elif isinstance(err, MemoryError):
        text = "out of memory: close other programs or use a smaller model"
    elif isinstance(err, sf.LibsndfileError):
        text = f"audio file error: {first_line(err)}"
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or first_line(err)}"
    elif isinstance(err, OSError):
        text = f"system error: {err.strerror or first_line(err)}"
    else:
        text = (
            f"unexpected {type(err).__name__}: {first_line(err)} "
            f"(run again with --debug for the traceback)"
        )
    return " ".join(text.split())  # one line, whatever the message held


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`minmo ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {describe(err)}", file=sys.stderr)
        return 2 if isinstance(err, MinMoError) else 1


if __name__ == "__main__":
    sys.exit(main())
