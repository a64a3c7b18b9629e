"""Build a tiny SenseVoiceSmall folder in the official layout for tests.

The weights are the golden fixture's (official key names, reduced size), saved as a
pickled state dict ``model.pt`` exactly as the release does; the vocabulary is a 256-piece
SentencePiece model carrying SenseVoice's rich tags, trained here in about a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from app.bench.stack import train_vocabulary
from minmo_core.understanding.sensevoice import BPE_MODEL


def write_tiny_sensevoice(folder: Path, fixture_dir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((fixture_dir / "config.json").read_text())
    kwargs = cfg["model_kwargs"]
    config = {
        "model": "SenseVoiceSmall",
        "input_size": kwargs["input_size"],
        "vocab_size": kwargs["vocab_size"],
        "encoder": kwargs["encoder"],
        "encoder_conf": kwargs["encoder_conf"],
        "frontend": "WavFrontend",
        "frontend_conf": {k: v for k, v in cfg["frontend_conf"].items() if k != "cmvn_file"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(fixture_dir / "am.mvn", folder / "am.mvn")
    torch.save(load_file(str(fixture_dir / "weights.safetensors")), folder / "model.pt")
    (folder / BPE_MODEL).write_bytes(train_vocabulary(kwargs["vocab_size"]))
    return folder
