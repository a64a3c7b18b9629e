"""FlowDecoder against the official CausalMaskedDiffWithXvec (golden fixture), and its loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into
from minmo_core.common.release_config import flow_config
from minmo_core.common.releases import COSYVOICE2
from minmo_core.config import FlowConfig
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.voice.flow import ATTENTION_CHUNK_TOKENS, FlowDecoder, load_flow
from minmo_core.voice.flow_decoder import NOISE_FRAMES, fixed_noise

# name -> (tokens passed, streaming, finalize), as the fixture's README lists the calls
CALLS = {
    "nonstream": (44, False, True),
    "stream_chunk1": (41, True, False),
    "stream_finalize": (44, True, True),
}


def release_config(raw: dict) -> FlowConfig:
    """A FlowConfig from the fixture's constructor kwargs (names as in cosyvoice2.yaml)."""
    flow, enc, cfm = raw["flow"], raw["encoder"], raw["decoder"]
    est = cfm["estimator"]
    assert enc["static_chunk_size"] == ATTENTION_CHUNK_TOKENS
    assert est["static_chunk_size"] == flow["token_mel_ratio"] * ATTENTION_CHUNK_TOKENS
    assert (
        est["in_channels"] == 4 * flow["output_size"] and cfm["spk_emb_dim"] == est["out_channels"]
    )
    assert flow["input_size"] == enc["output_size"] == enc["input_size"]
    return flow_config(flow, enc, cfm)


@pytest.fixture(scope="module")
def fixture_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "cosyvoice2_flow"


@pytest.fixture(scope="module")
def raw_config(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def golden(fixture_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fixture_dir / "io.safetensors"))


@pytest.fixture(scope="module")
def flow(fixture_dir: Path, raw_config: dict) -> FlowDecoder:
    model = FlowDecoder(release_config(raw_config)).eval()
    path = fixture_dir / "weights.safetensors"
    load_into(model, load_file(str(path)), path)  # strict
    return model


@pytest.fixture(scope="module")
def mels(flow: FlowDecoder, golden: dict) -> dict[str, torch.Tensor]:
    """Our output for each of the fixture's three calls."""
    return {
        name: flow.inference(
            golden["token"][:, :n],
            golden["prompt_token"],
            golden["prompt_feat"],
            golden["embedding"],
            streaming=streaming,
            finalize=finalize,
        )
        for name, (n, streaming, finalize) in CALLS.items()
    }


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CALLS))
def test_encoder_output_matches_official(flow: FlowDecoder, golden: dict, name: str) -> None:
    n, streaming, finalize = CALLS[name]
    assert golden[f"{name}.token_len"].item() == n
    with torch.inference_mode():
        h = flow.encode(golden["token"][:, :n], golden["prompt_token"], streaming, finalize)
        mu = flow.encoder_proj(h)
    torch.testing.assert_close(h, golden[f"{name}.encoder_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(mu, golden[f"{name}.mu"], atol=1e-5, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["nonstream", "stream_chunk1"])
def test_estimator_matches_official(flow: FlowDecoder, golden: dict, name: str) -> None:
    assert bool((golden[f"{name}.est_mask"] == 1).all())  # unpadded: our estimator has no mask
    with torch.inference_mode():
        v = flow.decoder.estimator(
            golden[f"{name}.est_x"],
            golden[f"{name}.est_mu"],
            golden[f"{name}.est_t"],
            golden[f"{name}.est_spks"],
            golden[f"{name}.est_cond"],
            streaming=CALLS[name][1],
        )
    torch.testing.assert_close(v, golden[f"{name}.est_out"], atol=1e-4, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CALLS))
def test_mel_matches_official(mels: dict, golden: dict, name: str) -> None:
    assert mels[name].dtype == torch.float32
    torch.testing.assert_close(mels[name], golden[f"{name}.feat"], atol=2e-4, rtol=0)


@pytest.mark.parity
def test_euler_steps_follow_the_release_cosine_schedule(flow: FlowDecoder, golden: dict) -> None:
    times: list[float] = []
    hook = flow.decoder.estimator.register_forward_hook(
        lambda module, args, out: times.append(float(args[2][0]))
    )
    try:
        flow.inference(
            golden["token"][:, :4],
            golden["prompt_token"],
            golden["prompt_feat"],
            golden["embedding"],
        )
    finally:
        hook.remove()
    torch.testing.assert_close(torch.tensor(times), golden["nonstream.t_steps"], atol=1e-7, rtol=0)


def test_streamed_chunk_frames_equal_a_later_streamed_call(mels: dict) -> None:
    # 12 prompt + 41 tokens, 3 of them look-ahead: 50 tokens = 2 whole chunks = 100 frames.
    # With the fixed noise and chunk-causal attention, those frames do not change when more
    # tokens arrive (the look-ahead tokens were already seen as context).
    first = mels["stream_chunk1"]  # (1, 80, 76): 100 frames less 24 prompt frames
    torch.testing.assert_close(
        first, mels["stream_finalize"][:, :, : first.size(2)], atol=1e-5, rtol=0
    )


def test_fixed_noise_is_the_release_noise_and_leaves_the_global_rng_alone(golden: dict) -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    noise = fixed_noise(80, 112)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(noise, golden["rand_noise_prefix"])
    noise.add_(1.0)  # a caller's in-place change must not reach the next call
    assert torch.equal(fixed_noise(80, 112), golden["rand_noise_prefix"])


def test_replies_past_300_s_get_the_table_again_instead_of_failing() -> None:
    long = fixed_noise(80, 2 * NOISE_FRAMES + 7)
    assert long.shape == (1, 80, 2 * NOISE_FRAMES + 7)
    table = fixed_noise(80, NOISE_FRAMES)
    assert torch.equal(long[:, :, :NOISE_FRAMES], table)
    assert torch.equal(long[:, :, NOISE_FRAMES : 2 * NOISE_FRAMES], table)
    assert torch.equal(long[:, :, 2 * NOISE_FRAMES :], table[:, :, :7])


def test_release_config_is_flowconfig_default_with_its_parameter_count(raw_config: dict) -> None:
    cfg = release_config(raw_config["real_full_size"])
    assert cfg == FlowConfig()
    with torch.device("meta"):
        model = FlowDecoder(cfg)
    state = model.state_dict()
    n_values = sum(t.numel() for t in state.values())
    assert (len(state), n_values) == (1121, 112_549_360)  # the fixture README's full size
    # flow.pt holds these as float32 plus ~0.4 MB of zip and pickle framing
    assert 0 < COSYVOICE2.files["flow.pt"].pin.size - 4 * n_values < 500_000
    # load_flow builds on the meta device: nothing may be left for to_empty() to skip
    assert not list(model.buffers())


def test_tiny_config_streams_the_expected_frames() -> None:
    cfg = FlowConfig.tiny()
    model = FlowDecoder(cfg).eval()
    prompt, feat = torch.arange(5)[None], torch.randn(1, 10, cfg.output_size)
    speaker = torch.randn(1, cfg.spk_embed_dim)
    tokens = torch.arange(7)[None]
    streamed = model.inference(tokens, prompt, feat, speaker, streaming=True, finalize=False)
    final = model.inference(tokens, prompt, feat, speaker)
    assert streamed.shape == (1, cfg.output_size, 2 * (7 - cfg.pre_lookahead_len))
    assert final.shape == (1, cfg.output_size, 2 * 7)
    assert torch.isfinite(final).all()


def test_prompt_mel_must_have_two_frames_per_prompt_token(flow: FlowDecoder, golden: dict) -> None:
    with pytest.raises(ValueError, match="2 frames per token"):
        flow.inference(
            golden["token"],
            golden["prompt_token"],
            golden["prompt_feat"][:, :20],
            golden["embedding"],
        )


def test_estimator_with_several_unet_stages_is_refused() -> None:
    with pytest.raises(ConfigError, match="one U-Net stage"):
        FlowDecoder(FlowConfig(estimator_channels=(256, 256)))


@pytest.fixture
def flow_pt(tmp_path: Path, fixture_dir: Path) -> Path:
    """The fixture's weights saved the way the release ships them: a torch.save'd dict."""
    path = tmp_path / "flow.pt"
    torch.save(load_file(str(fixture_dir / "weights.safetensors")), path)
    return path


def test_load_flow_reads_a_torch_checkpoint(
    flow_pt: Path, flow: FlowDecoder, raw_config: dict
) -> None:
    loaded = load_flow(flow_pt, release_config(raw_config), allow_unpinned=True)
    assert not loaded.training
    own = flow.state_dict()
    assert all(torch.equal(t, own[k]) for k, t in loaded.state_dict().items())


@pytest.mark.parametrize("allow_unpinned", [False, True])
def test_truncated_flow_pt_names_the_file(
    flow_pt: Path, raw_config: dict, allow_unpinned: bool
) -> None:
    data = flow_pt.read_bytes()
    flow_pt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_flow(flow_pt, release_config(raw_config), allow_unpinned=allow_unpinned)
    assert str(flow_pt) in str(err.value)
