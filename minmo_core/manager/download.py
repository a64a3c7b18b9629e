"""Verified, resumable downloads of a pack's releases.

    the hub's file list at the pinned commit (HfApi, files metadata)
      └ what each file must be: the manifest's pin, else the lock file, else the hub's own
        LFS sha256 (git blob id for small files), recorded in the lock once verified
    disk-space check (the bytes still to fetch + 10 %) before anything is written
    each file streamed into <release>.downloading/<file>.part, resumed with an HTTP Range
      from the bytes already there; hashed on the way; progress and cancel per chunk
    verified files only then replace the model folder's; the lock and registry are updated

A kill, a lost connection or a cancel leaves the ``.part`` files; the next run fetches only
the missing bytes. A file that does not match what it must be is deleted and the model
folder is left as it was. ``HF_ENDPOINT`` (a mirror) is read at call time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minmo_core.common.hub import _quiet_hub_logs, check_reachable, endpoint
from minmo_core.common.releases import Release, cached_sha256
from minmo_core.errors import CheckpointError, ConfigError, MinMoError, first_line, reason
from minmo_core.manager.store import ModelStore

CHUNK = 1 << 20
DISK_MARGIN = 1.10
TIMEOUT_S = 30.0


class DownloadCancelled(MinMoError):
    """The user cancelled; the bytes fetched so far are kept to resume from."""


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size, and its sha256 or (small files) git blob id."""

    size: int
    sha256: str | None
    git_sha1: str | None = None


@dataclass(frozen=True)
class Progress:
    release: str
    file: str
    done: int  # bytes of the whole download so far (resumed bytes included)
    total: int
    rate: float  # bytes per second, over the last seconds
    eta: float | None  # seconds


class HubSource:
    """The Hugging Face hub, or the mirror ``HF_ENDPOINT`` names."""

    name = "hub"

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or endpoint()).rstrip("/")
        self.token = token

    def remote_files(self, release: Release) -> dict[str, Expected]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        api = HfApi(endpoint=self.url, token=self.token)
        try:
            with _quiet_hub_logs():
                info = api.model_info(
                    release.repo_id, revision=release.revision, files_metadata=True
                )
        except RevisionNotFoundError as err:
            raise CheckpointError(
                f"{release.repo_id} has no revision {release.revision} at {self.url}: the pin "
                "is wrong or the mirror is stale"
            ) from err
        except RepositoryNotFoundError as err:
            raise CheckpointError(f"{self.url} has no repository {release.repo_id}") from err
        except Exception as err:  # network and HTTP errors of many kinds
            raise CheckpointError(
                f"could not read {release.repo_id}'s file list from {self.url}: "
                f"{first_line(err, 160)}"
            ) from err
        if release.revision and info.sha and info.sha != release.revision:
            raise CheckpointError(
                f"{self.url} answered {release.repo_id}@{release.revision[:12]} with commit "
                f"{info.sha[:12]}: refusing a revision other than the pinned one"
            )
        files = {}
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            files[sibling.rfilename] = Expected(
                int(sibling.size if sibling.size is not None else (lfs.size if lfs else 0)),
                lfs.sha256 if lfs else None,
                None if lfs else sibling.blob_id,
            )
        return files

    def open(self, release: Release, name: str, start: int):
        """A streaming response for ``name`` from byte ``start`` on."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        url = hf_hub_url(release.repo_id, name, revision=release.revision, endpoint=self.url)
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself
        if start:
            headers["Range"] = f"bytes={start}-"
        response = get_session().get(url, headers=headers, stream=True, timeout=TIMEOUT_S)
        if response.status_code not in (200, 206):
            response.close()
            raise CheckpointError(
                f"{self.url} refused {name} of {release.repo_id} (HTTP {response.status_code})"
            )
        return response


MODELSCOPE = "https://www.modelscope.cn"
MODELSCOPE_ENV = "MODELSCOPE_ENDPOINT"


class ModelScopeSource:
    """ModelScope (modelscope.cn, or ``$MODELSCOPE_ENDPOINT``), through its HTTP API: the
    repository's file list with sizes and sha256, and files with HTTP Range. Its client
    library is not used: its file listing (1.40) returns no sha256, and its downloads offer
    no byte progress, cancel or verification before anything is replaced.

    ModelScope serves branches, not the hub's commits: the pinned releases' files are held to
    their published sha256 as from the hub, the Qwen files to the lock when one exists and
    otherwise to ModelScope's own sha256, which is then locked."""

    name = "modelscope"

    def __init__(self, url: str | None = None, revision: str = "master") -> None:
        self.url = (url or os.environ.get(MODELSCOPE_ENV) or MODELSCOPE).rstrip("/")
        self.revision = revision

    def _repo(self, release: Release) -> str:
        if not release.modelscope_repo:
            raise ConfigError(f"{release.name} is not on ModelScope; download it from the hub")
        return release.modelscope_repo

    def remote_files(self, release: Release) -> dict[str, Expected]:
        from huggingface_hub.utils import get_session

        repo = self._repo(release)
        url = f"{self.url}/api/v1/models/{repo}/repo/files"
        params = {"Revision": self.revision, "Recursive": "True"}
        try:
            response = get_session().get(url, params=params, timeout=TIMEOUT_S)
            response.raise_for_status()
            files = response.json().get("Data", {}).get("Files", [])
        except Exception as err:  # network, HTTP and JSON errors
            raise CheckpointError(
                f"could not read {repo}'s file list from {self.url}: {first_line(err, 160)}"
            ) from err
        return {
            str(f["Path"]): Expected(int(f["Size"]), f.get("Sha256") or None)
            for f in files
            if f.get("Type", "blob") != "tree"
        }

    def open(self, release: Release, name: str, start: int):
        from huggingface_hub.utils import get_session

        url = f"{self.url}/api/v1/models/{self._repo(release)}/repo"
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        response = get_session().get(
            url,
            params={"Revision": self.revision, "FilePath": name},
            headers=headers,
            stream=True,
            timeout=TIMEOUT_S,
        )
        if response.status_code not in (200, 206):
            response.close()
            raise CheckpointError(
                f"{self.url} refused {name} of {self._repo(release)} (HTTP {response.status_code})"
            )
        return response


SOURCES = {"hub": HubSource, "modelscope": ModelScopeSource}


class _Meter:
    def __init__(self, total: int, done: int, on_progress) -> None:
        self.total, self.done, self.on_progress = total, done, on_progress
        self.window: list[tuple[float, int]] = [(time.monotonic(), done)]

    def add(self, release: str, name: str, n: int) -> None:
        self.done += n
        now = time.monotonic()
        self.window.append((now, self.done))
        while len(self.window) > 2 and now - self.window[0][0] > 5.0:
            self.window.pop(0)
        (t0, d0) = self.window[0]
        rate = (self.done - d0) / (now - t0) if now > t0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        if self.on_progress is not None:
            self.on_progress(Progress(release, name, self.done, self.total, rate, eta))


def expected_files(release: Release, remote: dict[str, Expected], store: ModelStore):
    """What each used file must be: pin, else lock, else the hub's metadata (checked against
    the lock when both exist). A pin the hub's listing contradicts (another size, or another
    LFS sha256) is refused before any byte is fetched: the pin or the mirror is wrong."""
    locked = store.locked(release)
    out: dict[str, Expected] = {}
    for name in release.used_files:
        pin = release.pin(name)
        if pin is not None:
            listed = remote.get(name)
            if listed is not None and (
                listed.size != pin.size or listed.sha256 not in (None, pin.sha256)
            ):
                raise CheckpointError(
                    f"{release.repo_id}@{(release.revision or '')[:12]} lists {name} as "
                    f"{listed.size} bytes, sha256 {(listed.sha256 or '?')[:12]}…, but the app "
                    f"pins {pin.size} bytes, sha256 {pin.sha256[:12]}…; refusing it (a stale "
                    "mirror or a wrong pin: please report it)"
                )
            out[name] = Expected(pin.size, pin.sha256)
            continue
        if name not in remote:
            raise CheckpointError(
                f"{release.repo_id}@{(release.revision or '')[:12]} has no {name} at the hub"
            )
        hub = remote[name]
        lock = locked.get(name)
        if lock is not None and (lock["size"] != hub.size or _differs(lock, hub)):
            raise CheckpointError(
                f"the hub's {name} of {release.name} differs from the one recorded in "
                f"{store.lock_path} at the first download; refusing it"
            )
        out[name] = hub
    return out


def _differs(lock: dict, hub: Expected) -> bool:
    if hub.sha256 is not None:
        return lock.get("sha256") != hub.sha256
    return lock.get("git_sha1") not in (None, hub.git_sha1)


def install_state(release: Release, folder: Path, expected: dict[str, Expected]) -> list[str]:
    """The used files ``folder`` lacks or holds in another version (size, then hash)."""

    def lacking(path: Path, want: Expected) -> bool:
        if not path.is_file() or path.stat().st_size != want.size:
            return True
        return bool(want.sha256 or want.git_sha1) and not matches(path, want)

    return [name for name, want in expected.items() if lacking(folder / name, want)]


def _git_hasher(size: int):
    """sha1 over git's blob header: a file's git blob id once its bytes are added."""
    return hashlib.sha1(f"blob {size}\0".encode())  # git's id, not a security hash


def git_blob_sha1(path: Path) -> str:
    digest = _git_hasher(path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download_releases(
    releases: list[Release],
    store: ModelStore,
    source: HubSource | ModelScopeSource | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[Path]:
    """Fetch what ``releases`` lack into ``store``, verified; returns their folders."""
    source = source or HubSource()
    unpinned = [r.name for r in releases if not r.revision]
    if unpinned:  # a release whose commit is unknown could change under the app's feet
        raise CheckpointError(
            f"{', '.join(unpinned)} is not pinned to a hub commit yet, so it is not "
            "downloaded; put its files in a folder and import it (`minmo models import "
            "FOLDER`, or the first-run screen)"
        )
    check_reachable(source.url)
    plans = []  # (release, folder, staging, expected, names to fetch)
    for release in releases:
        remote = source.remote_files(release)
        expected = expected_files(release, remote, store)
        folder = store.folder(release)
        todo = install_state(release, folder, expected)
        plans.append((release, folder, store.staging(release), expected, todo))
    total = sum(e[n].size for _, _, _, e, todo in plans for n in todo)
    have = sum(_partial_size(s, n, e[n]) for _, _, s, e, todo in plans for n in todo)
    _check_disk(store.root, total - have)
    meter = _Meter(total, have, on_progress)
    for release, folder, staging, expected, todo in plans:
        for name in todo:
            _fetch(source, release, name, expected[name], staging, meter, cancel)
        for name in todo:  # every file verified: only now does anything replace the old
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / name).replace(target)
        shutil.rmtree(staging, ignore_errors=True)
        store.record(release, folder, {n: expected[n] for n in expected if not release.pin(n)})
    return [folder for _, folder, _, _, _ in plans]


def _partial_size(staging: Path, name: str, want: Expected) -> int:
    done, part = staging / name, staging / (name + ".part")
    if done.is_file() and done.stat().st_size == want.size:
        return want.size
    return min(part.stat().st_size, want.size) if part.is_file() else 0


def _check_disk(root: Path, needed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if needed * DISK_MARGIN > free:
        raise CheckpointError(
            f"not enough disk space in {root}: the download needs {needed / 1e9:.2f} GB "
            f"(+10 % margin), {free / 1e9:.2f} GB is free; nothing was downloaded"
        )


def _fetch(source, release, name, want: Expected, staging: Path, meter: _Meter, cancel) -> None:
    final, part = staging / name, staging / (name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file() and matches(final, want):
        return  # verified in an earlier run that then stopped
    start = part.stat().st_size if part.is_file() else 0
    if start > want.size:
        part.unlink()
        start = 0
    digest, git = hashlib.sha256(), _git_hasher(want.size)
    if start:
        with open(part, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                git.update(block)
    try:
        if start < want.size:
            response = source.open(release, name, start)
            if start and response.status_code == 200:  # no Range support: from the start
                start, digest = 0, hashlib.sha256()
                git = _git_hasher(want.size)
                meter.done -= part.stat().st_size
            with response, open(part, "r+b" if start else "wb") as out:
                out.seek(start)
                out.truncate()
                for block in _blocks(response):
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelled(
                            f"download cancelled; {meter.done / 1e6:.0f} MB kept to resume from"
                        )
                    out.write(block)
                    digest.update(block)
                    git.update(block)
                    meter.add(release.name, name, len(block))
    except (MinMoError, KeyboardInterrupt):
        raise
    except OSError as err:
        if getattr(err, "errno", None) == 28:  # ENOSPC
            raise CheckpointError(f"the disk filled up while writing {part}") from err
        raise _interrupted(release, name, err) from err
    except Exception as err:  # requests' connection and chunk errors
        raise _interrupted(release, name, err) from err
    size = part.stat().st_size
    if size < want.size:  # the connection ended early without an error: resume next time
        raise _interrupted(release, name, OSError(f"{size} of {want.size} bytes arrived"))
    if size != want.size or not _digest_matches(want, digest, git):
        part.unlink()
        raise CheckpointError(
            f"downloaded {name} of {release.name} is not the expected file "
            f"({size} bytes, expected {want.size}; sha256 mismatch); it was deleted and "
            "nothing was replaced"
        )
    part.replace(final)


def _blocks(response):
    """The body as it arrives: whatever is there, up to CHUNK bytes at a time, so the bytes
    received before a lost connection are written, not dropped with the failing read."""
    raw = response.raw
    while True:
        block = raw.read1(CHUNK) if hasattr(raw, "read1") else raw.read(CHUNK)
        if not block:
            return
        yield block


def _interrupted(release: Release, name: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"the download of {name} ({release.name}) was interrupted ({reason(err)}); run it "
        "again to resume where it stopped"
    )


def _digest_matches(want: Expected, digest, git) -> bool:
    if want.sha256 is not None:
        return digest.hexdigest() == want.sha256
    if want.git_sha1 is not None:
        return git.hexdigest() == want.git_sha1
    raise ConfigError(f"nothing to verify a {want.size}-byte file against")


def matches(path: Path, want: Expected) -> bool:
    """``path`` is the expected file: its size, then its sha256 or git blob id."""
    if path.stat().st_size != want.size:
        return False
    if want.sha256 is not None:
        return cached_sha256(path) == want.sha256
    return git_blob_sha1(path) == want.git_sha1


__all__ = [
    "SOURCES",
    "DownloadCancelled",
    "Expected",
    "HubSource",
    "ModelScopeSource",
    "Progress",
    "download_releases",
]
