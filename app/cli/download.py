"""``minmo download MODEL``: fetch an official release at its pinned revision, verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minmo_core.common.paths import models_dir
from minmo_core.common.releases import RELEASES
from minmo_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "download",
        parents=parents,
        help="download an official model release (pinned revision, every file checked)",
    )
    p.add_argument("model", choices=sorted(RELEASES))
    p.add_argument("--dir", type=Path, default=None, help="target folder (default: models folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from minmo_core.common.hub import download_release

    release = RELEASES[args.model]
    folder = args.dir or models_dir() / release.name
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cannot download into {folder}: it is a file")

    def progress(name: str, index: int, total: int) -> None:
        print(f"[{index + 1}/{total}] {name}", file=sys.stderr, flush=True)

    download_release(release, folder, progress)
    print(folder)
    return 0
