"""Pinned downloads: verified before they replace anything; failures are named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from minmo_core.common import hub
from minmo_core.common.checkpoints import SENSEVOICE_SMALL, Pin, Release
from minmo_core.errors import CheckpointError

CONTENT = {"model.pt": b"weights" * 100, "config.yaml": b"encoder_conf: {}\n"}
RELEASE = Release(
    name="Demo",
    repo_id="demo/demo",
    revision="0123456789abcdef",
    files={
        name: Pin(len(data), hashlib.sha256(data).hexdigest()) for name, data in CONTENT.items()
    },
)


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


@pytest.mark.download
@pytest.mark.skipif(
    not os.environ.get("MINMO_ONLINE_TESTS"),
    reason="downloads SenseVoiceSmall (~1 GB) from the model hub; set MINMO_ONLINE_TESTS=1",
)
def test_the_real_sensevoice_release_matches_its_pins(tmp_path: Path) -> None:
    folder = hub.download_release(SENSEVOICE_SMALL, tmp_path / "SenseVoiceSmall")
    assert sorted(p.name for p in folder.iterdir()) == sorted(SENSEVOICE_SMALL.files)
