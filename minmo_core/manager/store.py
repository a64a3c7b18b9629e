"""Where the models live, and what is known about them.

    <models folder>/                    $MINMO_MODELS_DIR or the user's data folder
        <release name>/                 a downloaded release
        <release name>.downloading/     its staging folder while a download runs
        models.lock.json                the sha256 of every unpinned file, recorded when it
                                        was first downloaded and verified against the hub
        registry.json                   releases imported from folders elsewhere

The lock makes the first download's verdict binding: later downloads, imports and
``minmo models verify`` compare unpinned files (the Qwen LLMs) with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from minmo_core.common.paths import models_dir
from minmo_core.common.releases import Release, cached_sha256
from minmo_core.errors import CheckpointError

LOCK = "models.lock.json"
REGISTRY = "registry.json"


class ModelStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else models_dir()

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY

    # -- places -------------------------------------------------------------------------------
    def folder(self, release: Release) -> Path:
        """The release's folder: an imported one where registered, else under the root."""
        entry = self._read(self.registry_path).get(release.name)
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            return Path(entry["path"])
        return self.root / release.name

    def staging(self, release: Release) -> Path:
        return self.root / (release.name + ".downloading")

    def imported(self, release: Release) -> bool:
        return release.name in self._read(self.registry_path)

    # -- the lock -----------------------------------------------------------------------------
    def locked(self, release: Release) -> dict[str, dict]:
        """The lock's entries for ``release`` at its pinned revision."""
        entry = self._read(self.lock_path).get(release.name)
        if not isinstance(entry, dict) or entry.get("revision") != release.revision:
            return {}
        files = entry.get("files")
        return files if isinstance(files, dict) else {}

    def record(
        self, release: Release, folder: Path, verified: dict, commit: str | None = None
    ) -> None:
        """Lock the sha256 of the unpinned files just verified in ``folder``, and the hub
        commit they came from when known (a release whose manifest pins none)."""
        if not verified:
            return
        lock = self._read(self.lock_path)
        files = {}
        for name, want in verified.items():
            entry = {"size": want.size, "sha256": want.sha256 or cached_sha256(folder / name)}
            if want.git_sha1:
                entry["git_sha1"] = want.git_sha1
            files[name] = entry
        old = lock.get(release.name)
        same = isinstance(old, dict) and old.get("revision") == release.revision
        if same and (not commit or old.get("commit") in (None, commit)):
            files = {**old.get("files", {}), **files}  # else another commit: start afresh
        lock[release.name] = {"repo": release.repo_id, "revision": release.revision,
                              "files": files}  # fmt: skip
        if commit and not release.revision:
            lock[release.name]["commit"] = commit
        self._write(self.lock_path, lock)

    # -- the registry -------------------------------------------------------------------------
    def register(self, release: Release, folder: Path) -> None:
        registry = self._read(self.registry_path)
        registry[release.name] = {"path": str(Path(folder).resolve())}
        self._write(self.registry_path, registry)

    def unregister(self, release: Release) -> None:
        registry = self._read(self.registry_path)
        if registry.pop(release.name, None) is not None:
            self._write(self.registry_path, registry)

    # -- files --------------------------------------------------------------------------------
    def _read(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is unreadable ({err}); move it away to start over"
            ) from err
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} is not a JSON object; move it away to start over")
        return data

    def _write(self, path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)


__all__ = ["ModelStore"]


def release_status(release: Release, store: ModelStore) -> str:
    """ "installed", "unverified" (files there, nothing recorded to check them against),
    "incomplete" (some missing or of the wrong size), "downloading" (a staging folder to
    resume from) or "missing". Sizes only: cheap enough for a listing."""
    folder = store.folder(release)
    if not folder.is_dir():
        return "downloading" if store.staging(release).is_dir() else "missing"
    locked = store.locked(release)
    unknown = False
    for name in release.used_files:
        path = folder / name
        if not path.is_file():
            return "downloading" if store.staging(release).is_dir() else "incomplete"
        pin = release.pin(name)
        size = pin.size if pin else locked.get(name, {}).get("size")
        if size is None:
            unknown = True
        elif path.stat().st_size != size:
            return "incomplete"
    return "unverified" if unknown else "installed"


def verify_installed(release: Release, store: ModelStore) -> list[str]:
    """Problems with an installed release, each a line; files hashed against pins and the
    lock (the hash cache spares unchanged files a second read)."""
    folder = store.folder(release)
    if not folder.is_dir():
        return [f"{release.name}: not installed ({folder} does not exist)"]
    locked = store.locked(release)
    problems = []
    for name in release.used_files:
        path = folder / name
        pin = release.pin(name)
        want = (pin.size, pin.sha256) if pin else (
            (locked[name]["size"], locked[name]["sha256"]) if name in locked else None
        )  # fmt: skip
        if not path.is_file():
            problems.append(f"{release.name}: {name} is missing")
        elif want is None:
            problems.append(
                f"{release.name}: {name} has no recorded sha256 (it was not downloaded or "
                "imported by the app): `minmo models import` the folder to check and record it"
            )
        elif path.stat().st_size != want[0]:
            problems.append(f"{release.name}: {name} is {path.stat().st_size} bytes, not {want[0]}")
        elif cached_sha256(path) != want[1]:
            problems.append(f"{release.name}: {name} has another sha256 (modified or damaged)")
    return problems


def installed_llm(store: ModelStore | None = None) -> Release | None:
    """The largest chat LLM release whose files are all there (the default LLM)."""
    from minmo_core.common.releases import all_releases

    store = store or ModelStore()
    llms = [r for r in all_releases().values() if r.kind == "llm"]
    ready = [r for r in llms if release_status(r, store) in ("installed", "unverified")]
    return max(ready, key=lambda r: r.parameters) if ready else None
