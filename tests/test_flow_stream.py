"""The incremental flow (FlowStream): its frames equal the release's re-encode scheme's for
every chunk, while each call computes only the open chunk and its look-ahead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.config import FlowConfig
from minmo_core.voice.flow import ATTENTION_CHUNK_TOKENS, FlowDecoder
from minmo_core.voice.flow_decoder import NOISE_FRAMES, CausalConv1d, Estimator, fixed_noise
from minmo_core.voice.flow_encoder import FlowEncoder
from minmo_core.voice.prefix import Prefix
from tests.test_flow import release_config


@pytest.fixture(scope="module")
def flow(fixtures_dir: Path) -> FlowDecoder:
    folder = fixtures_dir / "cosyvoice2_flow"
    model = FlowDecoder(release_config(json.loads((folder / "config.json").read_text())))
    load_into(model, load_state_dict(folder / "weights.safetensors"), folder)
    return model.eval()


@pytest.fixture(scope="module")
def prompt(fixtures_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    io = load_file(str(fixtures_dir / "cosyvoice2_flow" / "io.safetensors"))
    return io["prompt_token"].long(), io["prompt_feat"], io["embedding"]


def reply_tokens(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def compare_every_chunk(flow, prompt, hops: list[int], atol: float) -> list[int]:
    """Stream ``hops`` tokens at a time (3 of look-ahead each call, the last call final) and
    check every call against ``inference``; returns the frames each call computed."""
    lookahead = flow.cfg.pre_lookahead_len
    tokens = reply_tokens(sum(hops) + lookahead, flow.cfg.vocab_size)
    stream = flow.stream(*prompt)
    computed, upto = [], 0
    for i, hop in enumerate(hops):
        upto += hop
        final = i == len(hops) - 1
        seen = tokens[:, : upto if final else upto + lookahead]
        mel, first = stream.mel(seen, final)
        whole = flow.inference(seen, *prompt, streaming=True, finalize=final)
        assert mel.dtype == torch.float32
        assert first + mel.size(2) == whole.size(2)  # every frame to the end
        torch.testing.assert_close(mel, whole[:, :, first:], atol=atol, rtol=0)
        computed.append(mel.size(2))
    return computed


@pytest.mark.parametrize("hops", [[15] * 40, [15, 25] + [50] * 12], ids=["fixed", "growing"])
def test_every_chunk_of_a_40_chunk_reply_equals_the_reencode_scheme(flow, prompt, hops) -> None:
    computed = compare_every_chunk(flow, prompt, hops, atol=1e-5)
    ratio, chunk = flow.cfg.token_mel_ratio, ATTENTION_CHUNK_TOKENS
    # a call computes the open chunk and its new tokens, never the reply so far
    assert max(computed[2:]) <= ratio * (chunk - 1 + max(hops))


def test_the_first_three_chunks_at_real_size_equal_the_reencode_scheme() -> None:
    torch.manual_seed(0)
    flow = FlowDecoder(FlowConfig()).eval()  # random weights, the release's sizes
    P = 25
    prompt = (
        reply_tokens(P, flow.cfg.vocab_size, seed=1),
        torch.randn(1, 2 * P, 80),
        torch.randn(1, flow.cfg.spk_embed_dim),
    )
    compare_every_chunk(flow, prompt, [15] * 3, atol=1e-5)  # kept prefixes of 25 and 50


def test_a_call_costs_the_same_however_long_the_reply(flow, prompt) -> None:
    """The estimator's query frames per call (its cost, but for reading the kept keys)
    depend on where the call falls in a 25-token chunk, not on the reply's length."""
    frames: list[int] = []
    hook = flow.decoder.estimator.register_forward_hook(
        lambda module, args, out: frames.append(args[0].size(2))
    )
    try:
        stream = flow.stream(*prompt)
        tokens = reply_tokens(3 + 15 * 30, flow.cfg.vocab_size)
        for k in range(1, 31):
            stream.mel(tokens[:, : 15 * k + 3])
    finally:
        hook.remove()
    per_call = frames[:: flow.cfg.n_timesteps]  # one estimator call per Euler step
    period = 5  # 5 calls of 15 tokens = 3 chunks of 25: the pattern repeats
    assert per_call[10:15] == per_call[25:30]
    assert max(per_call[period:]) < 2 * 15 * flow.cfg.token_mel_ratio + 50


def bfloat16_stream_tracks_the_reencode_scheme(flow, prompt) -> None:
    """A bfloat16 copy of ``flow`` streams in bfloat16 (float32 Euler state) and stays
    within 0.1 of its own re-encode scheme for 4 chunks (either release's flow)."""
    half = type(flow)(flow.cfg).eval()
    half.load_state_dict(flow.state_dict())
    half.to(torch.bfloat16)
    dtypes: set[torch.dtype] = set()
    hook = half.decoder.estimator.register_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype)
    )
    try:
        tokens = reply_tokens(15 * 4 + 3, flow.cfg.vocab_size)
        stream = half.stream(*prompt)
        for k in range(1, 5):
            seen = tokens[:, : 15 * k + 3]
            mel, first = stream.mel(seen)
            whole = half.inference(seen, *prompt, streaming=True, finalize=False)
            assert mel.dtype == torch.float32  # the Euler state stays float32
            torch.testing.assert_close(mel, whole[:, :, first:], atol=0.1, rtol=0)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}


def test_bfloat16_stream_runs_in_bfloat16_and_tracks_the_reencode_scheme(flow, prompt) -> None:
    bfloat16_stream_tracks_the_reencode_scheme(flow, prompt)


def test_changed_tokens_and_a_finished_stream_are_refused(flow, prompt) -> None:
    tokens = reply_tokens(60, flow.cfg.vocab_size)
    stream = flow.stream(*prompt)
    stream.mel(tokens[:, :43])  # 12 prompt + 40: the first 50 tokens are kept
    changed = tokens.clone()
    changed[0, 5] = (changed[0, 5] + 1) % flow.cfg.vocab_size
    with pytest.raises(ValueError, match="changed"):
        stream.mel(changed[:, :58])
    with pytest.raises(ValueError, match="new tokens"):
        stream.mel(tokens[:, :41])  # nothing past what is kept
    stream.mel(tokens, finalize=True)
    with pytest.raises(RuntimeError, match="finalised"):
        stream.mel(tokens, finalize=True)


def test_encoder_regions_equal_one_pass(flow) -> None:
    """Streaming equals batch for the encoder alone: chunk-aligned regions with the kept
    prefix give the frames of one chunked pass over the whole sequence."""
    encoder: FlowEncoder = flow.encoder
    torch.manual_seed(3)
    x = torch.randn(1, 90, flow.cfg.input_size)  # 90 tokens, all with their look-ahead
    lookahead = flow.cfg.pre_lookahead_len
    with torch.inference_mode():
        whole = encoder(x[:, :-lookahead], x[:, -lookahead:], streaming=True)  # (1, 174, D)
        kept: tuple[dict, dict] = ({}, {})
        out, start = [], 0
        for end in (25, 50, 75, 87):
            keep = end // 25 * 25 - start
            prefixes = (Prefix(start, keep, kept[0]), Prefix(2 * start, 2 * keep, kept[1]))
            h = encoder(x[:, start:end], x[:, end : end + lookahead], True, prefixes)
            out.append(h[:, : 2 * keep] if end < 87 else h)
            start += keep
    torch.testing.assert_close(torch.cat(out, dim=1), whole, atol=1e-5, rtol=0)


def test_estimator_regions_equal_one_pass(flow) -> None:
    """Streaming equals batch for the estimator: complete 50-frame chunks kept, the open one
    computed, over three regions."""
    estimator: Estimator = flow.decoder.estimator
    torch.manual_seed(4)
    T = 170
    x, mu, cond = (torch.randn(2, 80, T) for _ in range(3))
    t, spks = torch.rand(2), torch.randn(2, 80)
    with torch.inference_mode():
        whole = estimator(x, mu, t, spks, cond, streaming=True)
        kept: dict = {}
        out, start = [], 0
        for end in (60, 130, 170):
            keep = end // 50 * 50 - start if end < T else 0
            prefix = Prefix(start, keep, kept)
            region = slice(start, end)
            v = estimator(
                x[:, :, region], mu[:, :, region], t, spks, cond[:, :, region], True, prefix
            )
            out.append(v[:, :, :keep] if end < T else v)
            start += keep
    torch.testing.assert_close(torch.cat(out, dim=2), whole, atol=1e-5, rtol=0)


def test_a_causal_convolution_keeps_its_left_context() -> None:
    conv = CausalConv1d(4, 6, 3)
    x = torch.randn(1, 4, 20)
    with torch.no_grad():
        whole = conv(x)
        kept: dict = {}
        first = conv(x[:, :, :7], Prefix(0, 7, kept))
        second = conv(x[:, :, 7:], Prefix(7, 0, kept))
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole)


def test_fixed_noise_from_any_frame_is_the_same_noise(flow) -> None:
    long = fixed_noise(80, NOISE_FRAMES + 40)
    torch.testing.assert_close(fixed_noise(80, 30, 100), long[:, :, 100:130], atol=0, rtol=0)
    across = fixed_noise(80, 20, NOISE_FRAMES - 10)  # the table's end and its wrap
    torch.testing.assert_close(across, long[:, :, NOISE_FRAMES - 10 : NOISE_FRAMES + 10])
