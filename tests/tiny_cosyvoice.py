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

from minmo_core.voice.voice_lm import BLANK_EN

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


RELEASE_YAML = """\
# the release's HyperPyYAML style: tags and references, here with the fixtures' reduced sizes
sample_rate: 24000
spk_embed_dim: {spk}
token_mel_ratio: {ratio}
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {input_size}
    output_size: {output_size}
    spk_embed_dim: !ref <spk_embed_dim>
    vocab_size: {vocab}
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: {lookahead}
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {input_size}
        attention_heads: {heads}
        linear_units: {ffn}
        num_blocks: {blocks}
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                inference_cfg_rate: 0.7
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            channels: {channels}
            attention_head_dim: {head_dim}
            n_blocks: {est_blocks}
            num_mid_blocks: {mid}
            num_heads: {est_heads}
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    sampling_rate: !ref <sample_rate>
"""


def write_tiny_release(folder: Path, fixtures: Path) -> Path:
    """Every file of the release the app reads: llm.pt + CosyVoice-BlankEN/, flow.pt,
    hift.pt (with the release's ``generator.`` prefix), cosyvoice2.yaml and the two ONNX
    front-end models (stand-ins)."""
    from tests.tiny_onnx import write_speaker_encoder, write_speech_tokenizer

    write_tiny_cosyvoice(folder, fixtures / "cosyvoice2_llm")
    torch.save(
        load_file(str(fixtures / "cosyvoice2_flow" / "weights.safetensors")), folder / "flow.pt"
    )
    hift = load_file(str(fixtures / "cosyvoice2_hift" / "weights.safetensors"))
    torch.save({f"generator.{k}": v for k, v in hift.items()}, folder / "hift.pt")
    raw = json.loads((fixtures / "cosyvoice2_flow" / "config.json").read_text())
    flow, enc, est = raw["flow"], raw["encoder"], raw["decoder"]["estimator"]
    (folder / "cosyvoice2.yaml").write_text(
        RELEASE_YAML.format(
            spk=flow["spk_embed_dim"], ratio=flow["token_mel_ratio"],
            input_size=flow["input_size"], output_size=flow["output_size"],
            vocab=flow["vocab_size"], lookahead=flow["pre_lookahead_len"],
            heads=enc["attention_heads"], ffn=enc["linear_units"], blocks=enc["num_blocks"],
            channels=est["channels"], head_dim=est["attention_head_dim"],
            est_blocks=est["n_blocks"], mid=est["num_mid_blocks"], est_heads=est["num_heads"],
        )
    )  # fmt: skip
    write_speech_tokenizer(folder / "speech_tokenizer_v2.onnx")
    write_speaker_encoder(folder / "campplus.onnx")
    return folder
