"""A tiny CosyVoice2-0.5B folder (voice-token LM part) in the official layout, for tests.

``llm.pt`` holds the golden fixture's weights (the release's key names, 1 Qwen2 layer of the
real 896 width, 96 speech codes and 96 text ids), saved as a pickled state dict as the
release does. ``CosyVoice-BlankEN/`` holds the Qwen2 config and a character-level tokenizer
small enough that every id, CosyVoice's added special tokens included, fits the 96-row text
embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from minmo_core.voice_lm import BLANK_EN

CHARACTERS = " abcdefghijklmnopqrstuvwxyz.,!?'。，！？你好说话高兴用"


def _tokenizer() -> Tokenizer:
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{c: i + 2 for i, c in enumerate(CHARACTERS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return tokenizer


def write_tiny_cosyvoice(folder: Path, fixture_dir: Path) -> Path:
    folder = Path(folder)
    blank = folder / BLANK_EN
    blank.mkdir(parents=True, exist_ok=True)
    fixture = json.loads((fixture_dir / "config.json").read_text())
    (blank / "config.json").write_text(
        json.dumps({"model_type": "qwen2", **fixture["qwen2_config"]}, indent=2)
    )
    _tokenizer().save(str(blank / "tokenizer.json"))
    (blank / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "<unk>",
                "eos_token": "<|endoftext|>",
                "model_max_length": 4096,
            }
        )
    )
    torch.save(load_file(str(fixture_dir / "weights.safetensors")), folder / "llm.pt")
    return folder
