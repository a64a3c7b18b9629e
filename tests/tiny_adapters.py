"""Tiny MinMo adapters with seeded random weights, sized from the models they join (our
training pipeline writes the real ones in the same folder format)."""

from __future__ import annotations

from pathlib import Path

import torch

from minmo_core.config import DuplexPredictorConfig, InputProjectorConfig, OutputProjectorConfig
from minmo_core.llm.adapters import MinMoAdapters, save_adapters
from minmo_core.llm.duplex import FullDuplexPredictor
from minmo_core.llm.projectors import InputProjector, OutputProjector


def tiny_adapters(llm_width: int, encoder_width: int, voice_width: int, seed: int = 0):
    torch.manual_seed(seed)
    return MinMoAdapters(
        InputProjector(
            InputProjectorConfig(d_in=encoder_width, d_model=llm_width, n_heads=4, d_ffn=64)
        ).eval(),
        OutputProjector(OutputProjectorConfig(d_in=2 * llm_width, d_out=voice_width)).eval(),
        FullDuplexPredictor(
            DuplexPredictorConfig(d_in=llm_width, d_model=16, n_heads=2, d_ffn=32)
        ).eval(),
    )


def write_tiny_adapters(folder: Path, llm, sensevoice, voice, seed: int = 0) -> Path:
    """The adapters for a tiny LLM, SenseVoice and voice stack, saved to ``folder``."""
    adapters = tiny_adapters(
        llm.hidden_size, sensevoice.encoder.cfg.d_model, voice.tokens.lm.sos.shape[-1], seed
    )
    return save_adapters(adapters, folder)
