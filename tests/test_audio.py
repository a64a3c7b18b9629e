"""Audio in: formats, rates, channels, streaming in bounded memory, silence, bad files."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from minmo_core.common.audio import (
    is_silent,
    read_audio,
    resample,
    split_stream,
    stream_audio,
    to_mono_float32,
)
from minmo_core.errors import AudioError


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.array([0, 16384, -32768], np.int16), [0.0, 0.5, -1.0]),
        (np.array([128, 192, 0], np.uint8), [0.0, 0.5, -1.0]),
        (np.array([0, 2**30, -(2**31)], np.int32), [0.0, 0.5, -1.0]),
        (np.array([0.0, 0.5, -1.0], np.float64), [0.0, 0.5, -1.0]),
        (np.array([[0.2, 0.4], [-1.0, 1.0]], np.float32), [0.3, 0.0]),
    ],
)
def test_any_width_and_channel_count_becomes_mono_float(data: np.ndarray, expected: list) -> None:
    out = to_mono_float32(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_nan_samples_are_rejected() -> None:
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_mono_float32(np.array([0.0, np.nan], np.float32))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_pitch(rate: int) -> None:
    out = resample(tone(440, 1.0, rate), rate, 16000)
    assert abs(out.size - 16000) <= 1
    assert abs(dominant_hz(out, 16000) - 440) < 2


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 44100, 2),
        ("WAV", "PCM_24", 8000, 1),
        ("WAV", "FLOAT", 48000, 1),
        ("FLAC", "PCM_16", 22050, 2),
        ("OGG", "VORBIS", 32000, 1),
    ],
)
def test_files_of_any_format_rate_and_channels_load_as_16k_mono(
    tmp_path: Path, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    signal = tone(300, 1.5, rate)
    data = np.stack([signal] * channels, axis=1) if channels > 1 else signal
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    audio = read_audio(path, 16000)
    assert abs(audio.size - 24000) <= 2
    assert abs(dominant_hz(audio, 16000) - 300) < 2


def test_streamed_file_equals_the_whole_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, 44100 * 7).astype(np.float32), 44100)
    whole = read_audio(path, 16000)
    streamed = np.concatenate(list(stream_audio(path, 16000, block_seconds=1.0)))
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_segments_cover_the_stream_in_order_and_cut_in_quiet_places() -> None:
    rate = 16000
    pieces = []
    for i in range(12):  # 12 x (4 s of tone + 0.4 s of silence)
        pieces += [tone(200 + 20 * i, 4.0, rate), np.zeros(int(0.4 * rate), np.float32)]
    audio = np.concatenate(pieces)
    blocks = np.array_split(audio, 37)
    segments = list(split_stream(blocks, rate, max_seconds=10.0, search_seconds=5.0))
    assert len(segments) >= 6
    assert all(s.audio.size <= 10 * rate for s in segments)
    np.testing.assert_array_equal(np.concatenate([s.audio for s in segments]), audio)
    starts = [round(s.start * rate) for s in segments]
    assert starts == list(np.cumsum([0] + [s.audio.size for s in segments[:-1]]))
    for s in segments[:-1]:  # every cut lands in a silent gap, not inside a tone
        assert np.abs(s.audio[-80:]).max() == 0.0


def test_a_long_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    rate = 16000
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as f:
        for _ in range(60):
            f.write(tone(250, 10.0, rate, 0.3))
    full_float_bytes = 600 * rate * 4  # 38 MB if it were read whole
    tracemalloc.start()
    total = 0
    for segment in split_stream(stream_audio(path, rate), rate, max_seconds=30.0):
        total += segment.audio.size
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 600 * rate
    assert peak < full_float_bytes / 5


def test_silence_and_near_silence_are_detected() -> None:
    rng = np.random.default_rng(0)
    assert is_silent(np.zeros(16000, np.float32), 16000)
    assert is_silent((1e-4 * rng.standard_normal(16000)).astype(np.float32), 16000)
    assert not is_silent(tone(200, 1.0, 16000, 0.05), 16000)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nothere\.wav does not exist"):
        read_audio(tmp_path / "nothere.wav", 16000)


def test_a_file_that_is_not_audio_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording")
    with pytest.raises(AudioError, match=r"notes\.wav is not a readable audio file"):
        read_audio(path, 16000)


def test_an_empty_recording_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav contains no samples"):
        read_audio(path, 16000)


def test_a_file_over_the_length_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 5, np.int16), 16000)
    with pytest.raises(AudioError, match=r"is 5 s long; at most 2 s"):
        read_audio(path, 16000, max_seconds=2)
