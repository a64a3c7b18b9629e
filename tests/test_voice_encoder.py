"""VoiceEncoder against the official SenseVoiceSmall (golden fixture), and its own rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.config import VoiceEncoderConfig
from minmo_core.understanding.voice_encoder import VoiceEncoder, ctc_greedy


@pytest.fixture(scope="module")
def golden(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fixtures_dir / "sensevoice" / "io.safetensors"))


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> VoiceEncoder:
    model = VoiceEncoder(VoiceEncoderConfig.tiny()).eval()
    state = load_file(str(fixtures_dir / "sensevoice" / "weights.safetensors"))
    model.load_state_dict(state, strict=True)
    return model


def _capture(model: VoiceEncoder) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    enc = model.encoder
    points = {
        "encoders0_out": enc.encoders0[0],
        "encoders_last_out": enc.encoders[-1],
        "after_norm_out": enc.after_norm,
        "tp_encoders_last_out": enc.tp_encoders[-1],
    }
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
        for name, module in points.items()
    ]
    return seen, handles


@pytest.mark.parity
@pytest.mark.parametrize(
    ("prefix", "language", "use_itn"), [("", "auto", False), ("en_itn.", "en", True)]
)
def test_encoder_and_ctc_match_official(
    model: VoiceEncoder, golden: dict, prefix: str, language: str, use_itn: bool
) -> None:
    feats = golden["feats"][None]
    assert model.query_ids(language, use_itn) == golden[prefix + "query_ids"].tolist()
    seen, handles = _capture(model)
    with torch.no_grad():
        states, log_probs, lengths = model(feats, golden["feats_len"].long(), language, use_itn)
    for h in handles:
        h.remove()
    assert lengths.tolist() == golden["encoder_out_lens"].tolist()
    torch.testing.assert_close(states, golden[prefix + "encoder_out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(log_probs, golden[prefix + "ctc_log_probs"], atol=1e-4, rtol=0)
    if not prefix:
        for name, value in seen.items():
            torch.testing.assert_close(value, golden[name], atol=1e-4, rtol=0, msg=name)
    ids = ctc_greedy(log_probs[0], int(lengths[0]))
    assert ids == golden[prefix + "ctc_greedy_token_ids"].tolist()


def test_padded_batch_gives_each_item_its_unpadded_result(model: VoiceEncoder) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(1, 25, 560), torch.randn(1, 13, 560)
    batch = torch.zeros(2, 25, 560)
    batch[0], batch[1, :13] = a[0], b[0]
    batch[1, 13:] = 50.0  # garbage in the padding must not leak into valid frames
    with torch.no_grad():
        out, _, lengths = model(batch, torch.tensor([25, 13]))
        alone_a, _, _ = model(a, torch.tensor([25]))
        alone_b, _, _ = model(b, torch.tensor([13]))
    assert lengths.tolist() == [29, 17]
    torch.testing.assert_close(out[0], alone_a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :17], alone_b[0], atol=1e-5, rtol=0)


def test_ctc_greedy_merges_repeats_drops_blanks_and_stops_at_length() -> None:
    path = [0, 5, 5, 0, 5, 7, 7, 0, 3, 9]
    log_probs = torch.full((len(path), 10), -10.0)
    log_probs[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert ctc_greedy(log_probs, length=9) == [5, 5, 7, 3]


def test_real_size_matches_the_release_tensor_layout() -> None:
    with torch.device("meta"):
        model = VoiceEncoder(VoiceEncoderConfig())
    state = model.state_dict()
    assert len(state) == 917
    assert sum(t.numel() for t in state.values()) == 233_999_167
    assert state["embed.weight"].shape == (16, 560)
    assert state["encoder.encoders0.0.self_attn.linear_q_k_v.weight"].shape == (1536, 560)
    assert state["encoder.encoders.48.self_attn.fsmn_block.weight"].shape == (512, 1, 11)
    assert state["encoder.tp_encoders.19.feed_forward.w_1.weight"].shape == (2048, 512)
    assert state["ctc.ctc_lo.weight"].shape == (25055, 512)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float16_on_the_gpu_tracks_the_official_float32_output(
    model: VoiceEncoder, golden: dict
) -> None:
    gpu = VoiceEncoder(VoiceEncoderConfig.tiny()).eval()
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.to("cuda", torch.float16)
    with torch.no_grad():
        states, log_probs, lengths = gpu(
            golden["feats"][None].cuda().half(), torch.tensor([25]).cuda()
        )
    torch.testing.assert_close(states.float().cpu(), golden["encoder_out"], atol=5e-2, rtol=0)
    ids = ctc_greedy(log_probs[0].float(), int(lengths[0]))
    assert ids == golden["ctc_greedy_token_ids"].tolist()
