"""Build a tiny SenseVoiceSmall folder in the official layout for tests.

The weights are the golden fixture's (official key names, reduced size), saved as a
pickled state dict ``model.pt`` exactly as the release does; the vocabulary is a 256-piece
SentencePiece model carrying SenseVoice's rich tags, trained here in about a second.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import sentencepiece as spm
import torch
import yaml
from safetensors.torch import load_file

from minmo_core.understanding.sensevoice import BPE_MODEL
from minmo_core.understanding.transcript import ALL_TAGS

_TEXT = """
the quick brown fox jumps over the lazy dog while the band plays on
hello how are you today i would like to book a table for two people
please turn on the lights in the kitchen and play some quiet music
what is the weather like tomorrow morning in the city of london
she sells sea shells by the sea shore and the shells are very small
we want to build the best open local voice assistant there is
numbers like one two three four five six seven eight nine ten
"""


def train_vocabulary(size: int = 256) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_TEXT.strip().splitlines() * 20),
        model_writer=model,
        vocab_size=size,
        model_type="bpe",
        user_defined_symbols=list(ALL_TAGS),
        character_coverage=1.0,
        hard_vocab_limit=True,
        minloglevel=2,
    )
    return model.getvalue()


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
