"""The model manager's downloads against a stand-in hub on 127.0.0.1 (HF_ENDPOINT points at
it): verified files, resume after a lost connection or a cancel fetching only the missing
bytes (counted at the server), a tampered file refused with the working model untouched, a
full disk stopped before anything is written, a wrong revision refused, and the lock file
binding after the first download."""

from __future__ import annotations

import shutil
import threading
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest

from app.bench.chat_model import write_tiny_qwen
from minmo_core.common.releases import Pin
from minmo_core.errors import CheckpointError
from minmo_core.llm.chat import ChatLLM
from minmo_core.manager.download import DownloadCancelled, HubSource, download_releases
from minmo_core.manager.store import ModelStore
from tests.hub_server import REPO, FakeHub, serving
from tests.hub_server import tiny_release as release

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny Qwen2.5-Instruct folder's files, served as the repository."""
    folder = write_tiny_qwen(tmp_path_factory.mktemp("qwen"))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch):
    with serving(monkeypatch, {REPO: dict(files)}) as server:
        yield server


def test_a_pack_downloads_verified_and_its_hashes_are_locked(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    seen = []
    (folder,) = download_releases([release(files)], store, on_progress=seen.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert all((folder / n).read_bytes() == c for n, c in files.items())
    assert hub.served == {n: len(c) for n, c in files.items()}  # every byte once
    total = sum(len(c) for c in files.values())
    assert seen[-1].done == seen[-1].total == total
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert not store.staging(release(files)).exists()
    locked = store.locked(release(files))
    assert set(locked) == set(files) and all(len(e["sha256"]) == 64 for e in locked.values())
    ChatLLM(folder, device="cpu")  # the model loads
    # a second run finds nothing to fetch
    hub.served.clear()
    download_releases([release(files)], store)
    assert sum(hub.served.values()) == 0


def test_a_lost_connection_resumes_fetching_only_the_missing_bytes(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    size = len(files[WEIGHTS])
    hub.drop_after[WEIGHTS] = size // 2
    with pytest.raises(CheckpointError, match=r"interrupted .*run it again to resume"):
        download_releases([release(files)], store)
    staging = store.staging(release(files))
    assert (staging / f"{WEIGHTS}.part").stat().st_size == size // 2
    assert not store.folder(release(files)).exists()  # nothing replaced, nothing half-there
    download_releases([release(files)], store)
    assert hub.served[WEIGHTS] == size  # half, then the other half: no byte twice
    assert (store.folder(release(files)) / WEIGHTS).read_bytes() == files[WEIGHTS]


def test_a_cancelled_download_keeps_its_bytes_and_resumes(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    cancel = threading.Event()
    total = sum(len(c) for c in files.values())

    def progress(p) -> None:
        if p.done > total // 3:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="kept to resume from"):
        download_releases([release(files)], store, on_progress=progress, cancel=cancel)
    fetched = sum(hub.served.values())
    assert 0 < fetched < total
    hub.served.clear()
    download_releases([release(files)], store)
    # at most the chunk in flight at the cancel is fetched twice
    assert total - fetched <= sum(hub.served.values()) <= total - fetched + (1 << 20)


def test_a_tampered_file_is_refused_and_the_working_model_still_loads(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    (folder,) = download_releases([release(files)], store)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # a new revision changes the generation config; the bytes that arrive are not it
    new = dict(files, **{"generation_config.json": files["generation_config.json"] + b" "})
    other = "fedcba9876543210fedcba9876543210fedcba98"
    with FakeHub({REPO: new}, other) as update:
        update.tamper["generation_config.json"] = files["generation_config.json"] + b"!"
        source = HubSource(update.url)
        with pytest.raises(
            CheckpointError, match=r"generation_config\.json .* nothing was replaced"
        ):
            download_releases([release(new, other)], store, source)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    ChatLLM(folder, device="cpu")


def test_a_full_disk_stops_before_anything_is_written(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path / "models")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CheckpointError, match=r"not enough disk space .* nothing was downloaded"):
        download_releases([release(files)], store)
    assert sum(hub.served.values()) == 0
    assert not store.staging(release(files)).exists()
    assert not store.folder(release(files)).exists()


def test_a_wrong_revision_is_refused(hub: FakeHub, files: dict[str, bytes], tmp_path: Path):
    store = ModelStore(tmp_path / "models")
    wrong = "ffffffffffffffffffffffffffffffffffffffff"
    with pytest.raises(CheckpointError, match=f"has no revision {wrong}"):
        download_releases([release(files, wrong)], store)
    assert sum(hub.served.values()) == 0


def test_after_the_first_download_the_lock_is_binding(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    (folder,) = download_releases([release(files)], store)
    (folder / "config.json").unlink()
    # the same revision now described with other bytes (a rewritten mirror)
    hub.repos[REPO]["config.json"] = files["config.json"] + b"\n"
    with pytest.raises(CheckpointError, match=r"config\.json .* differs from the one recorded"):
        download_releases([release(files)], store)


def test_modelscope_is_a_second_source_verified_the_same_way(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    from minmo_core.manager.download import ModelScopeSource

    on_modelscope = release(files, modelscope=REPO)
    store = ModelStore(tmp_path / "models")
    source = ModelScopeSource(hub.url)
    hub.drop_after[WEIGHTS] = 1000  # resumes there too
    with pytest.raises(CheckpointError, match="interrupted"):
        download_releases([on_modelscope], store, source)
    (folder,) = download_releases([on_modelscope], store, source)
    assert hub.served[WEIGHTS] == len(files[WEIGHTS])
    assert all((folder / n).read_bytes() == c for n, c in files.items())
    assert any(p.startswith("/api/v1/models/") for p in hub.requests)
    # the Qwen-like files are locked from ModelScope's sha256: later downloads are held to it
    assert set(store.locked(on_modelscope)) == set(files)
    # a release that is not on ModelScope is named
    with pytest.raises(Exception, match="is not on ModelScope"):
        download_releases([release(files)], ModelStore(tmp_path / "other"), source)


def test_a_pin_the_hubs_listing_contradicts_is_refused_before_any_byte(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    """The app's pins are checked against the hub's own listing at the pinned commit: a
    disagreeing LFS sha256 or size stops the download before anything is fetched."""
    import hashlib

    pinned = release(files, pinned=True)
    (folder,) = download_releases([pinned], ModelStore(tmp_path / "ok"))  # pins that agree
    assert (folder / WEIGHTS).read_bytes() == files[WEIGHTS]
    hub.served.clear()
    good = hashlib.sha256(files[WEIGHTS]).hexdigest()
    for size, sha256, says in (
        (len(files[WEIGHTS]), hashlib.sha256(b"other").hexdigest(), "another LFS sha256"),
        (len(files[WEIGHTS]) + 1, good, "another size"),
    ):
        wrong = release(files, pinned=True)
        wrong.files[WEIGHTS] = replace(wrong.files[WEIGHTS], pin=Pin(size, sha256))
        with pytest.raises(
            CheckpointError, match=rf"lists {WEIGHTS} as {len(files[WEIGHTS])} bytes.*refusing"
        ):
            download_releases([wrong], ModelStore(tmp_path / says))
    assert sum(hub.served.values()) == 0


def test_the_command_line_fetches_a_file_of_the_pack_on_request(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path, monkeypatch, capsys
) -> None:
    """`minmo models download PACK --also FILE` fetches a file the release lists but does
    not fetch by default (as CosyVoice 3's llm.rl.pt); a file no release has is refused,
    naming the ones there are."""
    from app.cli import main
    from minmo_core.common.releases import parse_release
    from tests.hub_server import COMMIT, add_pack

    extra = b"the RL-tuned twin" * 100
    hub.repos[REPO]["extra.bin"] = extra
    entries = {**{n: {} for n in files}, "extra.bin": {"used": False}}
    data = {"name": "Tiny-Instruct", "repo": REPO, "revision": COMMIT, "kind": "llm"}
    add_pack(monkeypatch, "tiny", [parse_release({**data, "files": entries}, "test")])
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    assert main(["models", "download", "tiny"]) == 0
    folder = Path(capsys.readouterr().out.split()[-1])
    assert (folder / WEIGHTS).is_file() and not (folder / "extra.bin").exists()
    hub.served.clear()
    assert main(["models", "download", "tiny", "--also", "extra.bin"]) == 0
    assert (folder / "extra.bin").read_bytes() == extra
    assert hub.served == {"extra.bin": len(extra)}  # the rest was there already
    assert main(["models", "download", "tiny", "--also", "llm.rl.pt"]) == 2
    assert "no release of this pack has llm.rl.pt; the files fetched only on request are: " \
        "extra.bin" in capsys.readouterr().err  # fmt: skip
