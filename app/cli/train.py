"""``minmo train``: MinMo's training stages from a config file.

    minmo train run STAGE.toml [--steps N]     one stage (resumes from its last checkpoint)
    minmo train demo [--quick]                 every stage, small, on this CPU (app.train_demo)
    torchrun --nproc_per_node 8 -m app.cli train run STAGE.toml    the same, data-parallel

The config names the stage, its manifests, the base model folders and the output folder
(docs/TRAINING.md); the stage writes checkpoints, log.jsonl and an adapters folder that
``minmo converse --adapters`` and the window load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.options import existing_file, whole_number


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "train",
        parents=parents,
        help="train MinMo's adapters (projectors, LoRA, duplex predictor)",
        description="Train MinMo's adapters, one stage at a time (docs/TRAINING.md).",
    )
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    run = jobs.add_parser(
        "run",
        parents=parents,
        help="run one stage from its TOML config (resumes from the last checkpoint)",
    )
    run.add_argument("config", type=Path, help="the stage's TOML file")
    run.add_argument("--steps", type=whole_number(1), help="train to this step instead")
    run.set_defaults(func=run_stage)
    demo = jobs.add_parser(
        "demo",
        parents=parents,
        help="every stage at small scale on this CPU, scored on held-out voices "
        "(writes the table into docs/TRAINING.md)",
    )
    demo.add_argument("--out", type=Path, default=Path("train-demo"), help="working folder")
    demo.add_argument(
        "--quick", action="store_true", help="a few examples and steps: checks the plumbing only"
    )
    demo.set_defaults(func=run_demo)


def run_stage(args: argparse.Namespace) -> int:
    from minmo_core.train.config import read_run
    from minmo_core.train.stages import run_stage as train

    overrides = {"steps": args.steps} if args.steps else {}
    run = read_run(existing_file(args.config, "training config"), **overrides)
    result = train(run)
    if result.adapters is not None:
        print(f"adapters written to {result.adapters}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from app.train_demo import FULL, QUICK
    from app.train_demo import run_demo as demo

    demo(args.out, QUICK if args.quick else FULL)
    return 0
