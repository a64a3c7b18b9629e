"""``minmo bench ...``: speed and memory benchmarks (print a table, append to BENCHMARKS.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minmo_core.devices import resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark and record it in docs/BENCHMARKS.md")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    enc = jobs.add_parser("encoder", help="SenseVoice front end + encoder real-time factor")
    enc.add_argument("--preset", choices=["real", "tiny"], default="real")
    enc.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    enc.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    enc.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    enc.add_argument("--repeats", type=int, default=5)
    enc.add_argument("--output", type=Path, default=None, help="BENCHMARKS.md to append to")
    enc.add_argument("--no-record", action="store_true", help="print only")
    enc.set_defaults(func=run_encoder)


def run_encoder(args: argparse.Namespace) -> int:
    import torch

    from minmo_core.benchmarks import BENCHMARKS_MD, append_rows, bench_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    table = bench_encoder(args.preset, args.seconds, str(resolve_device(args.device)), args.repeats)
    print(table.render())
    if not args.no_record:
        path = args.output or BENCHMARKS_MD
        append_rows(table, path)
        print(f"recorded in {path}")
    return 0
