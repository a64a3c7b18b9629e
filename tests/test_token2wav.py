"""Streaming token2wav: chunks of 15 tokens, no clicks at joins, close to the whole-utterance
rendering. Runs the golden fixtures' flow and vocoder (the release's architecture, reduced)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.config import HiFTConfig
from minmo_core.voice.flow import FlowDecoder
from minmo_core.voice.hift import HiFTVocoder, load_hift_state
from minmo_core.voice.token2wav import HOP, SOURCE_CACHE, FlowPrompt, Token2Wav
from tests.test_flow import release_config


@pytest.fixture(scope="module")
def t2w(fixtures_dir: Path) -> Token2Wav:
    flow_dir, hift_dir = fixtures_dir / "cosyvoice2_flow", fixtures_dir / "cosyvoice2_hift"
    flow = FlowDecoder(release_config(json.loads((flow_dir / "config.json").read_text())))
    load_into(flow, load_state_dict(flow_dir / "weights.safetensors"), flow_dir)
    vocoder = HiFTVocoder(HiFTConfig(base_channels=64, f0_cond_channels=64))
    load_into(vocoder, load_hift_state(load_state_dict(hift_dir / "weights.safetensors")), hift_dir)
    return Token2Wav(flow.eval(), vocoder.eval(), chunk_tokens=15)


@pytest.fixture(scope="module")
def prompt(fixtures_dir: Path) -> FlowPrompt:
    io = load_file(str(fixtures_dir / "cosyvoice2_flow" / "io.safetensors"))
    return FlowPrompt(io["prompt_token"].long(), io["prompt_feat"], io["embedding"])


TOKENS = [(37 * i + 11) % 256 for i in range(64)]  # 2.56 s of speech tokens


def streamed(t2w: Token2Wav, prompt: FlowPrompt, tokens: list[int], pieces: list[int]):
    stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
    out, start = [], 0
    for n in pieces:
        out.append(stream.push(tokens[start : start + n]))
        start += n
    out.append(stream.flush())
    return torch.cat(out), stream


def test_stream_yields_audio_as_soon_as_15_tokens_and_the_lookahead_exist(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
    assert stream.push(TOKENS[:17]).numel() == 0  # 15 + 3 look-ahead not reached yet
    first = stream.push(TOKENS[17:18])
    assert first.numel() == 15 * 2 * HOP - SOURCE_CACHE  # the tail waits for the cross-fade
    second = stream.push(TOKENS[18:33])
    assert second.numel() == 15 * 2 * HOP


def test_streamed_audio_has_the_whole_utterances_length_whatever_the_pieces(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    a, _ = streamed(t2w, prompt, TOKENS, [1] * 64)
    b, _ = streamed(t2w, prompt, TOKENS, [20, 7, 30, 7])
    assert a.numel() == b.numel() == 64 * 2 * HOP
    torch.testing.assert_close(a, b)  # same chunks, same seed: identical


def test_no_clicks_at_chunk_joins(t2w: Token2Wav, prompt: FlowPrompt) -> None:
    audio, stream = streamed(t2w, prompt, TOKENS, [15] * 5)
    assert len(stream.chunk_joins) == 4
    jumps = (audio[1:] - audio[:-1]).abs()
    near = torch.zeros_like(jumps, dtype=torch.bool)
    for join in stream.chunk_joins:  # the cross-fade region and a margin either side
        near[max(0, join - 64) : join + SOURCE_CACHE + 64] = True
    typical = torch.quantile(jumps[~near], 0.999)
    assert jumps[near].max() <= 1.5 * typical, (float(jumps[near].max()), float(typical))


def test_streamed_rendering_stays_close_to_the_whole_utterance(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    """Documented bound: chunked attention over partial 25-token chunks, fresh vocoder noise
    per chunk and the cross-fades change samples, not the sound. Measured on this reduced
    random model: mean |log-mel difference| 0.29 nats (median 0.18); bound 0.5."""
    from minmo_core.voice.mel import prompt_mel

    audio, _ = streamed(t2w, prompt, TOKENS, [15] * 5)
    whole = t2w.synthesize(TOKENS, prompt, torch.Generator().manual_seed(0))
    assert audio.numel() == whole.numel()
    diff = (prompt_mel(audio) - prompt_mel(whole)).abs().mean()
    assert float(diff) < 0.5, float(diff)


def test_a_short_utterance_renders_at_flush(t2w: Token2Wav, prompt: FlowPrompt) -> None:
    stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
    assert stream.push(TOKENS[:10]).numel() == 0
    assert stream.flush().numel() == 10 * 2 * HOP
    assert stream.chunk_joins == []


class SineVocoder(torch.nn.Module):
    """A vocoder stand-in whose output is smooth (a 200 Hz sine) but starts at a random phase
    on every call: joining its chunks without the cross-fade would click."""

    def __init__(self) -> None:
        super().__init__()
        self.dtype_anchor = torch.nn.Parameter(torch.zeros(1))

    def inference(self, mel, cache_source=None, generator=None):
        n = mel.shape[2] * HOP
        phase = float(torch.rand(1, generator=generator)) * 2 * torch.pi
        t = torch.arange(n) / 24000
        audio = 0.5 * torch.sin(2 * torch.pi * 200 * t + phase)[None]
        return audio, torch.zeros(1, 1, n)


def test_joins_are_smooth_where_plain_concatenation_clicks(t2w: Token2Wav, prompt) -> None:
    sine = Token2Wav(t2w.flow, SineVocoder(), chunk_tokens=15)
    audio, stream = streamed(sine, prompt, TOKENS, [15] * 5)
    smooth_step = 0.5 * 2 * torch.pi * 200 / 24000  # largest step of the sine itself: 0.026
    jumps = (audio[1:] - audio[:-1]).abs()
    assert len(stream.chunk_joins) == 4
    assert float(jumps.max()) <= 1.05 * smooth_step
    pieces = [
        sine.synthesize(TOKENS[i : i + 15], prompt, torch.Generator().manual_seed(i))
        for i in range(0, 60, 15)
    ]
    plain = torch.cat(pieces)
    assert float((plain[1:] - plain[:-1]).abs().max()) > 5 * smooth_step  # the metric can fail


def test_each_chunk_vocodes_only_its_own_frames_and_the_carried_cache(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    """HiFT's cost per chunk is bounded: however long the utterance, a chunk's vocoder call
    sees its own new mel frames plus the MEL_CACHE carried over (and the carried source),
    and the F0 predictor's reach to the left fits inside that cache, so carrying no more
    loses nothing."""
    from minmo_core.voice.token2wav import MEL_CACHE

    seen = []
    real = t2w.vocoder.inference

    def spy(mel, cache_source=None, generator=None):
        seen.append((mel.shape[2], None if cache_source is None else cache_source.shape[-1]))
        return real(mel, cache_source, generator)

    t2w.vocoder.inference = spy
    tokens = [(37 * i + 11) % 256 for i in range(15 * 12 + 3)]  # 12 chunks, 7.3 s
    try:
        streamed(t2w, prompt, tokens, [5] * (len(tokens) // 5 + 1))
    finally:
        del t2w.vocoder.inference
    ratio = t2w.flow.cfg.token_mel_ratio
    chunk_frames = 15 * ratio
    assert len(seen) == 12 + 1  # one call per chunk, and the flush
    assert seen[0] == (chunk_frames, None)  # the first chunk: nothing carried
    for frames, source in seen[1:-1]:  # later chunks: never more than their own + the cache
        assert frames == MEL_CACHE + chunk_frames and source == SOURCE_CACHE
    assert seen[-1][0] <= MEL_CACHE + (15 + t2w.lookahead) * ratio
    convs = [m for m in t2w.vocoder.f0_predictor.condnet if isinstance(m, torch.nn.Conv1d)]
    left_reach = sum((m.kernel_size[0] - 1) // 2 * m.dilation[0] for m in convs)
    assert left_reach <= MEL_CACHE  # F0 at a chunk's first new frame has all its context


def test_a_growing_chunk_schedule_renders_fewer_larger_chunks_of_the_same_audio(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    from minmo_core.voice.token2wav import FIXED, GROWING, ChunkSchedule

    tokens = [(37 * i + 11) % 256 for i in range(15 + 25 + 50 + 50 + 3)]
    rendered = []
    real = t2w.flow.inference

    def spy(seen, *args, **kwargs):
        rendered.append(seen.shape[1])
        return real(seen, *args, **kwargs)

    t2w.flow.inference = spy
    try:
        audio = {}
        for schedule in (FIXED, GROWING):
            rendered.clear()
            stream = t2w.stream(prompt, torch.Generator().manual_seed(0), schedule)
            pieces = [stream.push(tokens[i : i + 7]) for i in range(0, len(tokens), 7)]
            audio[schedule.name] = torch.cat([*pieces, stream.flush()])
            calls = list(rendered)
            if schedule is GROWING:  # 15, 25, 50, 50 tokens (3 of look-ahead), then the flush
                assert calls == [18, 43, 93, 143, 143]
            else:
                assert calls == [18 + 15 * i for i in range(9)] + [143]
    finally:
        del t2w.flow.inference
    fixed, growing = audio[FIXED.name], audio[GROWING.name]
    assert fixed.shape == growing.shape == (2 * HOP * len(tokens),)
    # the same speech: the mel is the same frame for frame up to the chunk edges
    assert torch.corrcoef(torch.stack([fixed, growing]))[0, 1] > 0.9
    with pytest.raises(ValueError, match="positive"):
        ChunkSchedule((15, 0))
