"""Local imports: a folder that already holds a release (a hub cache snapshot, a ModelScope
cache, a copied folder) is detected, verified and registered where it is; copied into the
models folder only when asked.

Detection: the release whose used files are all there; the Qwen sizes, which share their file
names, are told apart by config.json. Verification, file by file:
- a published pin (size and sha256): the file must match it;
- else the lock file, when an earlier download or import recorded the file;
- else a hub cache snapshot at the pinned commit: each file links to a blob named by its
  sha256 (git blob id for small files), which the file must match;
- else the hub's metadata at the pinned commit, when the hub can be reached;
- else (offline, no record) the import is refused, unless ``trust`` records the files as
  they are.
Files verified against anything but a pin are locked, so later checks hold them to it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from minmo_core.common.releases import Release, all_releases, cached_sha256
from minmo_core.errors import CheckpointError
from minmo_core.manager.download import Expected, HubSource, matches
from minmo_core.manager.store import ModelStore


@dataclass(frozen=True)
class Imported:
    release: Release
    folder: Path  # where the app will read it
    verified_by: str  # "pins", "lock", "hub cache", "hub", "trust"
    copied: bool


def snapshot_folder(folder: Path, release: Release | None = None) -> Path:
    """A hub cache repository folder (models--org--name) resolved to its snapshot at the
    pinned commit (or its only snapshot); any other folder as it is."""
    snapshots = folder / "snapshots"
    if folder.name.startswith("models--") and snapshots.is_dir():
        candidates = sorted(p for p in snapshots.iterdir() if p.is_dir())
        if release is not None and release.revision and (snapshots / release.revision).is_dir():
            return snapshots / release.revision
        if len(candidates) == 1:
            return candidates[0]
        raise CheckpointError(
            f"{folder} holds {len(candidates)} snapshots; import the one you mean "
            f"({', '.join(p.name[:12] for p in candidates)})"
        )
    return folder


def detect(folder: Path) -> Release:
    """The release ``folder`` holds."""
    folder = snapshot_folder(Path(folder).expanduser())
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    matches = [
        r
        for r in all_releases().values()
        if all((folder / name).is_file() for name in r.used_files)
    ]
    llms = [r for r in matches if r.kind == "llm"]
    if len(llms) > 1 or (llms and (folder / "config.json").is_file()):
        shaped = [r for r in llms if _shape_matches(folder / "config.json", r)]
        matches = [r for r in matches if r.kind != "llm"] + shaped
    if len(matches) != 1:
        known = ", ".join(all_releases())
        raise CheckpointError(
            f"{folder} does not hold one release the app knows ({known}): "
            + ("none matches its files" if not matches else f"it could be {len(matches)}")
        )
    return matches[0]


def _shape_matches(config: Path, release: Release) -> bool:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    shape = release.llm
    return (
        data.get("hidden_size") == shape.hidden
        and data.get("num_hidden_layers") == shape.layers
        and data.get("num_key_value_heads") == shape.kv_heads
    )


def import_folder(
    folder: Path | str,
    store: ModelStore | None = None,
    copy: bool = False,
    trust: bool = False,
    source: HubSource | None = None,
) -> Imported:
    store = store or ModelStore()
    given = Path(folder).expanduser().resolve()
    release = detect(given)
    folder = snapshot_folder(given, release)
    expected, how = _expectations(release, folder, store, trust, source)
    commit = snapshot_commit(folder, release) if how == "hub cache" else None
    for name, want in expected.items():
        path = folder / name
        size = path.stat().st_size
        if not matches(path, want):
            raise CheckpointError(
                f"{path} is not {name} of {release.name}@{(release.revision or commit or '')[:8]} "
                f"({size} bytes, expected {want.size}; checked against the {how}); not imported"
            )
    unpinned = {n: e for n, e in expected.items() if release.pin(n) is None}
    if copy:
        target = store.root / release.name
        if target.resolve() != folder:
            staging = store.staging(release)
            shutil.rmtree(staging, ignore_errors=True)
            for name in release.used_files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, staging / name)
            shutil.rmtree(target, ignore_errors=True)
            staging.replace(target)
        store.unregister(release)
        folder = target
    else:
        store.register(release, folder)
    store.record(release, folder, unpinned, commit=commit)
    return Imported(release, folder, how, copy)


def _expectations(release, folder, store, trust, source) -> tuple[dict[str, Expected], str]:
    unpinned = [n for n in release.used_files if release.pin(n) is None]
    out = {n: Expected(release.pin(n).size, release.pin(n).sha256)
           for n in release.used_files if release.pin(n) is not None}  # fmt: skip
    if not unpinned:
        return out, "pins"
    cached = _hub_cache_blobs(folder, release, unpinned)
    if cached is not None and not release.revision:  # a snapshot of any commit: its own hashes
        return out | cached, "hub cache"
    locked = store.locked(release)
    if all(n in locked for n in unpinned):
        out |= {n: Expected(locked[n]["size"], locked[n]["sha256"]) for n in unpinned}
        return out, "lock"
    if cached is not None:
        return out | cached, "hub cache"
    try:
        remote = (source or HubSource()).remote_files(release)
    except CheckpointError as err:
        if not trust:
            raise CheckpointError(
                f"{release.name} has no published sha256 and nothing recorded for it, and "
                f"the hub cannot be asked ({err}); import the hub cache snapshot "
                f"(models--{release.repo_id.replace('/', '--')}), connect once, or pass "
                "--trust to record the files as they are"
            ) from err
        sizes = {n: (folder / n).stat().st_size for n in unpinned}
        return out | {n: Expected(sizes[n], cached_sha256(folder / n)) for n in unpinned}, "trust"
    missing = [n for n in unpinned if n not in remote]
    if missing:
        raise CheckpointError(f"the hub lists no {missing[0]} for {release.name}")
    return out | {n: remote[n] for n in unpinned}, "hub"


def snapshot_commit(folder: Path, release: Release) -> str | None:
    """The hub commit of a hub cache snapshot folder that may serve ``release``: its pinned
    commit, or any commit for a release whose commit is not pinned yet (the import records
    which); None for any other folder."""
    if folder.parent.name != "snapshots":
        return None
    if folder.name == release.revision:
        return folder.name
    if not release.revision and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None


def _hub_cache_blobs(folder: Path, release: Release, names: list[str]):
    """A snapshot of the hub cache at the pinned commit (any commit while none is pinned):
    each file links to its blob, named by the file's sha256 (LFS) or git blob id."""
    if snapshot_commit(folder, release) is None:
        return None
    out = {}
    for name in names:
        path = folder / name
        if not path.is_symlink():
            return None
        blob = Path(path.readlink()).name
        size = path.stat().st_size
        out[name] = Expected(size, blob, None) if len(blob) == 64 else Expected(size, None, blob)
    return out


__all__ = ["Imported", "detect", "import_folder", "snapshot_folder"]
