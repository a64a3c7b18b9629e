"""Shared test fixtures: paths to the golden fixtures and tiny model folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.tiny_sensevoice import write_tiny_sensevoice

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MINMO_FIXTURES", REPO.parent / "shared" / "fixtures"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"golden fixtures not found at {FIXTURES} (set MINMO_FIXTURES)"
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_sensevoice_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    return write_tiny_sensevoice(tmp_path_factory.mktemp("sensevoice"), fixtures_dir / "sensevoice")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the checksum cache and settings of tests out of the user's folders."""
    monkeypatch.setenv("MINMO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_cosyvoice_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    from tests.tiny_cosyvoice import write_tiny_cosyvoice

    return write_tiny_cosyvoice(
        tmp_path_factory.mktemp("cosyvoice"), fixtures_dir / "cosyvoice2_llm"
    )


@pytest.fixture(scope="session")
def tiny_release_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    from tests.tiny_cosyvoice import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("release"), fixtures_dir)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted to a safetensors folder (see tests/real_models.py)."""
    from tests.real_models import FETCH, smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        pytest.skip(f"needs SmolLM2-135M-Instruct: run `{FETCH}` (make test does)")
    return folder
