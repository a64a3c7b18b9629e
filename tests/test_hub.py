"""The model hub's reachability: an offline machine, a missing DNS, the offline setting and a
closed mirror are each named in one line at once (the downloads themselves:
test_model_downloads.py), and the opt-in download of the real SenseVoiceSmall."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from app.cli import main
from minmo_core.common.releases import SENSEVOICE_SMALL
from minmo_core.errors import CheckpointError
from minmo_core.manager.download import download_releases
from minmo_core.manager.store import ModelStore


def closed_port() -> int:
    with socket.socket() as s:  # a local port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_fails_at_once_in_one_line_naming_what_to_bring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    start = time.monotonic()
    code = main(["models", "download", "minmo-0.5b"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and took < 10
    assert err.count("\n") == 1
    assert f"cannot reach the model hub at http://127.0.0.1:{port}" in err
    assert "HF_ENDPOINT" in err and "Retrying" not in err
    # the pack, what it still lacks, and the way around
    assert "minmo-0.5b still needs SenseVoiceSmall (FunAudioLLM/SenseVoiceSmall@3847d57b)" in err
    assert "Qwen2.5-0.5B-Instruct" in err and "`minmo models import DIR`" in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_offline_without_dns_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(socket, "create_connection", no_dns)
    with pytest.raises(CheckpointError, match=r"cannot reach the model hub .*not known"):
        download_releases([SENSEVOICE_SMALL], ModelStore(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        download_releases([SENSEVOICE_SMALL], ModelStore(tmp_path))


@pytest.mark.download
@pytest.mark.skipif(
    not os.environ.get("MINMO_ONLINE_TESTS"),
    reason="downloads SenseVoiceSmall (~1 GB) from the model hub; set MINMO_ONLINE_TESTS=1",
)
def test_the_real_sensevoice_release_matches_its_pins(tmp_path: Path) -> None:
    (folder,) = download_releases([SENSEVOICE_SMALL], ModelStore(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == sorted(SENSEVOICE_SMALL.used_files)
