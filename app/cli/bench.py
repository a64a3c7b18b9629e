"""``minmo bench ...``: speed and memory benchmarks (print a table, append to BENCHMARKS.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minmo_core.common.devices import resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark and record it in docs/BENCHMARKS.md")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    enc = jobs.add_parser("encoder", help="SenseVoice front end + encoder real-time factor")
    enc.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    _common_options(enc, repeats=5)
    enc.set_defaults(func=run_encoder)
    vlm = jobs.add_parser("voice-lm", help="voice-token LM: time per speech token (d_lm)")
    vlm.add_argument("--tokens", type=int, default=45, help="speech tokens per run (default 45)")
    _common_options(vlm, repeats=3)
    vlm.set_defaults(func=run_voice_lm)
    t2w = jobs.add_parser("token2wav", help="flow + HiFT: time per 15-token chunk, HiFT RTF")
    _common_options(t2w, repeats=3)
    t2w.set_defaults(func=run_token2wav)
    audio = jobs.add_parser("audio", help="echo cancellation, VAD and barge-in on simulated rooms")
    audio.add_argument("--single", type=float, default=75.0, help="s of echo only per room")
    audio.add_argument("--double", type=float, default=30.0, help="s of double talk per room")
    audio.add_argument("--near", type=float, default=20.0, help="s of user-only speech per room")
    audio.add_argument("--seeds", type=int, default=3, help="scripts per room (default 3)")
    audio.add_argument("--output", type=Path, default=None, help="BENCHMARKS.md to append to")
    audio.add_argument("--no-record", action="store_true", help="print only")
    audio.set_defaults(func=run_audio, threads=1, device="cpu")


def _common_options(p: argparse.ArgumentParser, repeats: int) -> None:
    p.add_argument("--preset", choices=["real", "tiny"], default="real")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--output", type=Path, default=None, help="BENCHMARKS.md to append to")
    p.add_argument("--no-record", action="store_true", help="print only")


def run_encoder(args: argparse.Namespace) -> int:
    from app.bench.models import bench_encoder

    return _report(
        args,
        lambda device: bench_encoder(args.preset, args.seconds, device, args.repeats),
    )


def run_voice_lm(args: argparse.Namespace) -> int:
    from app.bench.models import bench_voice_lm

    return _report(
        args,
        lambda device: bench_voice_lm(args.preset, device, args.tokens, args.repeats),
    )


def run_token2wav(args: argparse.Namespace) -> int:
    from app.bench.models import bench_token2wav

    return _report(args, lambda device: bench_token2wav(args.preset, device, args.repeats))


def run_audio(args: argparse.Namespace) -> int:
    # the audio path lives in the app package (Qt-free); only this command reaches into it
    from app.bench.audio import bench_audio

    return _report(
        args, lambda device: bench_audio(args.single, args.double, args.near, args.seeds)
    )


def _report(args: argparse.Namespace, bench) -> int:
    import torch

    from app.bench.models import BENCHMARKS_MD, append_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    table = bench(str(resolve_device(args.device)))
    print(table.render())
    if not args.no_record:
        path = args.output or BENCHMARKS_MD
        append_rows(table, path)
        print(f"recorded in {path}")
    return 0
