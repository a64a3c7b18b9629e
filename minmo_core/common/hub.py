"""Pinned downloads of the official releases through huggingface_hub.

Files land in ``<folder>.downloading/`` first; each is checked against its pin (size and
sha256) and only then moved into the model folder, so a failed or tampered download never
replaces a good file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import hf_hub_download

from minmo_core.common.checkpoints import Release, sha256_of
from minmo_core.errors import CheckpointError


def download_release(
    release: Release,
    folder: Path,
    on_file: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Fetch every file of ``release`` into ``folder``, verified; returns ``folder``.

    on_file(name, index, total) is called before each file.
    """
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".downloading")
    staging.mkdir(parents=True, exist_ok=True)
    names = list(release.files)
    for index, name in enumerate(names):
        if on_file is not None:
            on_file(name, index, len(names))
        try:
            path = Path(
                hf_hub_download(release.repo_id, name, revision=release.revision, local_dir=staging)
            )
        except Exception as err:  # the hub client raises many kinds: network, HTTP, disk
            raise CheckpointError(
                f"could not download {name} of {release.name} from {release.repo_id}"
                f"@{(release.revision or 'main')[:8]}: {str(err).splitlines()[0][:160]}"
            ) from err
        pin = release.files[name]
        if pin is not None and (path.stat().st_size != pin.size or sha256_of(path) != pin.sha256):
            path.unlink()
            raise CheckpointError(
                f"downloaded {name} of {release.name} does not match its pin "
                f"({pin.size} bytes, sha256 {pin.sha256[:12]}...); nothing was replaced"
            )
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (staging / name).replace(folder / name)
    shutil.rmtree(staging, ignore_errors=True)
    return folder
