"""Pinned downloads of the official releases through huggingface_hub.

Files land in ``<folder>.downloading/`` first; each is checked against its pin (size and
sha256) and only then moved into the model folder, so a failed or tampered download never
replaces a good file. The hub is probed once before anything starts, so an offline machine
gets one message at once instead of minutes of retries. ``HF_ENDPOINT`` (a mirror) is
honoured by huggingface_hub itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants, hf_hub_download

from minmo_core.common.releases import Release, sha256_of
from minmo_core.errors import CheckpointError, first_line, reason

PROBE_TIMEOUT_S = 5.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def check_reachable(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise CheckpointError at once when the hub cannot be reached (offline, no DNS,
    refused, or HF_HUB_OFFLINE set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError("HF_HUB_OFFLINE is set: unset it to download models")
    url = url or endpoint()
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise CheckpointError(f"the model hub address {url!r} is not a URL (check HF_ENDPOINT)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise CheckpointError(
            f"cannot reach the model hub at {url} ({reason(err)}); check the internet connection, "
            "or set HF_ENDPOINT to a mirror"
        ) from err


@contextmanager
def _quiet_hub_logs():
    """huggingface_hub logs every retry as a warning; our own message says what failed."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _has_partial_bytes(staging: Path, names: list[str]) -> bool:
    """Finished files, or huggingface_hub's ``*.incomplete`` pieces it resumes from."""
    if any((staging / name).is_file() for name in names):
        return True
    return any(p.stat().st_size > 0 for p in staging.rglob("*.incomplete"))


def download_release(
    release: Release,
    folder: Path,
    on_file: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Fetch every file of ``release`` the app reads into ``folder``, verified.

    on_file(name, index, total) is called before each file. On failure nothing in
    ``folder`` changes; the staging folder is kept only if it holds bytes to resume from.
    """
    folder = Path(folder)
    check_reachable()
    staging = folder.with_name(folder.name + ".downloading")
    names = release.used_files
    try:
        staging.mkdir(parents=True, exist_ok=True)
        with _quiet_hub_logs():
            for index, name in enumerate(names):
                if on_file is not None:
                    on_file(name, index, len(names))
                _fetch(release, name, staging)
        for name in names:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / name).replace(target)
    except BaseException:
        if staging.is_dir() and not _has_partial_bytes(staging, names):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return folder


def _fetch(release: Release, name: str, staging: Path) -> None:
    try:
        path = Path(
            hf_hub_download(release.repo_id, name, revision=release.revision, local_dir=staging)
        )
    except Exception as err:  # the hub client raises many kinds: network, HTTP, disk
        raise CheckpointError(
            f"could not download {name} of {release.name} from {release.repo_id}"
            f"@{(release.revision or 'main')[:8]}: {first_line(err, 160)}"
        ) from err
    pin = release.pin(name)
    if pin is not None and (path.stat().st_size != pin.size or sha256_of(path) != pin.sha256):
        path.unlink()
        raise CheckpointError(
            f"downloaded {name} of {release.name} does not match its pin "
            f"({pin.size} bytes, sha256 {pin.sha256[:12]}...); nothing was replaced"
        )
