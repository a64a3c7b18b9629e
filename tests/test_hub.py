"""Pinned downloads: verified before they replace anything; failures are named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from minmo_core.common import hub
from minmo_core.common.releases import SENSEVOICE_SMALL, Pin, Release, ReleaseFile
from minmo_core.errors import CheckpointError

CONTENT = {"model.pt": b"weights" * 100, "config.yaml": b"encoder_conf: {}\n"}
RELEASE = Release(
    name="Demo",
    repo_id="demo/demo",
    revision="0123456789abcdef",
    files={
        name: ReleaseFile(Pin(len(data), hashlib.sha256(data).hexdigest()))
        for name, data in CONTENT.items()
    },
)


@pytest.fixture(autouse=True)
def _reachable_hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake hub is always reachable (the offline tests probe for real)."""
    if "offline" not in request.node.name and "download" not in request.keywords:
        monkeypatch.setattr(hub, "check_reachable", lambda *a, **k: None)


def fake_hub(served: dict[str, bytes]):
    def download(repo_id: str, filename: str, *, revision: str, local_dir: Path) -> str:
        assert (repo_id, revision) == ("demo/demo", "0123456789abcdef")
        if filename not in served:
            raise OSError("404 Client Error: Entry Not Found")
        path = Path(local_dir) / filename
        path.write_bytes(served[filename])
        return str(path)

    return download


def test_verified_files_land_in_the_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "hf_hub_download", fake_hub(CONTENT))
    seen = []
    folder = hub.download_release(RELEASE, tmp_path / "Demo", lambda n, i, t: seen.append(n))
    assert seen == list(CONTENT)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CONTENT
    assert not (tmp_path / "Demo.downloading").exists()


def test_a_tampered_download_replaces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "Demo"
    good.mkdir()
    (good / "model.pt").write_bytes(CONTENT["model.pt"])
    monkeypatch.setattr(hub, "hf_hub_download", fake_hub({**CONTENT, "config.yaml": b"evil"}))
    with pytest.raises(CheckpointError, match=r"downloaded config\.yaml of Demo does not match"):
        hub.download_release(RELEASE, good)
    assert [p.name for p in good.iterdir()] == ["model.pt"]
    assert (good / "model.pt").read_bytes() == CONTENT["model.pt"]


def test_a_failed_download_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hf_hub_download", fake_hub({"model.pt": CONTENT["model.pt"]}))
    with pytest.raises(
        CheckpointError, match=r"could not download config\.yaml of Demo from demo/demo@01234567"
    ):
        hub.download_release(RELEASE, tmp_path / "Demo")


def test_files_in_subfolders_land_in_their_subfolders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = {"llm.pt": b"w" * 10, "CosyVoice-BlankEN/config.json": b"{}"}
    release = Release(
        "Nested",
        "demo/demo",
        "0123456789abcdef",
        {n: ReleaseFile(Pin(len(d), hashlib.sha256(d).hexdigest())) for n, d in content.items()},
    )

    def download(repo_id: str, filename: str, *, revision: str, local_dir: Path) -> str:
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content[filename])
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", download)
    folder = hub.download_release(release, tmp_path / "Nested")
    assert (folder / "CosyVoice-BlankEN" / "config.json").read_bytes() == b"{}"
    assert not (tmp_path / "Nested.downloading").exists()


def test_offline_fails_at_once_with_one_message_and_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import socket
    import time

    from app.cli import main

    with socket.socket() as s:  # a local port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    code = main(["download", "sensevoice", "--dir", str(tmp_path / "SenseVoiceSmall")])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and took < 10
    assert err.count("\n") == 1
    assert f"cannot reach the model hub at http://127.0.0.1:{port}" in err
    assert "HF_ENDPOINT" in err and "Retrying" not in err
    assert list(tmp_path.iterdir()) == []


def test_offline_without_dns_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(socket, "create_connection", no_dns)
    with pytest.raises(CheckpointError, match=r"cannot reach the model hub .*not known"):
        hub.download_release(RELEASE, tmp_path / "Demo")
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        hub.download_release(RELEASE, tmp_path / "Demo")


def test_a_failure_keeps_finished_files_to_resume_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "hf_hub_download", fake_hub({"model.pt": CONTENT["model.pt"]}))
    with pytest.raises(CheckpointError, match="could not download config"):
        hub.download_release(RELEASE, tmp_path / "Demo")
    assert (tmp_path / "Demo.downloading" / "model.pt").read_bytes() == CONTENT["model.pt"]
    assert not (tmp_path / "Demo").exists()


@pytest.mark.download
@pytest.mark.skipif(
    not os.environ.get("MINMO_ONLINE_TESTS"),
    reason="downloads SenseVoiceSmall (~1 GB) from the model hub; set MINMO_ONLINE_TESTS=1",
)
def test_the_real_sensevoice_release_matches_its_pins(tmp_path: Path) -> None:
    folder = hub.download_release(SENSEVOICE_SMALL, tmp_path / "SenseVoiceSmall")
    assert sorted(p.name for p in folder.iterdir()) == sorted(SENSEVOICE_SMALL.used_files)
