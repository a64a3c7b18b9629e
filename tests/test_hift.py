"""HiFTVocoder against the golden fixture of the official HiFTGenerator (reduced size)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.common.releases import COSYVOICE2
from minmo_core.config import HiFTConfig
from minmo_core.errors import CheckpointError
from minmo_core.voice.hift import HiFTVocoder, SourceDraws, load_hift_state, load_vocoder

FIXTURE_CFG = HiFTConfig(base_channels=64, f0_cond_channels=64)  # the fixture's reduced widths
REAL_PARAMS = 20_821_295  # the fixture README's count for the full-size model (with weight norm)


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> Path:
    return fixtures_dir / "cosyvoice2_hift"


@pytest.fixture(scope="module")
def io(fixture: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fixture / "io.safetensors"))


@pytest.fixture(scope="module")
def weights(fixture: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(fixture / "weights.safetensors")


def fixture_model(weights: dict[str, torch.Tensor]) -> HiFTVocoder:
    """A fresh copy (deepcopy shares a parametrized module's class, which
    remove_weight_norm edits)."""
    model = HiFTVocoder(FIXTURE_CFG)
    load_into(model, load_hift_state(weights), Path("weights.safetensors"))
    return model.eval()


@pytest.fixture(scope="module")
def vocoder(weights: dict[str, torch.Tensor]) -> HiFTVocoder:
    return fixture_model(weights)


def recorded_draws(io: dict[str, torch.Tensor]) -> SourceDraws:
    return SourceDraws(initial_phase=io["sinegen_rand_ini_raw"], noise=io["sinegen_noise_randn"])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parity
def test_f0_matches_reference(vocoder: HiFTVocoder, io: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        f0 = vocoder.f0_predictor(io["speech_feat"])
    assert max_diff(f0, io["f0"]) < 1e-3  # Hz, values ~100


@pytest.mark.parity
def test_f0_upsampling_and_voicing_match_reference(
    vocoder: HiFTVocoder, io: dict[str, torch.Tensor]
) -> None:
    with torch.inference_mode():
        _, uv = vocoder.m_source.sine_waves(io["f0"], recorded_draws(io))
    torch.testing.assert_close(vocoder.m_source.upsample(io["f0"]), io["f0_upsampled"])
    torch.testing.assert_close(uv, io["uv"])


@pytest.mark.parity
def test_sine_waves_and_source_from_recorded_draws(
    vocoder: HiFTVocoder, io: dict[str, torch.Tensor]
) -> None:
    draws = recorded_draws(io)
    with torch.inference_mode():
        sine_waves, _ = vocoder.m_source.sine_waves(io["f0"], draws)
        source = vocoder.m_source(io["f0"], draws=draws)
    assert max_diff(sine_waves, io["sine_waves"]) < 1e-5
    assert max_diff(source, io["source"]) < 1e-5


@pytest.mark.parity
def test_seed_draws_in_the_release_order(vocoder: HiFTVocoder, io: dict[str, torch.Tensor]) -> None:
    generator = torch.Generator().manual_seed(int(io["seed"]))
    with torch.inference_mode():
        source = vocoder.m_source(io["f0"], generator=generator)
    assert max_diff(source, io["source"]) < 1e-5


@pytest.mark.parity
def test_source_stft_matches_reference(vocoder: HiFTVocoder, io: dict[str, torch.Tensor]) -> None:
    assert max_diff(vocoder.source_stft(io["source"]), io["s_stft"]) < 1e-5


@pytest.mark.parity
def test_conv_post_output_matches_reference(
    vocoder: HiFTVocoder, io: dict[str, torch.Tensor]
) -> None:
    with torch.inference_mode():
        out = vocoder.predict_spectrum(io["speech_feat"], io["s_stft"])
    assert max_diff(out, io["conv_post_out"]) < 1e-5


@pytest.mark.parity
def test_decode_from_recorded_source_matches_reference_speech(
    vocoder: HiFTVocoder, io: dict[str, torch.Tensor]
) -> None:
    with torch.inference_mode():
        speech = vocoder.decode(io["speech_feat"], io["source"])
    assert max_diff(speech, io["speech"]) < 1e-5


@pytest.mark.parity
def test_cache_source_replaces_the_start_of_the_source(
    vocoder: HiFTVocoder, io: dict[str, torch.Tensor]
) -> None:
    generator = torch.Generator().manual_seed(7)
    whole, source = vocoder.inference(io["speech_feat"], io["source"], generator)
    assert max_diff(whole, io["speech"]) < 1e-5
    torch.testing.assert_close(source, io["source"], rtol=0, atol=0)
    head = io["source"][:, :, : 8 * 480]
    _, source = vocoder.inference(io["speech_feat"], head, generator)
    torch.testing.assert_close(source[:, :, : head.shape[2]], head, rtol=0, atol=0)


@pytest.mark.parity
def test_removing_weight_norm_keeps_the_output(
    weights: dict[str, torch.Tensor], io: dict[str, torch.Tensor]
) -> None:
    folded = fixture_model(weights).remove_weight_norm()
    assert not any(".parametrizations." in key for key in folded.state_dict())
    with torch.inference_mode():
        speech = folded.decode(io["speech_feat"], io["source"])
    assert max_diff(speech, io["speech"]) < 1e-5


@pytest.mark.parity
def test_legacy_weight_norm_keys_and_generator_prefix_load(
    vocoder: HiFTVocoder, weights: dict[str, torch.Tensor], io: dict[str, torch.Tensor]
) -> None:
    legacy = {
        "generator."
        + key.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): value
        for key, value in weights.items()
    }
    assert any(key.endswith(".weight_g") for key in legacy)
    model = HiFTVocoder(FIXTURE_CFG)
    load_into(model, load_hift_state(legacy), Path("legacy.pt"))
    with torch.inference_mode():
        speech = model.eval().decode(io["speech_feat"], io["source"])
    assert max_diff(speech, io["speech"]) < 1e-5


@pytest.mark.parity
def test_load_vocoder_reads_widths_and_refuses_unpinned_files(
    tmp_path: Path, weights: dict[str, torch.Tensor], io: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "hift.pt"
    torch.save({f"generator.{key}": value for key, value in weights.items()}, path)
    with pytest.raises(CheckpointError, match="pinned"):
        load_vocoder(path)
    model = load_vocoder(tmp_path, allow_unpinned=True)
    assert model.cfg == FIXTURE_CFG
    with torch.inference_mode():
        speech = model.decode(io["speech_feat"], io["source"])
    assert max_diff(speech, io["speech"]) < 1e-5


def test_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(
    tmp_path: Path, weights: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "hift.pt"
    torch.save(weights, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_vocoder(path, allow_unpinned=True)


def test_output_is_clipped_to_the_audio_limit(
    weights: dict[str, torch.Tensor], io: dict[str, torch.Tensor]
) -> None:
    loud = fixture_model(weights)
    with torch.no_grad():
        loud.conv_post.bias[:9] += 6.0  # magnitudes e^6 (clipped to 100): far beyond ±1
        speech = loud.decode(io["speech_feat"], io["source"])
    assert speech.abs().max().item() == pytest.approx(FIXTURE_CFG.audio_limit)


def test_shapes_follow_the_mel_length_and_batch_items_are_independent() -> None:
    torch.manual_seed(0)
    model = HiFTVocoder(HiFTConfig.tiny()).eval()
    mel = torch.randn(2, 80, 7)
    audio, source = model.inference(mel)
    assert audio.shape == (2, 7 * 480) and source.shape == (2, 1, 7 * 480)
    with torch.inference_mode():
        first = model.decode(mel[:1], source[:1])
    torch.testing.assert_close(first, audio[:1], rtol=0, atol=1e-6)


def test_real_size_parameter_count_fits_the_release_file() -> None:
    with torch.device("meta"):
        model = HiFTVocoder(HiFTConfig())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == REAL_PARAMS
    overhead = (
        COSYVOICE2.files["hift.pt"].pin.size - 4 * n_params
    )  # float32 values; the rest is pickle metadata
    assert 0 < overhead < 0.01 * COSYVOICE2.files["hift.pt"].pin.size
