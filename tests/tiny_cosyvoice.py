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


RELEASE_YAML_V3 = """\
# cosyvoice3.yaml's layout (HyperPyYAML: tags, references, an arithmetic reference), with the
# CosyVoice 3 fixtures' reduced sizes
sample_rate: 24000
llm_input_size: {llm_width}
llm_output_size: {llm_width}
spk_embed_dim: {spk}
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: {ratio}
chunk_size: 25
num_decoding_left_chunks: -1
llm: !new:cosyvoice.llm.llm.CosyVoice3LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {speech_tokens}
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: {flow_input}
    output_size: {flow_output}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {vocab}
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: {lookahead}
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: {flow_input}
        channels: {lookahead_channels}
        pre_lookahead_len: {lookahead}
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {dim}
            depth: {depth}
            heads: {heads}
            dim_head: {dim_head}
            ff_mult: {ff_mult}
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
hift: !new:cosyvoice.hifigan.generator.CausalHiFTGenerator
    in_channels: 80
    base_channels: {base}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    conv_pre_look_right: 4
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {cond}
"""


def write_tiny_release_v3(folder: Path, fixtures: Path) -> Path:
    """A Fun-CosyVoice3-0.5B-2512 folder in the official layout with the CosyVoice 3
    fixtures' weights: llm.pt (and the same weights as llm.rl.pt) + CosyVoice-BlankEN/,
    flow.pt, hift.pt (``generator.`` prefix), cosyvoice3.yaml and ONNX stand-ins."""
    from tests.tiny_onnx import write_speaker_encoder, write_speech_tokenizer

    write_tiny_cosyvoice(folder, fixtures / "cosyvoice3_llm")
    (folder / "llm.rl.pt").write_bytes((folder / "llm.pt").read_bytes())
    torch.save(
        load_file(str(fixtures / "cosyvoice3_flow" / "weights.safetensors")), folder / "flow.pt"
    )
    hift = load_file(str(fixtures / "cosyvoice3_hift" / "weights.safetensors"))
    torch.save({f"generator.{k}": v for k, v in hift.items()}, folder / "hift.pt")
    llm = json.loads((fixtures / "cosyvoice3_llm" / "config.json").read_text())["constructor"]
    flow_cfg = json.loads((fixtures / "cosyvoice3_flow" / "config.json").read_text())
    hift_cfg = json.loads((fixtures / "cosyvoice3_hift" / "config.json").read_text())
    flow, lookahead, est = flow_cfg["flow"], flow_cfg["pre_lookahead_layer"], flow_cfg["estimator"]
    (folder / "cosyvoice3.yaml").write_text(
        RELEASE_YAML_V3.format(
            llm_width=llm["llm_input_size"], speech_tokens=llm["speech_token_size"],
            spk=flow["spk_embed_dim"], ratio=flow["token_mel_ratio"],
            flow_input=flow["input_size"], flow_output=flow["output_size"],
            vocab=flow["vocab_size"], lookahead=flow["pre_lookahead_len"],
            lookahead_channels=lookahead["channels"], dim=est["dim"], depth=est["depth"],
            heads=est["heads"], dim_head=est["dim_head"], ff_mult=est["ff_mult"],
            base=hift_cfg["constructor"]["base_channels"],
            cond=hift_cfg["constructor"]["f0_predictor"]["cond_channels"],
        )
    )  # fmt: skip
    write_speech_tokenizer(folder / "speech_tokenizer_v3.onnx")
    write_speaker_encoder(folder / "campplus.onnx")
    return folder
