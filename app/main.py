"""Entry point of the desktop app (``minmo-assistant`` / ``python main.py``).

The Qt window is not built yet; until it is, this prints what works today: the ``minmo``
command line.
"""

from __future__ import annotations

import sys

from app.cli import build_parser

NOT_YET = (
    "MinMo Assistant: the desktop window is not available yet in this version.\n"
    "What works today is the `minmo` command line (run it from .venv/bin/minmo):\n"
)


def main() -> int:
    print(NOT_YET)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
