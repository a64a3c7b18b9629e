"""``minmo models list | plan | download PACK | import DIR | verify | remove PACK``: the model
manager on the command line (the window's first-run screen uses the same library)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from app.cli.options import number

GB = 1e9


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser(
        "models",
        parents=parents,
        help="model packs: list, plan what fits, download, import, verify, remove",
    )
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    ls = jobs.add_parser("list", parents=parents, help="the packs and what is installed")
    ls.set_defaults(func=run_list)
    plan = jobs.add_parser(
        "plan", parents=parents, help="which pack and precision fit this machine, and why"
    )
    plan.add_argument(
        "--memory",
        type=number(0.0),
        metavar="GB",
        help="plan for this much free GPU memory (0: a CPU) instead of this machine's",
    )
    plan.add_argument(
        "--ram", type=number(1.0), metavar="GB", help="with --memory 0: the available RAM"
    )
    plan.add_argument(
        "--voice",
        choices=["cosyvoice2", "cosyvoice3"],
        default=None,
        help="only the packs that speak with this voice release (the -cv3 packs: "
        "cosyvoice3); default: every pack, CosyVoice 2's first",
    )
    plan.set_defaults(func=run_plan)
    dl = jobs.add_parser(
        "download",
        parents=parents,
        help="download a pack from the model hub (pinned revisions, every file verified, "
        "resumable: run it again after a stop)",
    )
    dl.add_argument("pack", help="a pack name (see `minmo models list`)")
    dl.add_argument(
        "--source",
        choices=["hub", "modelscope"],
        default="hub",
        help="the Hugging Face hub (default; HF_ENDPOINT for a mirror) or ModelScope "
        "(MODELSCOPE_ENDPOINT); files are verified the same way",
    )
    dl.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="FILE",
        help="also fetch a file of the pack's releases that is not fetched by default, e.g. "
        "llm.rl.pt (CosyVoice 3's RL-tuned voice LM, for --voice-lm rl and Settings)",
    )
    dl.set_defaults(func=run_download)
    imp = jobs.add_parser(
        "import",
        parents=parents,
        help="use a folder that already holds a release (a hub or ModelScope cache, a copy): "
        "detected, verified, registered where it is",
    )
    imp.add_argument("folder", type=Path, metavar="DIR")
    imp.add_argument("--copy", action="store_true", help="copy it into the models folder")
    imp.add_argument(
        "--trust",
        action="store_true",
        help="offline, for files with no published sha256 and no record: record them as they are",
    )
    imp.set_defaults(func=run_import)
    verify = jobs.add_parser(
        "verify", parents=parents, help="check every installed file against its sha256"
    )
    verify.add_argument("pack", nargs="?", help="one pack (default: every installed release)")
    verify.set_defaults(func=run_verify)
    rm = jobs.add_parser(
        "remove",
        parents=parents,
        help="remove a pack's models that no other installed pack uses (imported folders "
        "are only forgotten, never deleted)",
    )
    rm.add_argument("pack")
    rm.set_defaults(func=run_remove)


def _store():
    from minmo_core.manager.store import ModelStore

    return ModelStore()


def run_list(args: argparse.Namespace) -> int:
    from minmo_core.manager.packs import all_packs, pack_releases
    from minmo_core.manager.store import release_status

    store = _store()
    print(f"models folder: {store.root}")
    for p in all_packs().values():
        if p.optional:
            print(f"\n{p.name} (optional): {p.description}")
            continue
        mem = p.memory_gb
        print(
            f"\n{p.name}: {p.description}\n  needs {mem.get('bfloat16', 0):.1f} GiB of GPU "
            f"memory (bfloat16), {mem.get('float32_cpu', 0):.1f} GiB of RAM on a CPU"
        )
        for release in pack_releases(p):
            status = release_status(release, store)
            print(f"  {release.name:<24} {status:<12} licence: {release.licence}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from minmo_core.errors import ConfigError
    from minmo_core.manager.planner import GiB, plan, this_machine

    if args.memory is None:
        if args.ram is not None:
            raise ConfigError("--ram goes with --memory 0 (a CPU)")
        memory, device = this_machine()
        where = "this machine's GPU (free)" if device == "cuda" else "this machine's RAM (free)"
    elif args.memory == 0:
        from minmo_core.manager.planner import available_ram

        memory = int((args.ram * GiB) if args.ram else available_ram())
        device, where = "cpu", "a CPU"
    else:
        memory, device, where = int(args.memory * GiB), "cuda", "a GPU"
    from minmo_core.common.releases import RELEASES

    voice = RELEASES[args.voice].name if args.voice else None
    result = plan(memory, device, voice)
    with_voice = f", with {voice} as the voice" if voice else ""
    print(
        f"planning for {where}: {memory / GiB:.1f} GiB, {result.usable / GiB:.1f} usable"
        f"{with_voice}"
    )
    head = ("pack", "LLM weights", "GiB", "KV 4k", "activ.", "speech", "overhead", "total", "")
    rows = []
    for e in result.candidates:
        fits = "fits" if e.total <= result.usable else "too big"
        if e.experimental:
            fits += " (experimental)"
        rows.append((e.pack, e.precision, f"{e.llm_weights / GiB:.1f}", f"{e.kv_cache / GiB:.2f}",
                     f"{e.activations / GiB:.2f}", f"{e.speech / GiB:.1f}",
                     f"{e.overhead / GiB:.1f}", f"{e.total / GiB:.1f}", fits))  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for row in (head, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"\nrecommended: {result.reason()}")
    if result.experimental is not None:
        e = result.experimental
        print(
            f"also possible: {e.pack} with {e.precision} weights ({e.total / GiB:.1f} GiB), "
            "experimental: 8/4-bit LLM weights through bitsandbytes are not yet measured"
        )
    return 0


class _Bar:
    """A one-line progress bar on a terminal, a line per 10 % otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, p) -> None:
        share = p.done / p.total if p.total else 1.0
        eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
        text = (
            f"{share:4.0%} {p.done / GB:.2f} of {p.total / GB:.2f} GB, "
            f"{p.rate / 1e6:.1f} MB/s{eta} ({p.release}: {p.file})"
        )
        if self.tty:
            bar = "#" * int(share * 30)
            print(f"\r[{bar:<30}] {text}"[:160].ljust(160), end="", file=sys.stderr, flush=True)
        elif int(share * 10) > self.shown:
            self.shown = int(share * 10)
            print(text, file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def run_download(args: argparse.Namespace) -> int:
    from minmo_core.errors import CheckpointError
    from minmo_core.manager.download import SOURCES, download_releases
    from minmo_core.manager.packs import pack, pack_releases

    p = pack(args.pack)
    if p.optional:
        raise CheckpointError(f"{p.name} is not on the hub: {p.description}")
    store = _store()
    bar = _Bar()
    try:
        source = SOURCES[args.source]()
        releases = with_also(pack_releases(p), args.also)
        folders = download_releases(releases, store, source, on_progress=bar)
    except KeyboardInterrupt:
        bar.end()
        print("download stopped; run the same command to resume", file=sys.stderr)
        return 130
    except CheckpointError as err:
        bar.end()
        raise CheckpointError(f"{err}{_how_to_bring(p, store)}") from err
    bar.end()
    for folder in folders:
        print(folder)
    return 0


def with_also(releases: list, names: list[str]) -> list:
    """``releases`` with the named files fetched too; a name no release has is refused."""
    from dataclasses import replace

    from minmo_core.common.releases import ReleaseFile
    from minmo_core.errors import ConfigError

    unknown = [n for n in names if not any(n in r.files for r in releases)]
    if unknown:
        optional = sorted({n for r in releases for n, f in r.files.items() if not f.used})
        raise ConfigError(
            f"no release of this pack has {', '.join(unknown)}; the files fetched only on "
            f"request are: {', '.join(optional) or 'none'}"
        )
    out = []
    for r in releases:
        files = {n: ReleaseFile(f.pin, f.used or n in names) for n, f in r.files.items()}
        out.append(replace(r, files=files))
    return out


def _how_to_bring(p, store) -> str:
    """For a hub that cannot be reached: what the pack still lacks, and the way around."""
    from minmo_core.manager.packs import pack_releases
    from minmo_core.manager.store import release_status

    lacking = [r for r in pack_releases(p) if release_status(r, store) not in ("installed",)]
    if not lacking:
        return ""
    names = "; ".join(f"{r.name} ({r.repo_id}@{(r.revision or '')[:8]})" for r in lacking)
    return (
        f". {p.name} still needs {names}: copy each folder from a machine that has it, then "
        "`minmo models import DIR`"
    )


def run_import(args: argparse.Namespace) -> int:
    from minmo_core.manager.imports import import_folder

    done = import_folder(args.folder, _store(), copy=args.copy, trust=args.trust)
    how = "copied to" if done.copied else "registered at"
    print(
        f"{done.release.name} ({done.release.repo_id}@{(done.release.revision or '')[:8]}): "
        f"verified against the {done.verified_by}, {how} {done.folder}"
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from minmo_core.common.releases import all_releases
    from minmo_core.errors import CheckpointError
    from minmo_core.manager.packs import pack, pack_releases
    from minmo_core.manager.store import release_status, verify_installed

    store = _store()
    if args.pack:
        releases = pack_releases(pack(args.pack))
    else:
        releases = [r for r in all_releases().values() if release_status(r, store) != "missing"]
        if not releases:
            print(f"nothing installed in {store.root}")
            return 0
    problems = []
    for release in releases:
        found = verify_installed(release, store)
        print(f"{release.name}: {'ok' if not found else 'PROBLEM'}", file=sys.stderr)
        problems += found
    if problems:
        raise CheckpointError("; ".join(problems))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from minmo_core.manager.packs import all_packs, pack, pack_releases
    from minmo_core.manager.store import release_status

    store = _store()
    target = pack(args.pack)
    others = [p for p in all_packs().values() if p.name != target.name and not p.optional]
    kept = {
        r.name
        for p in others
        if all(release_status(r, store) == "installed" for r in pack_releases(p))
        for r in pack_releases(p)
    }
    freed = 0
    for release in pack_releases(target):
        if release.name in kept:
            print(f"kept {release.name}: another installed pack uses it", file=sys.stderr)
            continue
        if store.imported(release):
            store.unregister(release)
            print(f"forgot {release.name} (imported from {store.folder(release)}; not deleted)")
            continue
        for folder in (store.folder(release), store.staging(release)):
            if folder.is_dir():
                freed += _drop_conversions(folder)
                freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                shutil.rmtree(folder)
                print(f"removed {folder}")
    print(f"freed {freed / GB:.2f} GB", file=sys.stderr)
    return 0


def _drop_conversions(folder) -> int:
    """Delete the safetensors conversions of the folder's .pt files; returns bytes freed."""
    from minmo_core.common.checkpoints import safetensors_cache_dir
    from minmo_core.common.releases import cached_sha256

    freed = 0
    for pt in folder.rglob("*.pt"):
        converted = safetensors_cache_dir() / f"{cached_sha256(pt)}.safetensors"
        if converted.is_file():
            freed += converted.stat().st_size
            converted.unlink()
    return freed
