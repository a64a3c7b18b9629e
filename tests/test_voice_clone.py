"""Cloning a voice: tokens, embedding and prompt mel from a reference clip; bad clips named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from minmo_core.common.audio import read_audio
from minmo_core.errors import AudioError, CheckpointError
from minmo_core.voice.mel import PROMPT_FMAX, prompt_mel, whisper_log_mel
from minmo_core.voice.voice_clone import (
    CAMPPLUS,
    SPEECH_TOKENIZER,
    VoiceCloner,
    campplus_features,
    syllabic_modulation,
)
from minmo_core.voice.voice_prompt import VoiceProfile
from tests.tiny_onnx import (
    speaker_matrix,
    tokenizer_matrix,
    write_speaker_encoder,
    write_speech_tokenizer,
)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frontend")
    write_speech_tokenizer(folder / SPEECH_TOKENIZER)
    write_speaker_encoder(folder / CAMPPLUS)
    return folder


@pytest.fixture(scope="module")
def cloner(onnx_dir: Path) -> VoiceCloner:
    return VoiceCloner.from_folder(onnx_dir, allow_unpinned=True)


@pytest.fixture(scope="module")
def prompt_wav(fixtures_dir: Path) -> Path:
    return fixtures_dir / "audio" / "cosyvoice_zero_shot_prompt.wav"  # 3.48 s, 24 kHz


@pytest.mark.parity
def test_prompt_mel_matches_the_release_feature_extractor(fixtures_dir: Path) -> None:
    io = load_file(str(fixtures_dir / "cosyvoice2_hift" / "io.safetensors"))
    mel = prompt_mel(io["prompt_wav_24k"])
    torch.testing.assert_close(mel, io["speech_feat"][0].T, atol=1e-4, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("fixture", "key", "frames"),
    [
        ("cosyvoice3_flow", "prompt_feat", lambda t: t[0]),
        ("cosyvoice3_hift", "speech_feat", lambda t: t[0].T),
    ],
)
def test_cosyvoice3_prompt_mel_matches_its_feature_extractor(
    fixtures_dir: Path, fixture, key, frames
) -> None:
    # cosyvoice3.yaml's feat_extractor: fmax null, so the filters reach 12 kHz
    io = load_file(str(fixtures_dir / fixture / "io.safetensors"))
    mel = prompt_mel(io["prompt_wav_24k"], fmax=PROMPT_FMAX[3])
    torch.testing.assert_close(mel, frames(io[key]), atol=1e-4, rtol=0)
    assert (mel - prompt_mel(io["prompt_wav_24k"])).abs().max() > 0.1  # not CosyVoice 2's


def test_a_clip_becomes_tokens_embedding_and_a_mel_of_twice_the_length(
    cloner: VoiceCloner, prompt_wav: Path
) -> None:
    voice = cloner.clone(prompt_wav, "希望你以后能够做的比我还好呦。", "demo")
    audio16k = read_audio(prompt_wav, 16000)
    feats = whisper_log_mel(torch.from_numpy(audio16k)).numpy()  # (128, frames)
    expected_tokens = (feats.T[::4] @ tokenizer_matrix()).argmax(-1)
    n = voice.speech_tokens.shape[0]
    assert voice.prompt_mel.shape == (2 * n, 80)
    assert n == min(
        prompt_mel(torch.from_numpy(read_audio(prompt_wav, 24000))).shape[0] // 2,
        expected_tokens.size,
    )
    assert voice.speech_tokens.tolist() == expected_tokens[:n].tolist()
    expected_embedding = campplus_features(audio16k).mean(0) @ speaker_matrix()
    np.testing.assert_allclose(
        voice.speaker_embedding.numpy(), expected_embedding, rtol=1e-4, atol=1e-4
    )
    mel24 = prompt_mel(torch.from_numpy(read_audio(prompt_wav, 24000)))
    torch.testing.assert_close(voice.prompt_mel, mel24[: 2 * n])


def test_any_format_rate_and_channel_count_gives_the_same_voice(
    cloner: VoiceCloner, prompt_wav: Path, tmp_path: Path
) -> None:
    audio, rate = sf.read(prompt_wav, dtype="float32")
    stereo = tmp_path / "ref.wav"
    sf.write(stereo, np.stack([audio, audio], 1), rate, subtype="FLOAT")
    flac = tmp_path / "ref.flac"
    sf.write(flac, audio, rate, subtype="PCM_24")
    a = cloner.clone(prompt_wav, "text", "a")
    b = cloner.clone(stereo, "text", "b")
    c = cloner.clone(audio, "text", "c", sample_rate=rate)
    d = cloner.clone(flac, "text", "d")  # 24-bit: the quietest mel bins move a little
    for other in (b, c):
        assert torch.equal(other.speech_tokens, a.speech_tokens)
        torch.testing.assert_close(other.prompt_mel, a.prompt_mel)
        torch.testing.assert_close(other.speaker_embedding, a.speaker_embedding)
    assert d.prompt_mel.shape == a.prompt_mel.shape
    assert float((d.prompt_mel - a.prompt_mel).abs().median()) < 1e-3


def test_a_saved_voice_reloads_without_the_original_file(
    cloner: VoiceCloner, prompt_wav: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "mine.wav"
    copy.write_bytes(prompt_wav.read_bytes())
    voice = cloner.clone(copy, "hello", "mine")
    voice.save(tmp_path / "mine.safetensors")
    copy.unlink()
    again = VoiceProfile.load(tmp_path / "mine.safetensors")
    assert again.name == "mine" and again.transcript == "hello"
    for field in ("speech_tokens", "prompt_mel", "speaker_embedding"):
        assert torch.equal(getattr(again, field), getattr(voice, field))


@pytest.fixture(scope="module")
def speech16k(fixtures_dir: Path) -> np.ndarray:
    return read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)  # 6 s speech


def clone_array(cloner: VoiceCloner, audio: np.ndarray) -> None:
    cloner.clone(audio.astype(np.float32), "text", "x", sample_rate=16000)


def test_too_short(cloner: VoiceCloner, speech16k: np.ndarray) -> None:
    with pytest.raises(AudioError, match=r"reference clip is 1\.5 s; at least 3 s"):
        clone_array(cloner, speech16k[:24000])


def test_too_long(cloner: VoiceCloner, speech16k: np.ndarray) -> None:
    with pytest.raises(AudioError, match=r"reference clip is 36 s; at most 30 s"):
        clone_array(cloner, np.tile(speech16k, 6))


def test_silent(cloner: VoiceCloner) -> None:
    with pytest.raises(AudioError, match=r"reference clip is silent \(loudest -\d+ dBFS\)"):
        clone_array(cloner, 1e-4 * np.random.default_rng(0).standard_normal(16000 * 5))


def test_clipped(cloner: VoiceCloner, speech16k: np.ndarray) -> None:
    with pytest.raises(AudioError, match=r"reference clip is clipped \(\d+\.\d% of samples"):
        clone_array(cloner, np.clip(speech16k * 8, -1, 1))


@pytest.mark.parametrize(
    "signal",
    [
        lambda t: 0.1 * np.random.default_rng(0).standard_normal(t.size),
        lambda t: 0.3 * np.sin(2 * np.pi * 220 * t),
        lambda t: 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (262, 330, 392)),
    ],
    ids=["noise", "tone", "chord"],
)
def test_not_speech(cloner: VoiceCloner, signal) -> None:
    t = np.arange(16000 * 6) / 16000
    with pytest.raises(AudioError, match="does not sound like speech"):
        clone_array(cloner, signal(t))


def test_mostly_pauses(cloner: VoiceCloner, speech16k: np.ndarray) -> None:
    with pytest.raises(AudioError, match="mostly pauses"):
        clone_array(cloner, np.concatenate([speech16k[:48000], np.zeros(16000 * 20)]))


def test_real_speech_passes_the_speech_check(speech16k: np.ndarray) -> None:
    assert syllabic_modulation(speech16k) > 0.5


def test_missing_and_broken_models_are_named(onnx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no campplus\.onnx"):
        (tmp_path / SPEECH_TOKENIZER).write_bytes((onnx_dir / SPEECH_TOKENIZER).read_bytes())
        VoiceCloner.from_folder(tmp_path, allow_unpinned=True)
    (tmp_path / CAMPPLUS).write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"campplus\.onnx is not a usable ONNX model"):
        VoiceCloner.from_folder(tmp_path, allow_unpinned=True)


def test_an_unpinned_tokenizer_is_refused(onnx_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"pinned CosyVoice2-0\.5B release has 496082973"):
        VoiceCloner.from_folder(onnx_dir)
