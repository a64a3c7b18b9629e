"""A whole MinMo model stack with seeded random weights, at the tiny or the real sizes, built
in memory: what `minmo bench e2e` runs the engine on where speed, not meaning, is measured.

    SenseVoiceSmall encoder (+ a 256-piece vocabulary carrying the rich tags)
    Qwen2.5-Instruct LLM (tiny, or 0.5b / 1.5b / 3b / 7b shapes) with a chat tokenizer
    CosyVoice 2 voice-token LM, flow decoder and HiFT vocoder

Random weights never end a reply on their own: the LLM stops at ``max_new_tokens`` and the
voice LM at ``max_token_text_ratio`` speech tokens per text token.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import sentencepiece as spm
import torch

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


def train_vocabulary(size: int = 256, sentences: list[str] | None = None) -> bytes:
    """A SentencePiece BPE model of ``size`` pieces with SenseVoice's rich tags (a second),
    trained on ``sentences`` (default: a few lines of everyday English; given sentences may
    yield fewer pieces, never more)."""
    model = io.BytesIO()
    lines = sentences if sentences is not None else _TEXT.strip().splitlines() * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=size,
        model_type="bpe",
        user_defined_symbols=list(ALL_TAGS),
        character_coverage=1.0,
        hard_vocab_limit=sentences is None,
        minloglevel=2,
    )
    return model.getvalue()


def random_sensevoice(preset: str, device: torch.device, dtype: torch.dtype):
    from minmo_core.config import FrontendConfig, VoiceEncoderConfig
    from minmo_core.understanding.frontend import Frontend
    from minmo_core.understanding.sensevoice import SenseVoice
    from minmo_core.understanding.voice_encoder import VoiceEncoder

    vocabulary = spm.SentencePieceProcessor(model_proto=train_vocabulary())
    cfg = VoiceEncoderConfig() if preset == "real" else VoiceEncoderConfig.tiny()
    cfg = replace(cfg, vocab_size=vocabulary.GetPieceSize())
    torch.manual_seed(0)
    encoder = VoiceEncoder(cfg)
    with torch.no_grad():  # random weights mostly say "blank": make them say something
        encoder.ctc.ctc_lo.bias[cfg.blank_id] -= 10.0
    return SenseVoice(encoder.to(device, dtype), Frontend(FrontendConfig()), vocabulary, device)


def random_voice(
    preset: str,
    device: torch.device,
    text_vocab: int,
    tokenizer,
    ratio: float,
    cosyvoice: int = 2,
):
    """A SpeechSynthesizer: voice LM (bfloat16 on a GPU), flow (float16), HiFT (float32),
    of CosyVoice 2 or 3."""
    from app.bench.models import random_voice_lm
    from minmo_core.voice.speech_tokens import SpeechTokenGenerator
    from minmo_core.voice.tts import SpeechSynthesizer
    from minmo_core.voice.voice_lm import greedy_sampler

    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    lm = random_voice_lm(preset, device, dtype, text_vocab, cosyvoice)
    lm.cfg = replace(lm.cfg, max_token_text_ratio=ratio)
    tokens = SpeechTokenGenerator(lm, tokenizer, greedy_sampler)
    return SpeechSynthesizer(tokens, random_token2wav(preset, device, cosyvoice), seed=0)


def random_token2wav(preset: str, device: torch.device, cosyvoice: int = 2):
    """Token2Wav (flow float16 on a GPU, HiFT float32) with seeded random weights: CosyVoice
    2's (conformer + U-Net flow, HiFT) or 3's (DiT flow, causal HiFT)."""
    from minmo_core.config import DiTFlowConfig, FlowConfig, HiFTConfig
    from minmo_core.voice.flow import FlowDecoder
    from minmo_core.voice.hift import HiFTVocoder
    from minmo_core.voice.token2wav import Token2Wav

    real = preset == "real"
    torch.manual_seed(0)
    if cosyvoice == 3:
        from minmo_core.voice.flow_dit import DiTFlowDecoder
        from minmo_core.voice.hift_causal import CausalHiFTVocoder
        from minmo_core.voice.token2wav_causal import CausalToken2Wav

        flow_cfg = DiTFlowConfig() if real else replace(DiTFlowConfig.tiny(), spk_embed_dim=192)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        flow = DiTFlowDecoder(flow_cfg).to(device, dtype).eval()
        hift_cfg = replace(HiFTConfig() if real else HiFTConfig.tiny(), causal=True)
        vocoder = CausalHiFTVocoder(hift_cfg).remove_weight_norm()
        return CausalToken2Wav(flow, vocoder.to(device, torch.float32).eval())
    flow_cfg = FlowConfig() if real else replace(FlowConfig.tiny(), spk_embed_dim=192)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    flow = FlowDecoder(flow_cfg).to(device, dtype).eval()
    vocoder = HiFTVocoder(HiFTConfig() if real else HiFTConfig.tiny()).remove_weight_norm()
    return Token2Wav(flow, vocoder.to(device, torch.float32).eval())


def random_stack(
    preset: str,
    device: torch.device,
    folder: Path,
    llm_size: str = "7b",
    max_new_tokens: int = 24,
    speech_ratio: float = 5.0,
):
    """(ChatLLM, SpeechSynthesizer, SenseVoice) with random weights; ``folder`` receives the
    chat tokenizer's files. The LLM is greedy, bfloat16 on a GPU, float32 on a CPU."""
    from app.bench.chat_model import random_chat_llm
    from minmo_core.config import LLMConfig

    gpu = device.type == "cuda"
    config = replace(
        LLMConfig.tiny() if preset == "tiny" else LLMConfig(),
        temperature=0.0,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
    )
    size = "tiny" if preset == "tiny" else llm_size
    llm = random_chat_llm(size, device, torch.bfloat16 if gpu else torch.float32, folder, config)
    voice = random_voice(preset, device, len(llm.tokenizer), llm.tokenizer, speech_ratio)
    ears = random_sensevoice(preset, device, torch.float16 if gpu else torch.float32)
    return llm, voice, ears
