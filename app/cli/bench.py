"""``minmo bench JOB``: speed and quality benchmarks; each prints a table and, from a
checkout, records its rows in docs/BENCHMARKS.md (a rerun replaces the same day's row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.options import add_device, number, whole_number

# The audio bench measures after the canceller's first 3 s and needs speech to measure on.
MIN_SINGLE_S, MIN_DOUBLE_S, MIN_NEAR_S = 10.0, 10.0, 5.0


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "bench",
        parents=parents,
        help="run a benchmark: print a table, record it in docs/BENCHMARKS.md from a checkout",
    )
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    enc = jobs.add_parser(
        "encoder", parents=parents, help="SenseVoice front end + encoder real-time factor"
    )
    enc.add_argument(
        "--seconds", type=number(1.0), default=10.0, help="audio length, >= 1 (default 10)"
    )
    _common_options(enc, repeats=5)
    enc.set_defaults(func=run_encoder)
    vlm = jobs.add_parser(
        "voice-lm", parents=parents, help="voice-token LM: time per speech token (d_lm)"
    )
    vlm.add_argument(
        "--tokens", type=whole_number(1), default=45, help="speech tokens per run (default 45)"
    )
    _common_options(vlm, repeats=3)
    _release_option(vlm)
    vlm.set_defaults(func=run_voice_lm)
    t2w = jobs.add_parser(
        "token2wav", parents=parents, help="flow + HiFT: time per 15-token chunk, HiFT RTF"
    )
    _common_options(t2w, repeats=3)
    _release_option(t2w)
    t2w.set_defaults(func=run_token2wav)
    audio = jobs.add_parser(
        "audio",
        parents=parents,
        help="echo cancellation, VAD and barge-in on simulated rooms (needs the dev extra)",
    )
    audio.add_argument(
        "--single",
        type=number(MIN_SINGLE_S),
        default=75.0,
        help=f"s of echo only per room, >= {MIN_SINGLE_S:g} (default 75)",
    )
    audio.add_argument(
        "--double",
        type=number(MIN_DOUBLE_S),
        default=30.0,
        help=f"s of double talk per room, >= {MIN_DOUBLE_S:g} (default 30)",
    )
    audio.add_argument(
        "--near",
        type=number(MIN_NEAR_S),
        default=20.0,
        help=f"s of user-only speech per room, >= {MIN_NEAR_S:g} (default 20)",
    )
    audio.add_argument(
        "--seeds", type=whole_number(1), default=3, help="scripts per room (default 3)"
    )
    audio.add_argument(
        "--aec",
        type=_backends,
        default=None,
        help="echo cancellers to compare, comma-separated: speex, webrtc (default: every "
        "installed one)",
    )
    _record_options(audio)
    audio.set_defaults(func=run_audio, threads=None, device="cpu", preset="real")
    e2e = jobs.add_parser(
        "e2e",
        parents=parents,
        help="spoken turns through the engine: time from end of speech to each stage, "
        "speculation off and on (random weights)",
    )
    e2e.add_argument(
        "--turns", type=whole_number(1), default=4, help="timed turns per row (default 4)"
    )
    e2e.add_argument(
        "--policy-wait",
        type=whole_number(0),
        default=500,
        metavar="MS",
        help="the silence rule's wait after the end of speech (default 500)",
    )
    e2e.add_argument(
        "--llm-size",
        choices=["0.5b", "1.5b", "3b", "7b"],
        default="7b",
        help="the Qwen2.5-Instruct shape at the real preset (default 7b, MinMo's)",
    )
    _common_options(e2e, repeats=None)
    e2e.set_defaults(func=run_e2e)
    startup = jobs.add_parser(
        "startup",
        parents=parents,
        help="cold start: process start to models ready, .pt files read by torch.load "
        "against the safetensors cache (writes about 4 GB of random models first)",
    )
    startup.add_argument(
        "--llm-size", choices=["0.5b", "1.5b"], default="0.5b", help="the LLM's shape"
    )
    _record_options(startup)
    startup.set_defaults(func=run_startup, threads=None, device="cpu", preset="real")
    stream = jobs.add_parser(
        "stream",
        parents=parents,
        help="one long reply through the voice path (voice LM + flow + HiFT, random "
        "weights): the time of chunks 1, 2, 5, 10, 20, 40 and the total compute",
    )
    stream.add_argument(
        "--chunks", type=whole_number(2), default=50,
        help="15-token chunks of the reply (default 50: 30 s of speech)",
    )  # fmt: skip
    _common_options(stream, repeats=None)
    _release_option(stream)
    stream.set_defaults(func=run_stream)
    gui = jobs.add_parser(
        "gui",
        parents=parents,
        help="the window's event loop during a spoken conversation with barge-ins (tiny "
        "models, fake sound card in real time): longest and 99th-percentile stall",
    )
    gui.add_argument(
        "--turns", type=whole_number(2), default=4, help="user turns, every other one "
        "talking over the reply (default 4)"
    )  # fmt: skip
    _record_options(gui)
    gui.set_defaults(func=run_gui, threads=None, device="cpu", preset="window")
    turns = jobs.add_parser(
        "turns",
        parents=parents,
        help="turn-taking: silence rules against Smart Turn on finished and unfinished speech",
    )
    turns.add_argument(
        "--real-clips",
        type=Path,
        metavar="DIR",
        help="a folder with the fixture recordings (default: $MINMO_FIXTURES/audio or "
        "shared/fixtures/audio beside the checkout, when present)",
    )
    turns.add_argument("--seed", type=int, default=0, help="pause lengths (default 0)")
    _record_options(turns)
    turns.set_defaults(func=run_turns, threads=None, device="cpu", preset="real")


def _common_options(p: argparse.ArgumentParser, repeats: int | None) -> None:
    p.add_argument(
        "--preset",
        choices=["real", "tiny"],
        default="real",
        help="real sizes (default) or the tiny test sizes (not recorded unless --record)",
    )
    add_device(p)
    p.add_argument("--threads", type=whole_number(1), default=None, help="CPU threads for torch")
    if repeats is not None:
        p.add_argument(
            "--repeats",
            type=whole_number(1),
            default=repeats,
            help=f"timed runs after the warm-up (default {repeats})",
        )
    _record_options(p)


def _record_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--record",
        metavar="PATH",
        nargs="?",
        const="",
        default=None,
        help="record the rows in PATH (without PATH: the checkout's docs/BENCHMARKS.md), "
        "even for the tiny preset",
    )
    where.add_argument("--no-record", action="store_true", help="print only")


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
        lambda device: bench_voice_lm(args.preset, device, args.tokens, args.repeats, args.backend),
    )


def run_token2wav(args: argparse.Namespace) -> int:
    from app.bench.models import bench_token2wav

    return _report(
        args,
        lambda device: bench_token2wav(args.preset, device, args.repeats, backends=args.backend),
    )


def run_audio(args: argparse.Namespace) -> int:
    from app.bench.audio import bench_audio  # one-line error without the dev extra

    return _report(
        args,
        lambda device: bench_audio(args.single, args.double, args.near, args.seeds, args.aec),
    )


def _backends(text: str, known: tuple[str, ...] = ("speex", "webrtc")) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    wrong = [n for n in names if n not in known]
    if wrong or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(wrong) or 'nothing'}: choose from {', '.join(known)}"
        )
    return names


VOICE_RELEASES = ("cosyvoice2", "cosyvoice3")


def _releases(text: str) -> tuple[str, ...]:
    return _backends(text, VOICE_RELEASES)


def _release_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        type=_releases,
        default=VOICE_RELEASES,
        help="voice releases to compare, comma-separated: cosyvoice2, cosyvoice3 (default: both)",
    )


def run_e2e(args: argparse.Namespace) -> int:
    from app.bench.e2e import bench_e2e

    return _report(
        args,
        lambda device: bench_e2e(args.preset, device, args.turns, args.policy_wait, args.llm_size),
    )


def run_stream(args: argparse.Namespace) -> int:
    from app.bench.stream import bench_stream

    return _report(
        args, lambda device: bench_stream(args.preset, device, args.chunks, args.backend)
    )


def run_gui(args: argparse.Namespace) -> int:
    from app.bench.gui import bench_gui

    return _report(args, lambda device: bench_gui(args.turns))


def run_startup(args: argparse.Namespace) -> int:
    from app.bench.startup import bench_startup

    return _report(args, lambda device: bench_startup(args.llm_size))


def run_turns(args: argparse.Namespace) -> int:
    import os

    from app.bench.record import CHECKOUT
    from app.bench.turns import bench_turns

    clips = args.real_clips
    if clips is None:
        env = os.environ.get("MINMO_FIXTURES")
        default = Path(env) / "audio" if env else CHECKOUT.parent / "shared" / "fixtures" / "audio"
        clips = default if default.is_dir() else None
    elif not clips.is_dir():
        from minmo_core.errors import ConfigError

        raise ConfigError(f"--real-clips {clips} is not a folder")
    return _report(args, lambda device: bench_turns(clips, args.seed))


def record_target(args: argparse.Namespace) -> tuple[Path | None, str]:
    """Where the rows go (None: nowhere) and why, decided before anything is measured."""
    from app.bench.record import BENCHMARKS_MD, running_from_checkout
    from minmo_core.errors import ConfigError

    if args.no_record:
        return None, "not recorded (--no-record)"
    if args.record:
        path = Path(args.record)
        if path.is_dir() or not path.parent.is_dir():
            raise ConfigError(f"cannot record into {path}: give a file in an existing folder")
        return path, f"recorded in {path}"
    if not running_from_checkout():
        if args.record is not None:
            raise ConfigError(
                "--record without a path records into a checkout's docs/BENCHMARKS.md, and "
                "this is an installed copy; give --record PATH"
            )
        return None, "not recorded (an installed copy; --record PATH keeps the rows)"
    if args.preset == "tiny" and args.record is None:
        return None, "not recorded (tiny preset; --record keeps the rows)"
    return BENCHMARKS_MD, f"recorded in {BENCHMARKS_MD}"


def _report(args: argparse.Namespace, bench) -> int:
    import torch

    from app.bench.record import record_rows
    from minmo_core.common.devices import resolve_device

    target, note = record_target(args)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = bench(str(device))
    print(table.render())
    if target is not None:
        record_rows(table, target)
    print(note)
    return 0
