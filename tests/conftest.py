"""Shared test fixtures: paths to the golden fixtures and tiny model folders."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_sensevoice import write_tiny_sensevoice

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MINMO_FIXTURES", REPO.parent / "shared" / "fixtures"))

# two threads at most; one per parallel worker (`make test` runs one per core)
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if WORKER else min(2, torch.get_num_threads()))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the window's tests need no display


# the longest test files, longest first (`pytest --durations`): run first, they let the
# parallel workers of `make test` finish together instead of one running them at the end
LONGEST_FIRST = ("test_bundle.py", "test_train_demo.py", "test_speexdsp_build.py",
                 "test_token2wav.py", "test_engine_soak.py", "test_flow_stream.py",
                 "test_aligned.py", "test_audio_duplex.py", "test_benchmarks.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as is


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
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MINMO_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("MINMO_DATA_DIR", str(base / "data"))  # the window's history
    monkeypatch.setenv("MINMO_CONFIG_DIR", str(base / "config"))  # the window's settings


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
def tiny_release_v3_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """A Fun-CosyVoice3-0.5B-2512 folder in the official layout (the fixtures' weights)."""
    from tests.tiny_cosyvoice import write_tiny_release_v3

    return write_tiny_release_v3(tmp_path_factory.mktemp("release_v3"), fixtures_dir)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted to a safetensors folder (see tests/real_models.py)."""
    from tests.real_models import FETCH, smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        pytest.skip(f"needs SmolLM2-135M-Instruct: run `{FETCH}` (make test does)")
    return folder


# -- the conversation engine's tiny model stack (one per test module) -----------------------


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.bench.chat_model import write_tiny_qwen

    return write_tiny_qwen(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def voice(tiny_release_dir: Path):
    from minmo_core.voice.tts import SpeechSynthesizer

    synth = SpeechSynthesizer.from_folder(tiny_release_dir, "cpu", True, greedy=True, seed=0)
    # the tiny LM's random weights never say end-of-speech: it speaks to the length limit,
    # 20 tokens per text token in the release; 5 keeps every reply to a few chunks
    lm = synth.tokens.lm
    lm.cfg = replace(lm.cfg, max_token_text_ratio=5.0)
    return synth


@pytest.fixture(scope="module")
def sensevoice(tiny_sensevoice_dir: Path):
    from minmo_core.understanding.sensevoice import SenseVoice

    return SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)


@pytest.fixture(scope="module")
def clip(fixtures_dir: Path) -> np.ndarray:
    from minmo_core.common.audio import read_audio

    return read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)[: 16000 * 3]


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, sensevoice, voice):
    """Tiny MinMo adapters (random weights) sized for the tiny LLM, SenseVoice and voice."""
    from minmo_core.llm.chat import ChatLLM
    from tests.tiny_adapters import write_tiny_adapters

    llm = ChatLLM(qwen_dir, device="cpu")
    return write_tiny_adapters(tmp_path_factory.mktemp("adapters"), llm, sensevoice, voice)
