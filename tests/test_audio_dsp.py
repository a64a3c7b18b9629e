"""The audio thread's DSP: far-end alignment, delay estimation, echo cancellation, VAD,
barge-in rules, and the whole processor on simulated rooms."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio.aec import FarEndBuffer, SpeexEchoCanceller, estimate_delay
from app.audio.events import AudioSettings, BargeIn, FalseBargeIn, SpeechEnded, SpeechStarted
from app.audio.processor import BargeInDetector, VoiceActivity
from app.bench.audio import erle_db, latencies, run_scene
from app.bench.simulation import condition, make_scenario

FRAME_S = 0.01


def test_far_end_is_read_back_by_the_time_it_was_played() -> None:
    buffer = FarEndBuffer(seconds=1.0)
    ramp = np.arange(1, 1601, dtype=np.float32)
    for i, n in enumerate([0, 120, 170, 160, 150]):  # uneven blocks, as a resampler emits
        start = sum([0, 120, 170, 160, 150][:i])
        buffer.push(ramp[start : start + n], start / 16000)
    np.testing.assert_array_equal(buffer.read(0.0, 5), ramp[:5])
    np.testing.assert_array_equal(buffer.read(290 / 16000, 3), ramp[290:293])
    tail = buffer.read(595 / 16000, 10)  # past what was played: silence
    np.testing.assert_array_equal(tail, np.r_[ramp[595:600], np.zeros(5, np.float32)])


def test_a_pause_in_playback_reads_as_silence() -> None:
    buffer = FarEndBuffer(seconds=1.0)
    ones = np.ones(160, np.float32)
    buffer.push(ones, 0.0)
    buffer.push(2 * ones, 0.5)  # nothing was played between 0.01 s and 0.5 s
    assert buffer.read(0.2, 160).sum() == 0.0
    np.testing.assert_array_equal(buffer.read(0.5, 160), 2 * ones)


def test_delay_estimate_finds_the_echo_lag() -> None:
    rng = np.random.default_rng(0)
    far = rng.standard_normal(16000 * 2).astype(np.float32)
    lag = 1234
    mic = 0.3 * np.r_[np.zeros(lag), far[:-lag]] + 0.05 * rng.standard_normal(far.size)
    found, strength = estimate_delay(far, mic.astype(np.float32), max_lag=4000)
    assert found == lag and strength > 0.3


def test_speex_canceller_converges_on_an_echo_path() -> None:
    rng = np.random.default_rng(1)
    far = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    path = np.zeros(800)
    path[40], path[300] = 0.6, -0.2
    echo = np.convolve(far, path)[: far.size].astype(np.float32)
    canceller = SpeexEchoCanceller(160, 200)
    out = np.concatenate(
        [canceller.process(echo[i : i + 160], far[i : i + 160]) for i in range(0, far.size, 160)]
    )
    late = slice(16000 * 2, None)
    erle = 10 * np.log10(np.dot(echo[late], echo[late]) / np.dot(out[late], out[late]))
    assert erle > 20.0


def test_echo_cancellation_off_passes_the_microphone_through() -> None:
    from app.audio.aec import NoEchoCanceller
    from app.audio.processor import AudioProcessor

    rng = np.random.default_rng(2)
    mic = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    processors = [AudioProcessor(AudioSettings(echo_cancellation=on)) for on in (True, False)]
    assert isinstance(processors[1].canceller, NoEchoCanceller)
    assert isinstance(processors[0].canceller, SpeexEchoCanceller)
    far = np.zeros(160, np.float32)
    passed = [processors[1].canceller.process(mic[i : i + 160], far) for i in range(0, 1600, 160)]
    np.testing.assert_array_equal(np.concatenate(passed), mic[:1600])


def feed_vad(vad: VoiceActivity, pattern: str) -> list:
    events = []
    for i, c in enumerate(pattern):
        events += vad.update(c == "1", i * FRAME_S)
    return events


def test_vad_starts_after_the_start_time_and_ends_after_the_hangover() -> None:
    settings = AudioSettings(vad_start_ms=60, vad_hangover_ms=100, vad_padding_ms=0)
    vad = VoiceActivity(settings, FRAME_S)
    events = feed_vad(vad, "0011" + "0" + "1" * 20 + "0" * 12)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert [e.time for e in started] == [pytest.approx(0.05)]  # 2 frames alone did not start it
    assert len(ended) == 1
    assert ended[0].time == pytest.approx(0.25)  # after the last speech frame (0.24)
    assert ended[0].duration == pytest.approx(0.20)


def test_vad_padding_back_dates_a_start_but_not_into_the_last_utterance() -> None:
    settings = AudioSettings(vad_start_ms=30, vad_hangover_ms=50, vad_padding_ms=200)
    vad = VoiceActivity(settings, FRAME_S)
    events = feed_vad(vad, "0" * 50 + "1" * 10 + "0" * 10 + "1" * 10 + "0" * 10)
    starts = [e.time for e in events if isinstance(e, SpeechStarted)]
    ends = [e.time for e in events if isinstance(e, SpeechEnded)]
    assert starts[0] == pytest.approx(0.50 - 0.20)
    assert starts[1] == pytest.approx(ends[0])  # 0.60 - 0.20 would reach into the first one


def run_detector(detector: BargeInDetector, pattern: str, start: float = 0.0) -> list:
    events = []
    for i, c in enumerate(pattern):
        events += detector.update(c == "1", start + i * FRAME_S)
    return events


def settings(**kw) -> AudioSettings:
    return AudioSettings(
        bargein_warmup_ms=300, bargein_min_speech_ms=100, bargein_false_ms=500, **kw
    )


def test_no_barge_in_during_the_warm_up_or_when_not_speaking() -> None:
    idle = BargeInDetector(settings(), FRAME_S)
    assert run_detector(idle, "1" * 50) == []  # the assistant is not speaking
    warm = BargeInDetector(settings(), FRAME_S)
    warm.playback_started(0.0)
    assert run_detector(warm, "1" * 25) == []  # speech inside the 300 ms warm-up


def test_sustained_speech_barges_in_and_short_gaps_are_bridged() -> None:
    detector = BargeInDetector(settings(), FRAME_S)
    detector.playback_started(0.0)
    events = run_detector(detector, "0" * 40 + "11111" + "00" + "11111" + "1" * 60)
    (barge,) = [e for e in events if isinstance(e, BargeIn)]
    assert barge.speech_onset == pytest.approx(0.40)
    assert barge.time == pytest.approx(0.50)  # 100 ms of speech, the 20 ms gap included
    assert not [e for e in events if isinstance(e, FalseBargeIn)]  # the user kept talking


def test_a_blip_is_not_a_barge_in_and_silence_after_one_is_a_false_one() -> None:
    detector = BargeInDetector(settings(), FRAME_S)
    detector.playback_started(0.0)
    # a gap longer than BRIDGE_FRAMES (4) splits the two blips
    assert run_detector(detector, "0" * 40 + "1111" + "00000" + "1111" + "0" * 20) == []
    events = run_detector(detector, "1" * 10 + "0" * 60, start=1.0)
    assert [type(e) for e in events] == [BargeIn, FalseBargeIn]


@pytest.fixture(scope="module")
def laptop():
    return condition("laptop_small_office")


def test_echo_alone_never_interrupts_the_assistant(laptop) -> None:
    scene = make_scenario(laptop, "single_talk", 30.0, seed=3)
    run = run_scene(scene)
    assert run.bargeins == []
    assert erle_db(scene, run) > 20.0


def test_a_user_talking_over_playback_interrupts_within_250_ms(laptop) -> None:
    """Once the canceller has converged (the first seconds of a session's first reply), every
    interruption is caught within 250 ms; before that, within 600 ms."""
    scene = make_scenario(laptop, "double_talk", 30.0, seed=3)
    found, missed = latencies(scene, run_scene(scene))
    assert missed == 0 and len(found) == len(scene.near_onsets) >= 5
    converged = [lat for lat, onset in zip(found, scene.near_onsets, strict=True) if onset > 6]
    assert len(converged) >= 5 and max(converged) <= 0.25
    assert max(found) <= 0.6


def test_a_misreported_device_latency_is_measured_and_corrected(laptop) -> None:
    import dataclasses

    scene = make_scenario(laptop, "single_talk", 20.0, seed=4)
    late = 3000  # the device plays 187.5 ms later than it reports
    shifted = dataclasses.replace(
        scene,
        mic_16k=np.r_[np.zeros(late, np.float32), scene.mic_16k[:-late]],
        echo_16k=np.r_[np.zeros(late, np.float32), scene.echo_16k[:-late]],
        noise_16k=np.r_[np.zeros(late, np.float32), scene.noise_16k[:-late]],
    )
    run = run_scene(shifted, AudioSettings(aec_tail_ms=200))
    assert run.processor.measured_delay_ms == pytest.approx(1000 * late / 16000, abs=10)
    after = slice(16000 * 10, run.clean.size)  # the canceller re-converged after the fix
    echo, residual = shifted.echo_16k[after], run.clean[after]
    assert 10 * np.log10(np.dot(echo, echo) / np.dot(residual, residual)) > 20.0


def test_the_canceller_works_without_the_imp_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.12 removed ``imp``, which the speexdsp package's wrapper imports."""
    import sys

    from app.audio import aec

    monkeypatch.setitem(sys.modules, "imp", None)  # `import imp` now fails, as on 3.12
    aec._speexdsp.cache_clear()
    canceller = SpeexEchoCanceller(160, 200)
    out = canceller.process(np.zeros(160, np.float32), np.zeros(160, np.float32))
    assert out.shape == (160,) and out.dtype == np.float32


def test_scattered_blips_do_not_interrupt_however_long_they_last() -> None:
    """Gaps of two frames are bridged, but speech must also fill 80% of the window: a run of
    '1100' (residual echo flickering) never interrupts, steady speech does."""
    detector = BargeInDetector(settings(), FRAME_S)
    detector.playback_started(0.0)
    assert run_detector(detector, "0" * 40 + "1100" * 30) == []
    events = run_detector(detector, "0" * 10 + "1" * 12, start=1.6)
    assert [type(e) for e in events] == [BargeIn]


def test_with_headphones_speech_over_the_reply_interrupts_it() -> None:
    """No echo comes back (headphones): the microphone stays quiet while the reply plays, so
    the user's voice over it is a barge-in without double-talk proof; with the same voice
    and a speaker whose echo fills the room, the gate still decides."""
    from app.audio.processor import AudioProcessor
    from app.bench.models import speech_like_audio

    def run(echo_gain: float) -> tuple[list, AudioProcessor]:
        events: list = []
        processor = AudioProcessor(AudioSettings(), events.append)
        reply = speech_like_audio(4.0, seed=5)  # what the assistant says, at 16 kHz
        user = np.concatenate([np.zeros(16000 * 2, np.float32), speech_like_audio(1.5, seed=9)])
        rng = np.random.default_rng(0)
        processor.playback_started(0.0)
        processor.push_far_end(reply, 0.0)
        for i in range(user.size // 160):
            sl = slice(i * 160, (i + 1) * 160)
            mic = user[sl] + echo_gain * reply[sl] + 1e-4 * rng.standard_normal(160)
            processor.process(mic.astype(np.float32), i * 0.01)
        return events, processor

    events, processor = run(0.0)
    assert processor.no_echo
    barge = next(e for e in events if isinstance(e, BargeIn))
    assert 2.0 < barge.time < 2.5  # soon after the user began, 2 s in
    _, with_echo = run(0.5)
    assert not with_echo.no_echo  # a loud echo: the double-talk gate stays on


def test_the_noise_floor_rises_back_from_a_deep_dip_within_its_window() -> None:
    """One very quiet frame (a device's first buffer) then a background that never dips
    below -56 dBFS: the floor reaches the background's quietest frames within the 3 s
    window, where rising at 2 dB per second alone would still sit 30 dB under them."""
    from app.audio.processor import NOISE_WINDOW_FRAMES, AudioProcessor

    processor = AudioProcessor(AudioSettings())
    processor._track_noise(-90.0)
    assert processor.noise_db == -90.0  # down at once
    rng = np.random.default_rng(0)
    background = -50.0 + rng.uniform(-6.0, 6.0, NOISE_WINDOW_FRAMES + 50)
    for level in background:
        processor._track_noise(float(level))
    assert -56.0 <= processor.noise_db <= -52.0
    processor._track_noise(-70.0)
    assert processor.noise_db >= -56.0  # one quiet frame is not the floor any more
    for _ in range(NOISE_WINDOW_FRAMES):
        processor._track_noise(-70.0)
    assert processor.noise_db == pytest.approx(-70.0, abs=0.1)  # a quieter room is followed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_interruption_early_in_the_first_reply_is_caught(seed: int) -> None:
    """The user talks 2.0-2.6 s into the session's first reply, in the hardest room (a
    speakerphone whose echo is 15 dB over the user): the canceller is still converging,
    the residue is loud and speech-like, and the gate must still hear the user."""
    scene = make_scenario(condition("speakerphone_meeting_room"), "double_talk", 6.0, seed)
    run = run_scene(scene)
    first = scene.near_onsets[0]
    assert first < 3.0
    hits = [b.time - first for b in run.bargeins if 0.0 <= b.time - first <= 2.0]
    assert hits and min(hits) <= 0.4, (first, [b.time for b in run.bargeins])


def test_a_loudspeaker_driven_into_distortion_does_not_interrupt_the_assistant() -> None:
    """Clipping leaves bursts of residue no linear filter removes, unlike the echo's shape
    and louder than the canceller's good moments promise: they must not pass as the user."""
    scene = make_scenario(condition("laptop_clipping_speakers"), "single_talk", 20.0, seed=0)
    run = run_scene(scene)
    assert run.bargeins == [], [b.time for b in run.bargeins]
    assert run.processor.erle_worst_db < run.processor.CONVERGED_DB <= run.processor.erle_db


def test_the_far_end_is_read_between_samples_for_a_fractional_shift() -> None:
    """The fractional read is a delay, exact to -60 dB across the voice band (the echo
    canceller's ERLE stays far above that, so it never sees the interpolation)."""
    for hz in (300.0, 3000.0):
        buffer = FarEndBuffer(seconds=1.0)
        t = np.arange(8000) / 16000
        buffer.push(np.sin(2 * np.pi * hz * t).astype(np.float32), 0.0)
        for shift in (0.0, 1.0, 0.25, 0.5, 2.75):
            read = buffer.read(0.1, 160, shift)
            expected = np.sin(2 * np.pi * hz * (np.arange(1600, 1760) - shift) / 16000)
            np.testing.assert_allclose(read, expected, atol=1e-3)
    assert buffer.read(0.1, 160, 0.5).dtype == np.float32


def test_a_drifting_microphone_clock_is_measured_and_followed() -> None:
    """A USB microphone whose clock runs 100 ppm fast against the speakers': the echo slides
    1.6 samples later each second, which no fixed filter can follow. The delay checks'
    lags give the skew, the far end is then read on the microphone's clock, and the
    canceller works again; with one clock, no skew is found."""
    drifting = make_scenario(condition("desktop_usb_mic_clock_drift"), "single_talk", 60.0,
                             seed=0)  # fmt: skip
    run = run_scene(drifting)
    assert run.processor.skew * 1e6 == pytest.approx(100.0, abs=5.0)
    # a skew over-estimated for a while slides the echo path and its residue interrupts
    assert run.bargeins == [], [b.time for b in run.bargeins]
    late = slice(16000 * 40, run.clean.size)  # the canceller re-converged on a still path
    echo, residual = drifting.echo_16k[late], run.clean[late]
    assert 10 * np.log10(np.dot(echo, echo) / np.dot(residual, residual)) > 20.0
    still = make_scenario(condition("desktop_speakers_home_office"), "single_talk", 60.0, seed=0)
    assert run_scene(still).processor.skew == 0.0


def test_a_microphone_slower_than_the_speakers_is_followed_too() -> None:
    """-100 ppm: the echo arrives earlier and earlier; the far end is then read later, which
    only catches up with what is playing (never past what was handed to the device)."""
    import dataclasses

    slow = dataclasses.replace(
        condition("desktop_usb_mic_clock_drift"), name="slow_mic", clock_drift_ppm=-100.0
    )
    scene = make_scenario(slow, "single_talk", 60.0, seed=0)
    run = run_scene(scene)
    assert run.processor.skew * 1e6 == pytest.approx(-100.0, abs=5.0)
    late = slice(16000 * 40, run.clean.size)
    echo, residual = scene.echo_16k[late], run.clean[late]
    assert 10 * np.log10(np.dot(echo, echo) / np.dot(residual, residual)) > 20.0
    assert run.bargeins == []
