"""CosyVoice 3's speech-token LM (``CosyVoice3LM``) against the official code's golden
fixture, built with the sizes in the fixture's config.json."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2Config

from minmo_core.config import VoiceTokenLMConfig
from minmo_core.errors import ConfigError
from minmo_core.voice.speech_tokens import (
    LMPrompt,
    Trace,
    interleaved_tokens,
    whole_text_tokens,
)
from minmo_core.voice.voice_lm import VoiceTokenLM, greedy_sampler
from tests.test_voice_lm import Recorder, Script

KIND = {0: "sos", 1: "text", 2: "task_id", 3: "speech", 4: "instruct"}


def fixture_config(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "cosyvoice3_llm" / "config.json").read_text())


def lm_config(constructor: dict, **extra) -> VoiceTokenLMConfig:
    """The LM's config from the release's constructor arguments (CosyVoice3LM kwargs)."""
    return VoiceTokenLMConfig(
        llm_input_size=constructor["llm_input_size"],
        llm_output_size=constructor["llm_output_size"],
        speech_token_size=constructor["speech_token_size"],
        mix_ratio=tuple(constructor["mix_ratio"]),
        cosyvoice=3,
        **extra,
    )


@pytest.fixture(scope="module")
def golden(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fixtures_dir / "cosyvoice3_llm" / "io.safetensors"))


@pytest.fixture(scope="module")
def cfg(fixtures_dir: Path) -> dict:
    return fixture_config(fixtures_dir)


@pytest.fixture(scope="module")
def lm(fixtures_dir: Path, cfg: dict) -> VoiceTokenLM:
    model = VoiceTokenLM(lm_config(cfg["constructor"]), Qwen2Config(**cfg["qwen2_config"]))
    state = load_file(str(fixtures_dir / "cosyvoice3_llm" / "weights.safetensors"))
    model.load_state_dict(state, strict=True)  # the released llm.pt's key names
    return model.eval()


def test_the_control_ids_are_cosyvoice_3s(lm: VoiceTokenLM, cfg: dict) -> None:
    derived, c = cfg["derived"], lm.cfg
    assert (c.eos_token, c.fill_token) == (derived["eos_token"], derived["fill_token"])
    first, last = (int(x) for x in derived["stop_token_ids"].split(".."))
    assert c.stop_tokens == tuple(range(first, last + 1))
    assert lm.llm_decoder.bias is None and not hasattr(lm, "llm_embedding")
    torch.testing.assert_close(lm.sos[0], lm.speech_embedding.weight[derived["sos"]])
    torch.testing.assert_close(lm.task_id[0], lm.speech_embedding.weight[derived["task_id"]])


@pytest.mark.parity
@pytest.mark.parametrize("case", ["tf_uni", "tf_bi"])
def test_teacher_forced_logits_match_official(lm: VoiceTokenLM, golden: dict, case: str) -> None:
    with torch.no_grad():
        logits = lm(golden[f"{case}.lm_input"])
    torch.testing.assert_close(logits, golden[f"{case}.logits"], atol=1e-4, rtol=0)


@pytest.mark.parity
def test_the_whole_text_layout_is_the_official_one(lm: VoiceTokenLM, golden: dict) -> None:
    """[sos] [instruction + text] [task_id] [speech]: fed as a prompt, the logits after its
    last position are the official ones."""
    instruct = golden["tf_uni.instruct_token"][0].tolist()
    speech = golden["tf_uni.speech_token"][0].tolist()
    trace: Trace = []
    recorder = Recorder(greedy_sampler)
    with torch.no_grad():
        tokens = whole_text_tokens(
            lm, golden["tf_uni.text_token"][0].tolist(), LMPrompt(instruct, speech), recorder,
            trace=trace,
        )  # fmt: skip
        next(tokens, None)
    assert len(trace) == golden["tf_uni.lm_input"].shape[1] + 1  # (and the one generated)
    shown = recorder.logits[0]
    reference = golden["tf_uni.logits"][0, -1]
    finite = torch.isfinite(shown)
    torch.testing.assert_close(shown[finite], reference[finite], atol=1e-4, rtol=0)


@pytest.mark.parity
def test_greedy_decoding_matches_official_inference_with_its_min_len_rule(
    lm: VoiceTokenLM, golden: dict
) -> None:
    """The release masks index S before min_len: sos in CosyVoice 3, so eos (S + 1) stays
    allowed and the fixture's utterance ends at step 6, long before min_len 20."""
    S = lm.cfg.speech_token_size
    prompt = LMPrompt(
        golden["infer.prompt_text"][0].tolist(), golden["infer.prompt_speech_token"][0].tolist()
    )
    text = golden["infer.text"][0].tolist()
    assert int(len(text) * lm.cfg.min_token_text_ratio) == int(golden["infer.min_len"])
    recorder = Recorder(greedy_sampler)
    with torch.no_grad():
        tokens = list(itertools.islice(whole_text_tokens(lm, text, prompt, recorder), 60))
    assert tokens == golden["infer.out_tokens"].tolist()
    seen = torch.stack(recorder.logits)  # every decision, the stop included
    assert seen.shape[0] == golden["infer.step_logits"].shape[0]
    assert torch.isinf(seen[:, S]).all() and torch.isfinite(seen[:, S + 1]).all()
    assert int(seen[-1].argmax()) == int(golden["infer.stop_token"]) == lm.cfg.eos_token
    keep = [i for i in range(lm.cfg.n_outputs) if i != S]
    torch.testing.assert_close(
        seen[:, keep], golden["infer.step_logits"][:, keep], atol=1e-4, rtol=0
    )


@pytest.mark.parity
def test_bistream_layout_and_logits_match_official_training(lm: VoiceTokenLM, golden: dict) -> None:
    """The instruction goes right after sos, then 5 text : 15 speech, fill forced, the rest
    of the text with task_id, speech to eos."""
    text = golden["tf_bi.text_token"][0].tolist()
    speech = golden["tf_bi.speech_token"][0].tolist()
    instruct = golden["tf_bi.instruct_token"][0].tolist()
    trace: Trace = []
    recorder = Recorder(Script(speech, then=lm.cfg.eos_token), trace)
    with torch.no_grad():
        pieces = (lm.embed_text([t]) for t in text)
        out = list(interleaved_tokens(lm, pieces, LMPrompt(instruct), recorder, trace=trace))
    assert out == speech
    expected = [
        (KIND[int(k)], int(i))
        for k, i in zip(golden["tf_bi.layout_kind"], golden["tf_bi.layout_index"], strict=True)
    ]
    assert trace == expected
    assert len(recorder.positions) == len(speech) + 1  # each speech token and eos; fill forced
    shown = torch.stack(recorder.logits)
    reference = golden["tf_bi.logits"][0, recorder.positions]
    finite = torch.isfinite(shown)
    torch.testing.assert_close(shown[finite], reference[finite], atol=1e-4, rtol=0)


def test_a_prompt_without_endofprompt_is_refused(lm: VoiceTokenLM) -> None:
    with pytest.raises(ConfigError, match="CosyVoice 3 needs <\\|endofprompt\\|>"):
        next(whole_text_tokens(lm, [5, 6, 7], LMPrompt(), greedy_sampler))
    with pytest.raises(ConfigError, match="CosyVoice 3 needs <\\|endofprompt\\|>"):
        next(interleaved_tokens(lm, iter([lm.embed_text([5])]), LMPrompt([1, 2]), greedy_sampler))


def test_it_decodes_in_bfloat16_on_the_cpu(lm: VoiceTokenLM, golden: dict) -> None:
    import copy

    half = copy.deepcopy(lm).to(torch.bfloat16)
    prompt = LMPrompt(golden["infer.prompt_text"][0].tolist())
    pieces = (half.embed_text([t]) for t in golden["infer.text"][0].tolist())
    with torch.no_grad():
        out = list(itertools.islice(interleaved_tokens(half, pieces, prompt, greedy_sampler), 30))
        whole = list(
            itertools.islice(
                whole_text_tokens(half, golden["infer.text"][0].tolist(), prompt, greedy_sampler),
                30,
            )
        )
    for tokens in (out, whole):
        assert tokens and all(0 <= t < half.cfg.speech_token_size for t in tokens)


def test_real_size_matches_the_release(cfg: dict) -> None:
    real = cfg["real_full_size"]
    with torch.device("meta"):
        model = VoiceTokenLM(lm_config(real), Qwen2Config(**real["qwen2_config"]))
    state = model.state_dict()
    assert len(state) == real["state_dict"]["tensors"]  # 293
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == real["state_dict"]["unique_values"]  # 506,148,480
    assert state["llm_decoder.weight"].shape == (6761, 896)
