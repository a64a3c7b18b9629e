"""CosyVoice 3's causal vocoder (CausalHiFTGenerator) against the official code's golden
fixture, built with the sizes in the fixture's config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minmo_core.common.checkpoints import load_into
from minmo_core.common.release_config import hift_config
from minmo_core.voice.hift import load_hift_state
from minmo_core.voice.hift_causal import CausalHiFTVocoder, NoiseTable


@pytest.fixture(scope="module")
def folder(fixtures_dir: Path) -> Path:
    return fixtures_dir / "cosyvoice3_hift"


@pytest.fixture(scope="module")
def golden(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "io.safetensors"))


@pytest.fixture(scope="module")
def vocoder(folder: Path, golden: dict) -> CausalHiFTVocoder:
    constructor = json.loads((folder / "config.json").read_text())["constructor"]
    model = CausalHiFTVocoder(hift_config(constructor, causal=True))
    load_into(model, load_hift_state(load_file(str(folder / "weights.safetensors"))), folder)
    # the release draws its noise table at construction; the fixture recorded the one it used
    model.m_source.noise = NoiseTable(9, fixed=golden["sinegen_noise_rand"])
    return model.eval()


@pytest.mark.parity
def test_f0_is_the_official_float64_prediction(vocoder, golden) -> None:
    mel = golden["speech_feat"]
    f0 = vocoder.f0_predictor.to(torch.float64)(mel.double())
    torch.testing.assert_close(f0, golden["f0_f64"], atol=1e-9, rtol=0)
    assert vocoder.predict_f0(mel).dtype == torch.float32


@pytest.mark.parity
def test_source_and_speech_match_official_inference(vocoder, golden) -> None:
    mel = golden["speech_feat"]
    sine_waves, uv = vocoder.m_source.sine_waves(golden["f0"])
    torch.testing.assert_close(uv, golden["uv"], atol=0, rtol=0)
    torch.testing.assert_close(sine_waves, golden["sine_waves"], atol=2e-5, rtol=0)
    speech, source = vocoder.inference(mel)
    torch.testing.assert_close(source, golden["source"], atol=2e-5, rtol=0)
    torch.testing.assert_close(speech, golden["speech"], atol=1e-5, rtol=0)
    # given the official source, the filter alone is tight
    spectrum = vocoder.predict_spectrum(mel, vocoder.source_stft(golden["source"]))
    torch.testing.assert_close(spectrum, golden["conv_post_out"], atol=1e-4, rtol=1e-4)
    decoded = vocoder.decode(mel, golden["source"])
    torch.testing.assert_close(decoded, golden["speech"], atol=1e-5, rtol=0)


@pytest.mark.parity
def test_the_streaming_chunk_matches_official_and_is_a_prefix_of_the_whole(vocoder, golden) -> None:
    frames = int(golden["stream_chunk1.mel_frames"])
    mel = golden["speech_feat"][:, :, :frames]
    speech, source = vocoder.inference(mel, finalize=False)
    assert speech.shape == golden["stream_chunk1.speech"].shape  # (20 - 3 - 4 - 1) x 480
    torch.testing.assert_close(source, golden["stream_chunk1.source"], atol=2e-5, rtol=0)
    torch.testing.assert_close(speech, golden["stream_chunk1.speech"], atol=1e-5, rtol=0)
    decoded = vocoder.decode(mel[:, :, :-3], golden["stream_chunk1.source"], finalize=False)
    torch.testing.assert_close(decoded, golden["stream_chunk1.speech"], atol=1e-5, rtol=0)
    whole, _ = vocoder.inference(golden["speech_feat"])
    torch.testing.assert_close(speech, whole[:, : speech.shape[1]], atol=1e-5, rtol=0)


def test_our_noise_table_is_the_same_at_every_position_and_uniform() -> None:
    table = NoiseTable(9, seed=3)
    whole = table.rows(0, 60000, "cpu", torch.float32)
    torch.testing.assert_close(table.rows(23990, 100, "cpu", torch.float32), whole[:, 23990:24090])
    assert whole.min() >= 0 and whole.max() < 1 and abs(float(whole.mean()) - 0.5) < 0.01
    assert not torch.equal(whole, NoiseTable(9, seed=4).rows(0, 60000, "cpu", torch.float32))


def test_real_size_matches_the_release(folder: Path) -> None:
    real = json.loads((folder / "config.json").read_text())["real_full_size"]
    with torch.device("meta"):
        model = CausalHiFTVocoder(hift_config(real, causal=True))
    state = model.state_dict()
    assert len(state) == real["state_dict"]["tensors"]  # 328
    assert sum(t.numel() for t in state.values()) == real["state_dict"]["values"]  # 20,779,887


def test_a_stream_equals_the_whole_utterance_and_keeps_a_bounded_window(vocoder, golden):
    """Mel arriving in pieces (15-token chunks, then irregular ones): the audio is the
    whole utterance's within float rounding, and each call re-runs a window that does not
    grow with the utterance (the release re-runs everything so far)."""
    import copy

    vocoder = copy.deepcopy(vocoder)
    vocoder.m_source.noise = NoiseTable(9)  # ours: as long as any utterance
    noise = torch.Generator().manual_seed(1)
    mel = torch.cat([golden["speech_feat"]] * 8, dim=2)  # 240 frames, 4.8 s
    mel = mel + 0.05 * torch.randn(mel.shape, generator=noise)
    whole, _ = vocoder.inference(mel)
    for sizes in ([30] * 8, [1, 7, 3, 40, 2, 30, 50, 9, 60, 38]):
        stream, pieces, at, windows = vocoder.stream(), [], 0, []
        for n in sizes:
            pieces.append(stream.push(mel[:, :, at : at + n], finalize=at + n == mel.size(2)))
            windows.append(stream.mel.size(2))
            at += n
        audio = torch.cat(pieces, dim=1)
        assert audio.shape == whole.shape
        torch.testing.assert_close(audio, whole, atol=1e-6, rtol=0)
        assert max(windows) <= 24 + 8 + 8 + max(sizes)  # context, F0's, held back, new
    with pytest.raises(RuntimeError, match="finalised"):
        stream.push(mel[:, :, :1])
