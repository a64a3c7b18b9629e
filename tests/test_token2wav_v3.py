"""CosyVoice 3's token2wav: the DiT flow and the causal vocoder (the fixtures' reduced
models), streamed in 15-token chunks through one vocoder stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into
from minmo_core.common.release_config import dit_flow_config, hift_config
from minmo_core.voice.flow_dit import DiTFlowDecoder
from minmo_core.voice.hift import load_hift_state
from minmo_core.voice.hift_causal import CausalHiFTVocoder
from minmo_core.voice.token2wav import HOP, FlowPrompt
from minmo_core.voice.token2wav_causal import CausalToken2Wav
from tests.test_flow_v3 import nested_flow

TOKENS = [(37 * i + 11) % 256 for i in range(64)]  # 2.56 s of speech tokens


@pytest.fixture(scope="module")
def t2w(fixtures_dir: Path) -> CausalToken2Wav:
    flow_dir, hift_dir = fixtures_dir / "cosyvoice3_flow", fixtures_dir / "cosyvoice3_hift"
    flow = DiTFlowDecoder(
        dit_flow_config(nested_flow(json.loads((flow_dir / "config.json").read_text())))
    )
    flow.load_state_dict(load_file(str(flow_dir / "weights.safetensors")))
    constructor = json.loads((hift_dir / "config.json").read_text())["constructor"]
    vocoder = CausalHiFTVocoder(hift_config(constructor, causal=True))
    load_into(vocoder, load_hift_state(load_file(str(hift_dir / "weights.safetensors"))), hift_dir)
    return CausalToken2Wav(flow.eval(), vocoder.eval())


@pytest.fixture(scope="module")
def prompt(fixtures_dir: Path) -> FlowPrompt:
    io = load_file(str(fixtures_dir / "cosyvoice3_flow" / "io.safetensors"))
    return FlowPrompt(io["prompt_token"].long(), io["prompt_feat"], io["embedding"])


def streamed(t2w, prompt, tokens: list[int], pieces: list[int], group_ends=(), reencode=False):
    stream = t2w.stream(prompt, reencode=reencode)
    out, start = [], 0
    for n in pieces:
        out.append(stream.push(tokens[start : start + n]))
        start += n
        if start in group_ends:
            out.append(stream.end_group())
    out.append(stream.flush())
    return torch.cat(out), stream


def test_audio_comes_once_15_tokens_and_the_lookahead_exist(t2w, prompt) -> None:
    stream = t2w.stream(prompt)
    assert stream.push(TOKENS[:17]).numel() == 0
    first = stream.push(TOKENS[17:18])
    assert first.numel() == (2 * 15 - 8) * HOP  # all but the vocoder's 8 held-back frames


def test_streamed_audio_has_the_whole_utterances_length_whatever_the_pieces(t2w, prompt):
    for pieces in ([1] * 64, [15] * 4 + [4], [40, 24]):
        audio, _ = streamed(t2w, prompt, TOKENS, pieces)
        assert audio.shape == (2 * HOP * len(TOKENS),)


@pytest.mark.parametrize(
    ("pieces", "group_ends"),
    [([15] * 4 + [4], (30,)), ([1] * 64, ()), ([40, 24], ()), ([7] * 9 + [1], (21, 49))],
)
def test_the_incremental_flow_gives_the_release_schemes_audio(t2w, prompt, pieces, group_ends):
    """The default stream keeps the flow's complete chunks (a DiTFlowStream per sentence
    group) instead of re-running the group so far: the same audio."""
    from minmo_core.voice.flow_dit import DiTFlowStream

    audio, stream = streamed(t2w, prompt, TOKENS, pieces, group_ends)
    rerun, old = streamed(t2w, prompt, TOKENS, pieces, group_ends, reencode=True)
    assert old.flow is None and stream.groups == len(group_ends)
    torch.testing.assert_close(audio, rerun, atol=2e-5, rtol=0)
    fresh = t2w.stream(prompt)
    assert isinstance(fresh.flow, DiTFlowStream)
    fresh.push(TOKENS[:20])
    fresh.end_group()
    assert isinstance(fresh.flow, DiTFlowStream) and fresh.flow.done == 0  # afresh per group


def test_the_stream_is_one_vocoder_pass_over_its_mel_so_joins_cannot_click(t2w, prompt):
    """Every chunk's new mel goes through one causal vocoder stream: the reply's audio is
    the vocoder's output for the chunks' mel laid end to end, within float rounding, across
    chunk joins and a sentence group's end (where the flow starts afresh)."""
    from minmo_core.voice.hift_causal import CausalHiFTStream

    mels, real_push = [], CausalHiFTStream.push

    def spy(self, mel, finalize=False):
        mels.append(mel.clone())
        return real_push(self, mel, finalize)

    CausalHiFTStream.push = spy
    try:
        audio, stream = streamed(t2w, prompt, TOKENS, [15] * 4 + [4], group_ends=(30,))
    finally:
        CausalHiFTStream.push = real_push
    assert len(stream.chunk_joins) >= 3 and stream.groups == 1
    whole, _ = t2w.vocoder.inference(torch.cat(mels, dim=2))
    torch.testing.assert_close(audio, whole[0], atol=1e-6, rtol=0)
    jumps = (audio[1:] - audio[:-1]).abs()
    near = torch.zeros_like(jumps, dtype=torch.bool)
    for join in stream.chunk_joins:
        near[max(0, join - 64) : join + 64] = True
    assert jumps[near].max() <= 1.5 * torch.quantile(jumps[~near], 0.999)


def test_streamed_rendering_stays_close_to_the_whole_utterance(t2w, prompt) -> None:
    """Documented bound: chunked attention over partial 25-token chunks (the whole
    utterance attends fully) changes samples, not the sound. Measured on the reduced
    random model: mean |log-mel difference| 0.27 nats (median 0.20); bound 0.5."""
    from minmo_core.voice.mel import prompt_mel

    audio, _ = streamed(t2w, prompt, TOKENS, [15] * 5)
    whole = t2w.synthesize(TOKENS, prompt)
    assert audio.numel() == whole.numel()
    diff = float((prompt_mel(audio) - prompt_mel(whole)).abs().mean())
    assert diff < 0.5, diff


def test_a_flow_in_bfloat16_feeds_the_float32_vocoder(t2w, prompt) -> None:
    import copy

    half = CausalToken2Wav(copy.deepcopy(t2w.flow).to(torch.bfloat16), t2w.vocoder)
    audio, _ = streamed(half, prompt, TOKENS[:40], [20, 20])
    assert audio.dtype == torch.float32 and audio.shape == (2 * HOP * 40,)
    assert torch.isfinite(audio).all() and audio.abs().max() > 0
