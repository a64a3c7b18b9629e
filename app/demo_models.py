"""The training demo's stand-ins for the pretrained speech models it cannot download: a small
SenseVoice-shaped voice encoder and a small CosyVoice2-shaped voice-token LM, each briefly
pretrained here so that it does, at toy scale, what the real one does.

The encoder. SenseVoiceSmall was pretrained on CTC: its states are local (a frame's state
says what sounds there), which recognition, the duplex predictor (how long has it been
silent?) and the on-screen transcript all rely on. The stand-in (``DEMO_ENCODER``: 128 wide,
4 + 2 blocks) gets CMVN statistics measured on the training clips, a SentencePiece vocabulary
of the training transcripts with SenseVoice's rich tags, and a few minutes of CTC training on
the rich transcription SenseVoice emits (``<|en|><|NEUTRAL|><|Speech|><|withitn|>`` + text),
then is written in SenseVoiceSmall's folder layout.

The voice. The real CosyVoice2-0.5B LM was pretrained on speech whose tokens depend on the words; a
random LM of that shape mostly repeats itself whatever it reads. The demo's stand-in is
pretrained here, in a minute or two, on a pronunciation code: each reply's speech tokens are
espeak-ng's phonemes for it (one code per phoneme, code 0 between words), laid out exactly as
generation lays them out (``t2s.forced_layout``: sos, 5 text : 15 speech blocks, task id,
the rest, end of speech). It reads the chat LLM's own tokenizer, as CosyVoice2 reads
Qwen2's, and is written in the release's folder layout (``llm.pt`` + ``CosyVoice-BlankEN/``)
so that the t2s stage loads it like the real one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minmo_core.common.espeak import espeak, phonemes
from minmo_core.config import VoiceTokenLMConfig
from minmo_core.train.t2s import forced_layout, layout_logits
from minmo_core.voice.voice_lm import (
    BLANK_EN,
    LLM_FILE,
    QWEN2_05B,
    VoiceTokenLM,
    load_tokenizer,
)

DEMO_ENCODER = {  # SenseVoiceEncoderSmall's layout at a CPU-friendly size
    "output_size": 128, "attention_heads": 4, "linear_units": 512, "num_blocks": 4,
    "tp_blocks": 2, "kernel_size": 11, "sanm_shfit": 0,
}  # fmt: skip
ENCODER_VOCABULARY = 256  # SentencePiece pieces at most (SenseVoiceSmall: 25055)
RICH_TAGS = ("<|en|>", "<|NEUTRAL|>", "<|Speech|>", "<|withitn|>")  # what the 4 queries say
DEMO_VOICE_LM = {  # CosyVoice-BlankEN's Qwen2 body at a CPU-friendly size (real: 896 x 24)
    "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2,
}  # fmt: skip
SPEECH_CODES = 128  # the codebook (CosyVoice2: 6561); espeak's English needs about 50
WORD_GAP = 0  # the code between two words
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_demo_encoder(
    folder: Path,
    clips: Sequence[np.ndarray],
    transcripts: Sequence[str],
    steps: int,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> Path:
    """A SenseVoiceSmall-layout folder (config.yaml, am.mvn, BPE model, model.pt) whose
    encoder was CTC-trained for ``steps`` steps on ``clips`` and their ``transcripts``."""
    import sentencepiece as spm
    import yaml

    from app.bench.stack import train_vocabulary
    from minmo_core.config import FrontendConfig
    from minmo_core.understanding.frontend import CMVN, Frontend
    from minmo_core.understanding.sensevoice import BPE_MODEL, SenseVoice, read_folder_config
    from minmo_core.understanding.voice_encoder import VoiceEncoder

    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = train_vocabulary(ENCODER_VOCABULARY, sorted(set(transcripts)) * 4)
    (folder / BPE_MODEL).write_bytes(vocabulary)
    pieces = spm.SentencePieceProcessor(model_proto=vocabulary).GetPieceSize()
    fe = FrontendConfig()
    config = {
        "model": "SenseVoiceSmall", "input_size": fe.lfr_dim, "vocab_size": pieces,
        "encoder": "SenseVoiceEncoderSmall", "encoder_conf": DEMO_ENCODER,
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": fe.sample_rate, "window": fe.window, "n_mels": fe.n_mels,
                          "frame_length": 25, "frame_shift": 10, "lfr_m": fe.lfr_m,
                          "lfr_n": fe.lfr_n, "dither": 0.0},
    }  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    raw = Frontend(fe, CMVN.identity(fe.lfr_dim))
    feats = np.concatenate([raw(clip) for clip in clips])  # (N, 560)
    shift = -feats.mean(0)
    scale = 1.0 / np.maximum(feats.std(0), 1e-3)
    (folder / "am.mvn").write_text(_kaldi_cmvn(shift, scale))
    encoder_cfg, _ = read_folder_config(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VoiceEncoder(encoder_cfg)
    torch.save(encoder.state_dict(), folder / "model.pt")
    ears = SenseVoice.from_folder(folder, "cpu", torch.float32, allow_unpinned=True)
    pretrain_encoder(ears, clips, transcripts, steps, seed=seed, say=say)
    torch.save(ears.encoder.state_dict(), folder / "model.pt")
    return folder


def pretrain_encoder(
    ears,
    clips: Sequence[np.ndarray],
    transcripts: Sequence[str],
    steps: int,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> list[float]:
    """CTC on SenseVoice's rich transcription (the 4 query tags, then the words) for every
    weight of ``ears.encoder``; returns the losses."""
    from minmo_core.train.models import LANGUAGE, USE_ITN

    encoder, vocabulary = ears.encoder, ears.vocabulary
    tags = [vocabulary.PieceToId(tag) for tag in RICH_TAGS]
    feats = [torch.from_numpy(ears.frontend(clip)) for clip in clips]
    targets = [torch.tensor(tags + vocabulary.EncodeAsIds(t)) for t in transcripts]

    def ctc(picked) -> torch.Tensor:
        lengths = torch.tensor([feats[k].shape[0] for k in picked])
        padded = torch.nn.utils.rnn.pad_sequence([feats[k] for k in picked], batch_first=True)
        _, log_probs, out_lengths = encoder(padded, lengths, LANGUAGE, USE_ITN)
        labels = [targets[k] for k in picked]
        return F.ctc_loss(
            log_probs.transpose(0, 1).float(),  # (T, B, V)
            torch.cat(labels),
            out_lengths,
            torch.tensor([len(x) for x in labels]),
            blank=encoder.cfg.blank_id,
            zero_infinity=True,
        )

    return _pretrain(encoder, ctc, len(feats), steps, batch, lr, 0.01, 5.0, seed, say,
                     "demo encoder", "CTC loss")  # fmt: skip


def _pretrain(module, loss_of, n: int, steps: int, batch: int, lr: float, weight_decay: float,
              clip: float, seed: int, say, name: str, what: str) -> list[float]:  # fmt: skip
    """AdamW over every weight of ``module``: linear warm-up over a tenth of the steps, then
    flat; each step ``loss_of`` a batch of item indices drawn from ``n``; returns the losses."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    losses = []
    module.train()
    for step in range(steps):
        rate = lr * min(1.0, (step + 1) / max(1, steps // 10))
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss = loss_of(rng.choice(n, min(batch, n), replace=False))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        if say is not None and (step + 1) % 100 == 0:
            say(f"{name}: step {step + 1}/{steps}, {what} {loss.item():.3f}")
    module.eval()
    return losses


def _kaldi_cmvn(shift: np.ndarray, scale: np.ndarray) -> str:
    def vector(v: np.ndarray) -> str:
        return "[ " + " ".join(f"{x:.6g}" for x in v) + " ]"

    n = shift.size
    return (
        f"<Nnet>\n<Splice> {n} {n}\n[ 0 ]\n<AddShift> {n} {n}\n<LearnRateCoef> 0 "
        f"{vector(shift)}\n<Rescale> {n} {n}\n<LearnRateCoef> 0 {vector(scale)}\n</Nnet>\n"
    )


def pronunciation_codes(texts: Sequence[str]) -> dict[str, list[int]]:
    """Each text's speech tokens: its phonemes (espeak-ng, en) as codes 1.., 0 between words.
    The codes number the phonemes of all ``texts`` in sorted order."""
    exe = espeak("the demo voice's speech tokens are espeak-ng's phonemes")
    spoken = {text: phonemes(exe, text) for text in sorted(set(texts))}
    inventory = sorted({p for words in spoken.values() for word in words for p in word})
    if len(inventory) >= SPEECH_CODES:
        raise ValueError(f"{len(inventory)} phonemes do not fit {SPEECH_CODES} speech codes")
    number = {p: i + 1 for i, p in enumerate(inventory)}
    codes = {}
    for text, words in spoken.items():
        out: list[int] = []
        for i, word in enumerate(words):
            out += ([WORD_GAP] if i else []) + [number[p] for p in word]
        codes[text] = out
    return codes


def new_voice_lm(folder: Path, llm_folder: Path, seed: int = 0):
    """Write ``CosyVoice-BlankEN/`` (the LLM's tokenizer, a small Qwen2 config) and return a
    seeded random VoiceTokenLM of that shape with its tokenizer."""
    from transformers import Qwen2Config

    blank = folder / BLANK_EN
    blank.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (llm_folder / name).is_file():
            shutil.copyfile(llm_folder / name, blank / name)
    cfg = VoiceTokenLMConfig(
        llm_input_size=DEMO_VOICE_LM["hidden_size"],
        llm_output_size=DEMO_VOICE_LM["hidden_size"],
        speech_token_size=SPEECH_CODES,
    )
    tokenizer = load_tokenizer(folder, cfg)
    qwen = {**QWEN2_05B, **DEMO_VOICE_LM, "vocab_size": -(-len(tokenizer) // 64) * 64}
    (blank / "config.json").write_text(json.dumps({"model_type": "qwen2", **qwen}, indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = VoiceTokenLM(cfg, Qwen2Config(**qwen))
    lm.llm["model"].tie_weights()
    return lm, tokenizer


def pretrain_voice_lm(
    lm: VoiceTokenLM,
    tokenizer,
    pairs: Sequence[tuple[str, list[int]]],
    steps: int,
    batch: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> list[float]:
    """Train every weight of ``lm`` to speak each (text, speech tokens) pair in the
    bi-streaming layout; returns the losses."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text, _ in pairs]

    def speak(picked) -> torch.Tensor:
        layouts = [
            forced_layout(lm, [lm.embed_text([i]) for i in ids[k]], None, pairs[k][1])
            for k in picked
        ]
        return F.cross_entropy(*layout_logits(lm, layouts))

    return _pretrain(lm, speak, len(pairs), steps, batch, lr, 0.0, 1.0, seed, say,
                     "demo voice", "loss")  # fmt: skip


def write_demo_voice(
    folder: Path,
    llm_folder: Path,
    texts: Sequence[str],
    steps: int,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> Path:
    """A CosyVoice2-layout folder whose voice LM was pretrained to pronounce ``texts``."""
    folder.mkdir(parents=True, exist_ok=True)
    lm, tokenizer = new_voice_lm(folder, llm_folder, seed)
    codes = pronunciation_codes(texts)
    pairs = [(text, codes[text]) for text in sorted(set(texts))]
    pretrain_voice_lm(lm, tokenizer, pairs, steps, seed=seed, say=say)
    torch.save(lm.state_dict(), folder / LLM_FILE)
    return folder


__all__ = [
    "DEMO_ENCODER",
    "DEMO_VOICE_LM",
    "SPEECH_CODES",
    "new_voice_lm",
    "pretrain_encoder",
    "pretrain_voice_lm",
    "pronunciation_codes",
    "write_demo_encoder",
    "write_demo_voice",
]
