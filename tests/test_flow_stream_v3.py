"""CosyVoice 3's incremental flow (DiTFlowStream): its frames equal the release's re-run
scheme's (``inference`` with chunked attention) for every chunk, while each call computes
only the open chunk, its new tokens and their look-ahead."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.release_config import dit_flow_config
from minmo_core.config import DiTFlowConfig
from minmo_core.voice.flow_dit import DiTFlowDecoder, DiTFlowStream
from minmo_core.voice.prefix import Prefix
from tests.test_flow_stream import (
    bfloat16_stream_tracks_the_reencode_scheme,
    compare_every_chunk,
    reply_tokens,
)
from tests.test_flow_v3 import nested_flow


@pytest.fixture(scope="module")
def flow(fixtures_dir: Path) -> DiTFlowDecoder:
    folder = fixtures_dir / "cosyvoice3_flow"
    cfg = json.loads((folder / "config.json").read_text())
    model = DiTFlowDecoder(dit_flow_config(nested_flow(cfg)))
    model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def prompt(fixtures_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    io = load_file(str(fixtures_dir / "cosyvoice3_flow" / "io.safetensors"))
    return io["prompt_token"].long(), io["prompt_feat"], io["embedding"]


@pytest.mark.parametrize("hops", [[15] * 20, [15, 25] + [50] * 6], ids=["fixed", "growing"])
def test_every_chunk_of_a_20_chunk_reply_equals_the_rerun_scheme(flow, prompt, hops) -> None:
    stream = flow.stream(*prompt)
    assert isinstance(stream, DiTFlowStream)
    computed = compare_every_chunk(flow, prompt, hops, atol=2e-5)
    ratio, chunk = flow.cfg.token_mel_ratio, stream.chunk_tokens
    assert chunk * ratio == flow.cfg.static_chunk_size  # 50 frames: 25 tokens
    # a call computes the open chunk and its new tokens, never the reply so far
    assert max(computed[2:]) <= ratio * (chunk - 1 + max(hops))


def test_a_chunk_size_that_is_not_whole_tokens_keeps_regions_on_both_grids(prompt) -> None:
    torch.manual_seed(0)
    cfg = replace(DiTFlowConfig.tiny(), static_chunk_size=7, spk_embed_dim=192, depth=2)
    flow = DiTFlowDecoder(cfg).eval()
    assert flow.stream(*prompt).chunk_tokens == 7  # 14 frames: two attention chunks
    compare_every_chunk(flow, prompt, [5, 9, 15, 4, 20], atol=2e-5)


def test_the_first_chunks_at_the_releases_widths_equal_the_rerun_scheme() -> None:
    torch.manual_seed(0)
    # random weights, the release's widths, heads and chunk (2 of its 22 blocks: the same
    # per-block code, a tenth of the time)
    flow = DiTFlowDecoder(replace(DiTFlowConfig(), depth=2)).eval()
    P = 10
    prompt = (
        reply_tokens(P, flow.cfg.vocab_size, seed=1),
        torch.randn(1, 2 * P, 80),
        torch.randn(1, flow.cfg.spk_embed_dim),
    )
    compare_every_chunk(flow, prompt, [15, 15], atol=1e-4)  # the second after a kept chunk


def test_a_call_costs_the_same_however_long_the_reply(flow, prompt) -> None:
    """The estimator's query frames per call depend on where the call falls in a chunk,
    not on the reply's length."""
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
    assert per_call[10:15] == per_call[25:30]  # 5 calls of 15 tokens = 3 chunks: it repeats
    assert max(per_call[5:]) < 2 * 15 * flow.cfg.token_mel_ratio + flow.cfg.static_chunk_size


def test_bfloat16_stream_runs_in_bfloat16_and_tracks_the_rerun_scheme(flow, prompt) -> None:
    bfloat16_stream_tracks_the_reencode_scheme(flow, prompt)


def test_changed_tokens_and_a_finished_stream_are_refused(flow, prompt) -> None:
    tokens = reply_tokens(60, flow.cfg.vocab_size)
    stream = flow.stream(*prompt)
    stream.mel(tokens[:, :43])  # 12 prompt + 40 - 3: the first 25 tokens are kept
    changed = tokens.clone()
    changed[0, 5] = (changed[0, 5] + 1) % flow.cfg.vocab_size
    with pytest.raises(ValueError, match="changed"):
        stream.mel(changed[:, :58])
    stream.mel(tokens, finalize=True)
    with pytest.raises(RuntimeError, match="finalised"):
        stream.mel(tokens, finalize=True)


def test_estimator_regions_equal_one_pass(flow) -> None:
    """The DiT over a region after a kept prefix gives the frames of one pass over all."""
    dit = flow.decoder.estimator
    g = torch.Generator().manual_seed(3)
    T, split = 130, 100  # two complete 50-frame chunks kept, then a region of 30
    x, mu, cond = (torch.randn(2, 80, T, generator=g) for _ in range(3))
    spks, t = torch.randn(2, 80, generator=g), torch.tensor([0.3, 0.3])
    with torch.inference_mode():
        whole = dit(x, mu, t, spks, cond, streaming=True)
        kept: dict = {}
        first = dit(x[..., :split], mu[..., :split], t, spks, cond[..., :split], True,
                    Prefix(0, split, kept))  # fmt: skip
        rest = dit(x[..., split:], mu[..., split:], t, spks, cond[..., split:], True,
                   Prefix(split, 0, kept))  # fmt: skip
    torch.testing.assert_close(torch.cat([first, rest], dim=2), whole, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="chunked"):
        dit(x, mu, t, spks, cond, False, Prefix(split, 0, kept))
