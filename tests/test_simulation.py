"""The acoustic echo scenarios: exact components, levels, ground truth and determinism."""

from __future__ import annotations

import shutil
import time
from dataclasses import fields

import numpy as np
import pytest

from app.audio.events import MIC_RATE, PLAYBACK_RATE
from app.bench import simulation as sim
from app.bench.simulation import (
    CONDITIONS,
    KINDS,
    EspeakNotFoundError,
    make_scenario,
    room_acoustics,
)

FRAME = MIC_RATE // 100


def _frame_db(x: np.ndarray, n: int) -> np.ndarray:
    frames = x[: len(x) // n * n].astype(np.float64).reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def _level(x: np.ndarray, mask: np.ndarray) -> float:
    frames = x[: len(mask) * FRAME].astype(np.float64).reshape(-1, FRAME)
    return 10 * np.log10(np.mean(frames[mask] ** 2))


def _own_level(x: np.ndarray) -> float:
    """Active level gated on the signal itself (frames within 30 dB of its loudest)."""
    p = _frame_db(x, FRAME)
    return _level(x, p > p.max() - 30)


def _after(raw: np.ndarray, frames: int) -> np.ndarray:
    """raw, or at most ``frames`` frames after a raw frame."""
    out = raw.copy()
    for k in range(1, frames + 1):
        out[k:] |= raw[:-k]
    return out


def _long_pauses(raw: np.ndarray) -> np.ndarray:
    """Frames of pauses longer than 100 ms, past their first 50 ms (the hangover)."""
    out = np.zeros_like(raw)
    edges = np.flatnonzero(np.diff(np.concatenate([[1], raw.astype(int), [1]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):  # [a, b): a run of inactive frames
        if b - a > 10:
            out[a + 5 if a > 0 else a : b] = True
    return out


def _rising(active: np.ndarray) -> np.ndarray:
    return np.flatnonzero(active[1:] & ~active[:-1]) + 1


def test_conditions_span_rooms_reverberation_geometries_and_noise():
    assert len(CONDITIONS) >= 6
    assert len({c.name for c in CONDITIONS}) == len(CONDITIONS)
    rt60 = [c.rt60 for c in CONDITIONS]
    assert min(rt60) <= 0.25 and max(rt60) >= 0.7
    volumes = [np.prod(c.room_dim) for c in CONDITIONS]
    assert min(volumes) < 30 and max(volumes) > 100
    assert all(5 <= c.echo_db <= 15 for c in CONDITIONS)
    geometries = {(c.room_dim, c.loudspeakers, c.mic_pos, c.talker_pos) for c in CONDITIONS}
    assert len(geometries) >= 3
    for g in geometries:
        same = [c for c in CONDITIONS if (c.room_dim, c.loudspeakers, c.mic_pos, c.talker_pos) == g]
        assert {c.noise_snr_db is None for c in same} == {True, False}, same
    assert {c.noise_kind for c in CONDITIONS if c.noise_snr_db is not None} == {"pink", "babble"}
    assert sim.condition(CONDITIONS[3].name) is CONDITIONS[3]
    with pytest.raises(ValueError, match="not inside room"):
        sim.Condition("bad", (3, 3, 3), 0.3, (1, 1, 1), (1, 1, 4), (2, 2, 1), None, 10.0)


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: c.name)
def test_simulated_room_has_the_conditions_reverberation(cond):
    a = room_acoustics(cond)
    assert abs(a.rt60_measured / cond.rt60 - 1) < 0.08, a
    assert 0 < a.echo_delay_ms < 5 and 0 < a.near_delay_ms < 10
    assert a.rir_ms > 0.8 * cond.rt60 * 1000 / 2  # at least the first 30 dB of the decay


@pytest.mark.parametrize("kind", KINDS)
def test_components_add_up_to_the_mic_signal(kind):
    cond = sim.condition("laptop_small_office_noisy")
    s = make_scenario(cond, kind, seconds=8.0, seed=1)
    n16, n24 = 8 * MIC_RATE, 8 * PLAYBACK_RATE
    for name in ("mic_16k", "echo_16k", "near_16k", "noise_16k", "near_dry_16k"):
        x = getattr(s, name)
        assert x.dtype == np.float32 and x.shape == (n16,), name
    assert s.far_end_24k.dtype == np.float32 and s.far_end_24k.shape == (n24,)
    assert s.near_active.shape == s.far_active.shape == (800,)
    assert s.near_active.dtype == s.far_active.dtype == np.bool_
    np.testing.assert_allclose(s.mic_16k, s.echo_16k + s.near_16k + s.noise_16k, atol=1e-6)
    assert np.abs(s.mic_16k).max() < 1.0
    assert s.kind == kind and s.condition is cond and s.seconds == pytest.approx(8.0)
    has_far, has_near = kind != "near_only", kind != "single_talk"
    assert np.any(s.far_end_24k) == has_far == np.any(s.echo_16k) == s.far_active.any()
    assert np.any(s.near_16k) == has_near == np.any(s.near_dry_16k) == bool(s.near_onsets)
    assert np.any(s.noise_16k)
    # the noise is at the condition's SNR against the near end's active level
    noise_db = 10 * np.log10(np.mean(s.noise_16k.astype(np.float64) ** 2))
    assert noise_db == pytest.approx(sim.NEAR_LEVEL_DBFS - cond.noise_snr_db, abs=0.1)


def test_far_end_length_matches_the_scenario_at_24k():
    for seconds in (5.0, 12.34, 20.0):
        s = make_scenario(CONDITIONS[0], "single_talk", seconds=seconds, seed=2)
        assert len(s.far_end_24k) == round(seconds * PLAYBACK_RATE)
        assert len(s.mic_16k) == round(seconds * MIC_RATE)
        assert len(s.far_active) == round(seconds * 100)


def test_echo_is_the_far_end_through_the_echo_path():
    s = make_scenario(sim.condition("desktop_speakers_home_office"), "single_talk", 6.0, seed=3)
    import soxr

    far16 = soxr.resample(s.far_end_24k, PLAYBACK_RATE, MIC_RATE)
    expected = np.convolve(far16, s.echo_rir_16k)[: len(s.echo_16k)]
    np.testing.assert_allclose(s.echo_16k, expected, atol=1e-5)


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: c.name)
def test_echo_to_near_ratio_matches_the_condition(cond):
    s = make_scenario(cond, "double_talk", seconds=10.0, seed=4)
    # by definition: active levels over the ground-truth activity of each source
    ratio = _level(s.echo_16k, s.far_active) - _level(s.near_16k, s.near_active)
    assert ratio == pytest.approx(cond.echo_db, abs=1.0)
    # and gated on each image itself
    assert _own_level(s.echo_16k) - _own_level(s.near_16k) == pytest.approx(cond.echo_db, abs=1.0)
    assert _level(s.near_16k, s.near_active) == pytest.approx(sim.NEAR_LEVEL_DBFS, abs=0.01)
    # the same absolute levels in single talk (the same echo, seed for seed)
    single = make_scenario(cond, "single_talk", seconds=10.0, seed=4)
    np.testing.assert_array_equal(single.echo_16k, s.echo_16k)
    np.testing.assert_array_equal(single.noise_16k, s.noise_16k)
    if cond.noise_snr_db is not None:
        noise_db = 10 * np.log10(np.mean(s.noise_16k.astype(np.float64) ** 2))
        assert _level(s.near_16k, s.near_active) - noise_db == pytest.approx(
            cond.noise_snr_db, abs=0.1
        )
    assert np.abs(s.mic_16k).max() < 1.0


@pytest.mark.parametrize("seed", [0, 5])
def test_near_active_is_where_the_dry_near_end_has_energy(seed):
    s = make_scenario(CONDITIONS[0], "double_talk", seconds=20.0, seed=seed)
    p = _frame_db(s.near_dry_16k, FRAME)
    raw = (p > p.max() - 30) & (p > -70)
    assert raw.sum() > 200
    assert np.all(s.near_active[raw])  # every frame with speech energy is active
    # what is added: gaps of up to 100 ms and a 50 ms hangover, nothing further from speech
    near_speech = _after(raw, 15)
    assert not np.any(s.near_active & ~near_speech)
    assert s.near_active.sum() < raw.sum() * 1.5
    silent = _frame_db(s.near_dry_16k, FRAME) < -150  # exactly zero
    assert silent.sum() > 500
    assert not np.any(s.near_active[silent & ~near_speech])
    assert not np.any(s.near_active[_long_pauses(raw)])
    # far end: the same rule on the playback signal (24 kHz frames of 240 samples)
    pf = _frame_db(s.far_end_24k, PLAYBACK_RATE // 100)
    far_raw = (pf > pf.max() - 30) & (pf > -70)
    assert np.all(s.far_active[far_raw])
    assert not np.any(s.far_active & ~_after(far_raw, 15))
    assert not np.any(s.far_active[_long_pauses(far_raw)])
    assert np.any(s.far_active & ~far_raw)  # pauses inside sentences, hangovers
    assert 0.6 < s.far_active.mean() < 0.97  # far end throughout, with pauses


def test_single_talk_has_no_near_end_activity():
    s = make_scenario(CONDITIONS[2], "single_talk", seconds=10.0, seed=0)
    assert not s.near_active.any() and s.near_onsets == [] and s.near_utterances == []
    assert not np.any(s.near_dry_16k) and not np.any(s.near_16k)


@pytest.mark.parametrize("kind", ["double_talk", "near_only"])
def test_onsets_fall_where_near_active_turns_on(kind):
    s = make_scenario(CONDITIONS[1], kind, seconds=20.0, seed=6)
    onsets = np.asarray(s.near_onsets)
    assert len(onsets) >= 4
    assert onsets[0] >= 2.0 and np.all(np.diff(onsets) >= 1.5)
    frames = np.round(onsets * 100).astype(int)
    np.testing.assert_allclose(frames / 100, onsets)
    assert np.all(s.near_active[frames]) and not np.any(s.near_active[frames - 1])
    # every other rising edge is a pause inside one of the utterances
    for edge in _rising(s.near_active):
        assert any(a <= edge / 100 < b for a, b in s.near_utterances), edge
    for (a, b), onset in zip(s.near_utterances, onsets, strict=True):
        assert a == onset and 0.9 <= b - a <= 3.1
        assert np.all(s.near_active[round(a * 100) : round(b * 100)][[0, -1]])
    assert s.near_utterances[-1][1] <= 20.0


def test_near_dry_is_time_aligned_with_the_near_end_at_the_mic():
    s = make_scenario(CONDITIONS[0], "near_only", seconds=10.0, seed=7)
    dry, wet = s.near_dry_16k.astype(np.float64), s.near_16k.astype(np.float64)
    lags = np.arange(-40, 41)
    corr = [np.dot(dry[40:-40], wet[40 + k : len(wet) - 40 + k]) for k in lags]
    assert lags[int(np.argmax(corr))] == 0


def test_same_seed_same_scenario_different_seed_different_content():
    cond = sim.condition("speakerphone_meeting_room_noisy")
    a = make_scenario(cond, "double_talk", seconds=8.0, seed=11)
    b = make_scenario(cond, "double_talk", seconds=8.0, seed=11)
    c = make_scenario(cond, "double_talk", seconds=8.0, seed=12)
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name
    assert not np.array_equal(a.far_end_24k, c.far_end_24k)
    assert not np.array_equal(a.near_dry_16k, c.near_dry_16k)
    assert not np.array_equal(a.noise_16k, c.noise_16k)
    # near-only with the same seed holds the same user speech as double talk
    near = make_scenario(cond, "near_only", seconds=8.0, seed=11)
    np.testing.assert_array_equal(near.near_16k, a.near_16k)
    assert near.near_onsets == a.near_onsets


def test_real_speech_clips_can_be_the_near_end(fixtures_dir):
    clips = sorted((fixtures_dir / "audio").glob("*.wav"))
    assert clips
    tts = make_scenario(CONDITIONS[0], "near_only", seconds=20.0, seed=3)
    real = make_scenario(CONDITIONS[0], "near_only", seconds=20.0, seed=3, real_speech=clips)
    assert not np.array_equal(tts.near_dry_16k, real.near_dry_16k)
    assert len(real.near_onsets) >= 3 and real.near_onsets[0] >= 2.0
    assert all(0.9 <= b - a <= 3.1 for a, b in real.near_utterances)
    frames = np.round(np.asarray(real.near_onsets) * 100).astype(int)
    assert np.all(real.near_active[frames]) and not np.any(real.near_active[frames - 1])


def test_missing_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(EspeakNotFoundError, match=r"espeak-ng not found.*apt-get install"):
        make_scenario(CONDITIONS[0], "single_talk", seconds=5.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_scenario(CONDITIONS[0], "crosstalk")
    with pytest.raises(ValueError, match="at least 5 s"):
        make_scenario(CONDITIONS[0], "double_talk", seconds=3.0)


def test_a_20_s_scenario_is_quick_once_the_speech_is_cached():
    cond = sim.condition("speakerphone_meeting_room_noisy")
    make_scenario(cond, "double_talk", seed=20)  # warm the caches
    start = time.perf_counter()
    make_scenario(cond, "double_talk", seed=21)
    assert time.perf_counter() - start < 2.0


def test_the_unseen_conditions_clip_the_loudspeaker_and_drift_the_clock():
    """The two conditions the audio path was never tuned on: the laptop's speakers driven
    into clipping (the echo is no longer a linear function of the far end: peaks flattened),
    and a microphone clock 100 ppm fast (the echo slides later, 1.6 samples per second)."""
    from app.audio.aec import estimate_delay

    linear = make_scenario(sim.condition("laptop_small_office"), "single_talk", 20.0, seed=1)
    clipped = make_scenario(sim.condition("laptop_clipping_speakers"), "single_talk", 20.0,
                            seed=1)  # fmt: skip
    np.testing.assert_array_equal(linear.far_end_24k, clipped.far_end_24k)

    def crest(x: np.ndarray) -> float:
        return float(np.max(np.abs(x)) / np.sqrt(np.mean(x**2)))

    assert crest(clipped.echo_16k) < 0.8 * crest(linear.echo_16k)
    a = np.dot(clipped.echo_16k, linear.echo_16k) / np.dot(linear.echo_16k, linear.echo_16k)
    misfit = clipped.echo_16k - a * linear.echo_16k  # what no linear echo path explains
    assert np.dot(misfit, misfit) > 0.01 * np.dot(clipped.echo_16k, clipped.echo_16k)

    still = make_scenario(sim.condition("desktop_speakers_home_office"), "single_talk", 20.0,
                          seed=1)  # fmt: skip
    drifting = make_scenario(sim.condition("desktop_usb_mic_clock_drift"), "single_talk", 20.0,
                             seed=1)  # fmt: skip
    for start_s in (1.0, 16.0):
        span = slice(int(start_s * MIC_RATE), int((start_s + 3) * MIC_RATE))
        lag, strength = estimate_delay(still.echo_16k[span], drifting.echo_16k[span], 200)
        expected = 100e-6 * (start_s + 1.5) * MIC_RATE  # at the span's middle
        assert strength > 0.3 and abs(lag - expected) <= 2, (start_s, lag, expected)
