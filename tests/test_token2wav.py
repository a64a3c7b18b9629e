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
from minmo_core.voice.flow import ATTENTION_CHUNK_TOKENS, FlowDecoder
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
    from minmo_core.voice.flow import FlowStream

    rendered = []
    real = FlowStream.mel

    def spy(self, seen, *args, **kwargs):
        rendered.append(seen.shape[1])
        return real(self, seen, *args, **kwargs)

    FlowStream.mel = spy
    try:
        audio = {}
        for schedule in (FIXED, GROWING):
            rendered.clear()
            # a clock that stands still: rendering costs nothing, playback has every lead
            frozen = t2w.stream(prompt, torch.Generator().manual_seed(0), schedule, clock=float)
            stream = frozen
            pieces = [stream.push(tokens[i : i + 7]) for i in range(0, len(tokens), 7)]
            audio[schedule.name] = torch.cat([*pieces, stream.flush()])
            calls = list(rendered)
            if schedule is GROWING:  # 15, 25, 50, 50 tokens (3 of look-ahead), then the flush
                assert calls == [18, 43, 93, 143, 143]
            else:
                assert calls == [18 + 15 * i for i in range(9)] + [143]
    finally:
        FlowStream.mel = real
    fixed, growing = audio[FIXED.name], audio[GROWING.name]
    assert fixed.shape == growing.shape == (2 * HOP * len(tokens),)
    # the same speech: the mel is the same frame for frame up to the chunk edges
    assert torch.corrcoef(torch.stack([fixed, growing]))[0, 1] > 0.9
    with pytest.raises(ValueError, match="positive"):
        ChunkSchedule((15, 0))


def test_chunks_grow_only_while_playback_has_a_lead(t2w: Token2Wav, prompt: FlowPrompt) -> None:
    """On a machine slower than real time the growing schedule stays at 15 tokens (larger
    chunks would starve playback longer); once rendering is fast again it grows."""
    from minmo_core.voice.token2wav import GROWING

    now = [0.0]
    per_token = [0.1]  # a chunk of 15 tokens (0.6 s of audio) takes 1.5 s: slower than real time
    real_render = type(t2w.vocoder).inference

    def slow_vocoder(self, mel, cache_source=None, generator=None):
        now[0] += per_token[0] * 15
        return real_render(self, mel, cache_source, generator)

    type(t2w.vocoder).inference = slow_vocoder
    try:
        stream = t2w.stream(prompt, torch.Generator().manual_seed(0), GROWING, clock=lambda: now[0])
        tokens = [(37 * i + 11) % 256 for i in range(400)]

        def rendered_sizes(start: int, stop: int) -> list[int]:
            """Push tokens[start:stop] 5 at a time; the tokens each render took."""
            sizes = []
            for i in range(start, stop, 5):
                before = stream.offset
                stream.push(tokens[i : i + 5])
                if stream.offset != before:
                    sizes.append(stream.offset - before)
            return sizes

        sizes = rendered_sizes(0, 150)
        assert sizes and set(sizes) == {15}
        per_token[0] = 0.0  # fast again: the audio piles up ahead of playback
        grown = rendered_sizes(150, 400)
        assert grown[:3] == [15, 25, 50] and stream.level == 2
    finally:
        type(t2w.vocoder).inference = real_render


def test_incremental_audio_equals_the_reencode_schemes(t2w: Token2Wav, prompt: FlowPrompt) -> None:
    """The flow's bounded-cost stream changes the cost, not the sound: every chunk's mel
    into the vocoder equals the release's scheme's within 1e-5, for both chunk schedules,
    and so does the audio, up to the vocoder's gain on that float noise (measured: mel
    2.5e-6, audio 2.2e-5 at a peak of 0.15)."""
    from minmo_core.voice.token2wav import FIXED, GROWING

    tokens = [(37 * i + 11) % 256 for i in range(15 * 12 + 7)]
    real = t2w.vocoder.inference
    for schedule in (FIXED, GROWING):
        audio, mels = {}, {}
        for reencode in (False, True):
            mels[reencode] = []

            def spy(mel, cache_source=None, generator=None, into=mels[reencode]):
                into.append(mel.clone())
                return real(mel, cache_source, generator)

            t2w.vocoder.inference = spy
            try:
                # a clock that stands still: the growing schedule's choices depend on the
                # audio alone, not on how fast this machine renders either scheme
                stream = t2w.stream(
                    prompt, torch.Generator().manual_seed(0), schedule, reencode, lambda: 0.0
                )
                pieces = [stream.push(tokens[i : i + 9]) for i in range(0, len(tokens), 9)]
                audio[reencode] = torch.cat([*pieces, stream.flush()])
            finally:
                del t2w.vocoder.inference
            assert (stream.flow is None) == reencode
        assert len(mels[False]) == len(mels[True]) >= 5
        for ours, release in zip(mels[False], mels[True], strict=True):
            torch.testing.assert_close(ours, release, atol=1e-5, rtol=0)
        assert audio[False].shape == (2 * HOP * len(tokens),)
        torch.testing.assert_close(audio[False], audio[True], atol=1e-4, rtol=0)


def test_a_group_end_starts_the_flow_afresh_and_the_join_does_not_click(
    t2w: Token2Wav, prompt: FlowPrompt
) -> None:
    from minmo_core.voice.flow import FlowStream

    first, second = TOKENS[:40], TOKENS[40:]
    calls = []
    real = FlowStream.mel

    def spy(self, tokens, finalize=False):
        mel, start = real(self, tokens, finalize)
        calls.append((self, tokens.shape[1], finalize, mel, start))
        return mel, start

    FlowStream.mel = spy
    try:
        stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
        pieces = [stream.push(first)]
        old_flow = stream.flow
        pieces.append(stream.end_group())
        assert stream.groups == 1 and stream.tokens == [] and stream.flow is not old_flow
        pieces += [stream.push(second), stream.flush()]
    finally:
        FlowStream.mel = real
    audio = torch.cat(pieces)
    assert audio.numel() == len(TOKENS) * 2 * HOP  # every token heard once
    assert [c[1:3] for c in calls] == [
        (18, False),
        (33, False),
        (40, True),
        (18, False),
        (24, True),
    ]
    # the second group renders as a fresh utterance: its first frames are those of the
    # release's flow over the second group's tokens alone
    flow_of_second, _, _, mel, start = calls[3]
    assert flow_of_second is not old_flow and start == 0
    fresh = t2w.flow.inference(torch.tensor([second[:18]]), *prompt_args(prompt), True, False)
    torch.testing.assert_close(mel, fresh, atol=1e-5, rtol=0)
    # the vocoder ran on: the group join is cross-faded like every chunk join
    jumps = (audio[1:] - audio[:-1]).abs()
    near = torch.zeros_like(jumps, dtype=torch.bool)
    for join in stream.chunk_joins:
        near[max(0, join - 64) : join + SOURCE_CACHE + 64] = True
    typical = torch.quantile(jumps[~near], 0.999)
    assert jumps[near].max() <= 1.5 * typical, (float(jumps[near].max()), float(typical))


def prompt_args(prompt: FlowPrompt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return prompt.tokens, prompt.mel, prompt.embedding


def test_a_group_without_an_end_is_cut_at_the_cap(
    t2w: Token2Wav, prompt: FlowPrompt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing may grow the flow's keep without bound (MinMo's aligned mode has no
    sentence groups): past MAX_GROUP_TOKENS the flow starts afresh by itself."""
    import minmo_core.voice.token2wav as module

    monkeypatch.setattr(module, "MAX_GROUP_TOKENS", 40)
    tokens = [(37 * i + 11) % 256 for i in range(130)]
    stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
    longest = 0
    pieces = []
    for i in range(0, len(tokens), 7):
        pieces.append(stream.push(tokens[i : i + 7]))
        longest = max(longest, len(stream.tokens))
    pieces.append(stream.flush())
    assert stream.groups == 3 and longest <= 40
    assert torch.cat(pieces).numel() == len(tokens) * 2 * HOP


def test_a_ten_minute_reply_streams_at_a_flat_cost() -> None:
    """600 s of speech tokens (past the release's 300 s noise table) through one stream:
    no error, every token heard, and the flow never computes more than a bounded region."""
    from minmo_core.config import FlowConfig
    from minmo_core.voice.flow import FlowStream
    from minmo_core.voice.token2wav import GROWING, MAX_GROUP_TOKENS

    torch.manual_seed(0)
    flow = FlowDecoder(FlowConfig.tiny()).eval()
    vocoder = HiFTVocoder(HiFTConfig.tiny()).eval()
    t2w = Token2Wav(flow, vocoder)
    n = 600 * 25
    tokens = torch.randint(0, flow.cfg.vocab_size, (n,)).tolist()
    regions = []
    real = FlowStream.mel

    def spy(self, tokens, finalize=False):
        mel, start = real(self, tokens, finalize)
        regions.append(mel.size(2))
        return mel, start

    FlowStream.mel = spy
    try:
        stream = t2w.stream(FlowPrompt.from_voice(None, flow.cfg.spk_embed_dim), None, GROWING)
        total = sum(stream.push(tokens[i : i + 50]).numel() for i in range(0, n, 50))
        total += stream.flush().numel()
    finally:
        FlowStream.mel = real
    assert total == n * 2 * HOP
    assert stream.groups == n // MAX_GROUP_TOKENS - 1
    assert max(regions) <= 2 * (ATTENTION_CHUNK_TOKENS - 1 + 50)


def test_a_first_group_of_a_few_tokens_ends_cleanly(t2w: Token2Wav, prompt: FlowPrompt) -> None:
    stream = t2w.stream(prompt, torch.Generator().manual_seed(0))
    pieces = [stream.push(TOKENS[:2]), stream.end_group(), stream.push(TOKENS[2:40])]
    pieces += [stream.end_group(), stream.push(TOKENS[40:42]), stream.end_group(), stream.flush()]
    assert torch.cat(pieces).numel() == 42 * 2 * HOP and stream.groups == 3


def test_at_real_size_the_streamed_audio_equals_the_reencode_schemes() -> None:
    """The release's sizes (random weights): five chunks and the flush through the whole
    token2wav, incremental against re-encode, within 1e-5 (measured 1.2e-7 at a peak of
    0.05; the reduced fixture vocoder above has a higher gain on float noise)."""
    from minmo_core.config import FlowConfig

    torch.manual_seed(0)
    flow, vocoder = FlowDecoder(FlowConfig()).eval(), HiFTVocoder(HiFTConfig()).eval()
    t2w = Token2Wav(flow, vocoder)
    P = 25
    prompt = FlowPrompt(
        torch.randint(0, flow.cfg.vocab_size, (1, P)), torch.randn(1, 2 * P, 80),
        torch.randn(1, flow.cfg.spk_embed_dim),
    )  # fmt: skip
    tokens = torch.randint(0, flow.cfg.vocab_size, (15 * 5 + 3,)).tolist()
    audio = {}
    for reencode in (False, True):
        stream = t2w.stream(prompt, torch.Generator().manual_seed(0), reencode=reencode)
        audio[reencode] = torch.cat([stream.push(tokens), stream.flush()])
    assert audio[False].shape == (2 * HOP * len(tokens),)
    torch.testing.assert_close(audio[False], audio[True], atol=1e-5, rtol=0)
