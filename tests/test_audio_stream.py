"""The duplex stream through the real callback path, on FakeSoundDevice's manual clock: ring
buffers, device selection, resampling and timestamps, playback and barge-in flushing,
underruns, device loss and recovery, and callbacks that never wait for the processing."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest
import soxr

from app.audio.devices import find_device
from app.audio.events import MIC_FRAME, AudioEvent, AudioSettings, DeviceLost, DeviceRestored
from app.audio.fake_device import FakeDevice, FakeSoundDevice, StreamTime
from app.audio.ring import BlockClock, SampleRing
from app.audio.stream import DuplexStream
from minmo_core.errors import AudioError


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


class RecordingSink:
    """A FrameSink that keeps everything it is given."""

    def __init__(self, process_seconds: float = 0.0) -> None:
        self.process_seconds = process_seconds
        self.frames: list[tuple[float, np.ndarray]] = []  # (adc_time, (160,) frame)
        self.far: list[tuple[float, np.ndarray]] = []  # (dac_time, 16 kHz samples)
        self.playback: list[tuple[str, float]] = []  # ("started" | "stopped", time)
        self.entered = threading.Event()  # process() has been called

    def push_far_end(self, samples16k: np.ndarray, dac_time: float) -> None:
        self.far.append((dac_time, samples16k.copy()))

    def process(self, mic16k: np.ndarray, adc_time: float) -> np.ndarray:
        self.entered.set()
        if self.process_seconds:
            time.sleep(self.process_seconds)
        self.frames.append((adc_time, mic16k.copy()))
        return mic16k

    def playback_started(self, time: float) -> None:
        self.playback.append(("started", time))

    def playback_stopped(self, time: float) -> None:
        self.playback.append(("stopped", time))

    def mic(self) -> np.ndarray:
        return np.concatenate([frame for _, frame in self.frames])

    def far_end(self) -> np.ndarray:
        return np.concatenate([chunk for _, chunk in self.far])


def run(fake: FakeSoundDevice, stream: DuplexStream, seconds: float, step: float = 0.01) -> None:
    """Advance the fake clock block by block, running the processing step after each."""
    for _ in range(round(seconds / step)):
        fake.advance(step)
        stream.pump()


def manual_stream(
    fake: FakeSoundDevice, settings: AudioSettings | None = None, **options: object
) -> tuple[DuplexStream, RecordingSink, list[AudioEvent]]:
    sink, events = RecordingSink(), []
    stream = DuplexStream(settings or AudioSettings(), sink, fake, events.append, **options)
    stream.start(threaded=False)
    return stream, sink, events


# -- ring buffer ------------------------------------------------------------------------------


def test_ring_keeps_order_across_the_wraparound() -> None:
    ring = SampleRing(8)
    ring.write(np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(ring.read(3), [0, 1, 2])
    assert ring.write(np.arange(5, 11, dtype=np.float32))  # wraps: slots 5, 6, 7, 0, 1, 2
    assert ring.available() == 8 and ring.free() == 0
    np.testing.assert_array_equal(ring.read(8), np.arange(3, 11))
    assert (ring.written, ring.consumed, ring.overruns, ring.underruns) == (11, 11, 0, 0)


def test_ring_drops_the_newest_block_when_full_and_counts_it() -> None:
    ring = SampleRing(8)
    assert ring.write(np.arange(6, dtype=np.float32))
    assert not ring.write(np.full(4, 9.0, np.float32))  # does not fit: dropped whole
    assert ring.write(np.full(2, 7.0, np.float32))  # still fits
    assert (ring.overruns, ring.dropped_samples) == (1, 4)
    np.testing.assert_array_equal(ring.read(8), [0, 1, 2, 3, 4, 5, 7, 7])


def test_ring_short_read_zero_fills_and_counts_an_underrun() -> None:
    ring = SampleRing(16)
    ring.write(np.ones(6, np.float32))
    out = np.full(10, np.nan, np.float32)
    assert ring.read_into(out) == 6
    np.testing.assert_array_equal(out, [1] * 6 + [0] * 4)
    assert ring.underruns == 1
    assert ring.read_into(np.zeros(0, np.float32)) == 0 and ring.underruns == 1  # asked nothing


def test_ring_clear_drops_only_what_was_written_before_it() -> None:
    ring = SampleRing(8)
    ring.write(np.ones(5, np.float32))
    ring.clear()  # producer side: the consumer skips these on its next read
    assert ring.available() == 0
    ring.write(np.full(3, 2.0, np.float32))  # 5 + 3 fit: the reader has not released them yet
    np.testing.assert_array_equal(ring.read(8), [2, 2, 2])
    assert ring.free() == 8


def test_ring_write_and_read_into_allocate_no_sample_buffers() -> None:
    ring, block, out = SampleRing(4800), np.ones(480, np.float32), np.zeros(480, np.float32)
    ring.write(block)
    ring.read_into(out)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(5000):  # wraps around the ring 500 times
            ring.write(block)
            ring.read_into(out)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 256  # nothing kept
    assert peak - before < block.nbytes // 2  # never even one block's copy at a time


def test_block_clock_times_every_sample_and_shows_dropped_blocks() -> None:
    rate = 1000
    ring, clock = SampleRing(100), BlockClock(8, rate)
    for k, t in enumerate([10.0, 10.01, 10.03]):  # the block stamped 10.02 was lost upstream
        clock.record(ring.written, t, tag=k)
        ring.write(np.zeros(10, np.float32))
    assert clock.time_at(0) == 10.0
    assert clock.time_at(9.5) == pytest.approx(10.0095)
    assert clock.lookup(15) == (pytest.approx(10.015), 1)
    assert clock.time_at(20) == pytest.approx(10.03)  # the gap is visible in the times
    clock.record(ring.written, 10.04)  # a block the ring then drops...
    assert not SampleRing(5).write(np.zeros(10, np.float32))
    clock.record(ring.written, 10.05)  # ...is re-stamped by the next one at the same index
    ring.write(np.zeros(10, np.float32))
    assert clock.time_at(30) == pytest.approx(10.05)
    clock.forget_before(25)
    assert clock.time_at(25) == pytest.approx(10.035)


# -- device selection -------------------------------------------------------------------------


def desk() -> FakeSoundDevice:
    return FakeSoundDevice(
        [
            FakeDevice("Built-in Microphone", max_input_channels=2, default_samplerate=44100),
            FakeDevice("USB Headset", max_input_channels=1, max_output_channels=2, rates=(16000,)),
            FakeDevice("HDMI Output", max_output_channels=8),
        ]
    )


@pytest.mark.parametrize(
    ("wanted", "kind", "index"),
    [
        (None, "input", 0),
        (None, "output", 1),
        (2, "output", 2),
        ("usb", "input", 1),
        ("HEADSET", "output", 1),
        ("hdmi output", "output", 2),
    ],
)
def test_device_is_found_by_index_or_any_case_part_of_its_name(
    wanted: int | str | None, kind: str, index: int
) -> None:
    assert find_device(desk(), wanted, kind).index == index


def test_an_unknown_device_is_named_and_the_existing_ones_listed() -> None:
    with pytest.raises(AudioError, match="'Blue Yeti' not found") as err:
        find_device(desk(), "Blue Yeti", "input")
    assert "0: Built-in Microphone; 1: USB Headset" in str(err.value)
    assert "HDMI" not in str(err.value)  # not an input
    with pytest.raises(AudioError, match="input device 2 not found"):
        find_device(desk(), 2, "input")
    with pytest.raises(AudioError, match="matches 'USB Headset', 'HDMI Output'"):
        find_device(desk(), "t", "output")


def test_no_device_at_all_is_a_clear_error_at_start() -> None:
    mic_only = FakeSoundDevice([FakeDevice("Mic", max_input_channels=1)])
    with pytest.raises(AudioError, match="no audio output device found"):
        DuplexStream(AudioSettings(), RecordingSink(), mic_only).start(threaded=False)
    assert not any(s.active for s in mic_only.streams)  # the input it opened was closed again
    with pytest.raises(AudioError, match="no audio input device found"):
        DuplexStream(AudioSettings(), RecordingSink(), FakeSoundDevice([])).start()


def test_16_and_24_khz_are_used_when_the_device_takes_them_else_its_own_rate() -> None:
    headset = AudioSettings(input_device="headset", output_device="headset")
    stream, _, _ = manual_stream(desk(), headset)
    stats = stream.stats()
    assert (stats.input_rate, stats.output_rate) == (16000, 48000)  # no 24 kHz: its default
    stream.stop()
    stream, _, _ = manual_stream(desk(), AudioSettings(input_device="built-in"))
    assert stream.stats().input_rate == 44100
    stream.stop()


# -- capture ----------------------------------------------------------------------------------


def test_mic_at_48k_arrives_as_16k_frames_of_the_right_content_and_capture_time() -> None:
    fake = FakeSoundDevice(input_rate=48000, near_end=tone(440, 1.5, 48000))
    stream, sink, _ = manual_stream(fake)
    run(fake, stream, 1.0)
    assert len(sink.frames) >= 95  # 100 frames minus the resampler's ~15 ms
    assert all(f.shape == (MIC_FRAME,) and f.dtype == np.float32 for _, f in sink.frames)
    times = np.array([t for t, _ in sink.frames])
    assert times[0] == pytest.approx(0.0)  # first block captured at fake time 0
    np.testing.assert_allclose(np.diff(times), 0.01, atol=1e-9)
    assert abs(dominant_hz(sink.mic(), 16000) - 440) <= 1
    for adc, frame in sink.frames[2:]:  # each frame is the tone as it was at its adc_time
        expected = 0.5 * np.sin(2 * np.pi * 440 * (adc + np.arange(MIC_FRAME) / 16000))
        np.testing.assert_allclose(frame, expected, atol=2e-3)
    assert stream.stats().frames_processed == len(sink.frames)
    assert not fake.callback_exceptions


# -- playback ---------------------------------------------------------------------------------


def test_play_at_a_24k_device_is_bit_exact_and_flush_reports_what_was_played() -> None:
    fake = FakeSoundDevice(output_rate=24000)
    stream, sink, _ = manual_stream(fake)
    audio = tone(300, 1.0, 24000)
    assert stream.play(audio) == 0
    run(fake, stream, 0.3)
    assert stream.is_playing
    played = stream.flush_playback()  # barge-in
    assert played == 7200  # 30 blocks of 240
    assert not stream.is_playing
    run(fake, stream, 0.1)
    np.testing.assert_array_equal(fake.played[:7200], audio[:7200])
    assert not fake.played[7200:].any()  # dropped at once: the very next block is silent
    assert sink.playback == [("started", 0.03), ("stopped", pytest.approx(0.33))]


def test_play_is_resampled_to_a_48k_device_and_comes_back_to_the_far_end_at_16k() -> None:
    fake = FakeSoundDevice(output_rate=48000)
    stream, sink, _ = manual_stream(fake)
    rng = np.random.default_rng(1)
    audio = (0.3 * rng.standard_normal(12000)).astype(np.float32)  # 0.5 s of noise at 24 kHz
    stream.play(audio)
    run(fake, stream, 0.8)
    out = fake.played
    expected48 = soxr.resample(audio, 24000, 48000)
    np.testing.assert_allclose(out[: expected48.size], expected48, atol=0.02)
    assert not out[expected48.size :].any()
    times = np.array([t for t, _ in sink.far])  # DAC time of each far-end chunk's first sample
    assert times[0] == pytest.approx(0.03)  # first output callback at 0 + 30 ms latency
    np.testing.assert_allclose(np.diff(times), MIC_FRAME / 16000, atol=1e-9)
    expected16 = soxr.resample(audio, 24000, 16000)
    np.testing.assert_allclose(sink.far_end()[: expected16.size], expected16, atol=0.03)
    assert sink.playback == [("started", 0.03), ("stopped", pytest.approx(0.53))]
    assert stream.stats().output_underruns == 0
    assert stream.flush_playback() == 12000  # all of it was heard


def test_play_returns_the_offset_in_the_batch_and_a_new_batch_starts_when_idle() -> None:
    fake = FakeSoundDevice(output_rate=24000)
    stream, _, _ = manual_stream(fake)
    assert stream.play(np.ones(2400, np.float32)) == 0
    assert stream.play(np.ones(2400, np.float32)) == 2400  # same reply, still queued
    run(fake, stream, 0.3)  # all 0.2 s played
    assert not stream.is_playing
    assert stream.play(np.ones(4800, np.float32)) == 0  # a new batch
    run(fake, stream, 0.05)
    assert stream.flush_playback() == 1200


def test_output_underruns_count_short_blocks_only_while_audio_is_waiting() -> None:
    fake = FakeSoundDevice(output_rate=24000)
    stream, _, _ = manual_stream(fake, playback_buffer_ms=50)  # the ring holds 1200 samples
    run(fake, stream, 0.1)  # idle: silence is not an underrun
    stream.play(tone(200, 0.5, 24000))
    fake.advance(0.2)  # the processing thread is "late": nothing refills the ring
    assert stream.stats().output_underruns == 15  # 5 blocks from the ring, then 15 short
    stream.pump()
    run(fake, stream, 0.6)  # it catches up and plays the rest, then idles
    assert stream.stats().output_underruns == 15
    assert np.count_nonzero(fake.played) > 0.99 * 12000


def test_echo_reaches_the_mic_frames_at_the_far_end_dac_time_plus_the_echo_delay() -> None:
    """The two streams' timestamps agree: what an echo canceller aligns by."""
    fake = FakeSoundDevice(
        input_rate=48000, output_rate=48000, echo_path=np.array([0.0, 0.0, 0.5]), echo_delay=478
    )  # 2 + 478 samples at 48 kHz: 10 ms
    stream, sink, _ = manual_stream(fake)
    rng = np.random.default_rng(2)
    stream.play((0.3 * rng.standard_normal(9600)).astype(np.float32))
    run(fake, stream, 0.6)
    far = {round(t, 4): chunk for t, chunk in sink.far}
    compared = 0
    for adc, frame in sink.frames:
        played = far.get(round(adc - 0.01, 4))
        if played is not None and np.abs(played).max() > 0.1:
            np.testing.assert_allclose(frame, 0.5 * played, atol=0.02)
            compared += 1
    assert compared >= 30


# -- errors and devices that go away ----------------------------------------------------------


def test_callback_errors_are_caught_and_counted_and_output_stays_filled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeSoundDevice()
    stream, _, _ = manual_stream(fake)

    def broken(self: SampleRing, block: np.ndarray) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(SampleRing, "write", broken)
    run(fake, stream, 0.05)
    assert not fake.callback_exceptions  # nothing escaped to PortAudio
    assert stream.stats().callback_errors == 9  # output at 0..40 ms, input at 10..40 ms
    assert not np.isnan(fake.played).any()  # outdata was still filled (with zeros)
    assert "callback failed: RuntimeError('boom')" in caplog.text
    fake.report_xrun("input")
    run(fake, stream, 0.01)
    assert stream.stats().device_xruns == 1


def test_a_vanished_microphone_is_reported_and_reopened_when_it_returns() -> None:
    fake = FakeSoundDevice(near_end=tone(440, 2.0, 48000))
    stream, sink, events = manual_stream(fake, retry_interval_s=0.0)
    run(fake, stream, 0.1)
    fake.advance(0.2)  # the processing thread is behind: 20 blocks wait in the mic ring
    fake.disconnect("input")
    fake.advance(0.01)  # the next callback finds the device gone and the stream aborts
    stream.pump()
    assert events == [DeviceLost("input", "Fake Microphone", "the stream stopped by itself")]
    assert sink.frames[-1][0] == pytest.approx(0.28)  # all it captured (to 0.29) came through
    run(fake, stream, 0.1)
    assert len(events) == 1  # retried, still gone
    assert "Fake Microphone" not in [d["name"] for d in fake.query_devices()]
    assert stream.stats().input_rate is None
    lost_at, far_before = sink.frames[-1][0], len(sink.far)
    run(fake, stream, 0.1)
    assert sink.frames[-1][0] == lost_at  # no mic frames while it is gone...
    assert len(sink.far) > far_before  # ...the speaker side goes on
    fake.reconnect("input")
    run(fake, stream, 0.2)
    assert events[1:] == [DeviceRestored("input", "Fake Microphone")]
    assert sink.frames[-1][0] > lost_at + 0.25  # frames flow again, on the live clock
    assert fake.reinitialised == 0  # the output stream was open: PortAudio was left alone
    assert not fake.callback_exceptions


def test_a_stalled_speaker_is_noticed_its_queue_dropped_and_playback_resumes_after() -> None:
    fake = FakeSoundDevice(output_rate=24000)
    stream, sink, events = manual_stream(fake, retry_interval_s=0.0, stall_timeout_s=0.2)
    stream.play(tone(300, 2.0, 24000))
    run(fake, stream, 0.1)
    fake.disconnect("output", stall=True)  # no error, the callbacks just stop
    run(fake, stream, 0.5)
    assert [type(e) for e in events] == [DeviceLost]
    assert events[0].reason.startswith("no audio callback for 0.2")
    assert sink.playback == [("started", 0.03), ("stopped", pytest.approx(0.13))]
    assert not stream.is_playing  # the queue went with the device
    assert stream.play(np.ones(100, np.float32)) == 2400  # dropped: there is no output
    assert stream.flush_playback() == 2400  # what was played before the loss
    fake.reconnect("output")
    run(fake, stream, 0.05)
    assert events[1] == DeviceRestored("output", "Fake Speakers")
    stream.play(np.full(240, 0.25, np.float32))
    run(fake, stream, 0.05)
    assert np.count_nonzero(fake.played == 0.25) == 240


def test_a_headset_unplugged_loses_both_sides_and_portaudio_is_reinitialised_to_find_it() -> None:
    fake = FakeSoundDevice([FakeDevice("USB Headset", max_input_channels=1, max_output_channels=1)])
    headset = AudioSettings(input_device="USB Headset", output_device="USB Headset")
    stream, sink, events = manual_stream(fake, headset, retry_interval_s=0.0)
    run(fake, stream, 0.1)
    fake.disconnect("input")  # the one device does both
    run(fake, stream, 0.1)
    assert {(e.kind, type(e)) for e in events} == {("input", DeviceLost), ("output", DeviceLost)}
    assert fake.reinitialised > 0
    fake.reconnect("input")
    run(fake, stream, 0.1)
    assert {(e.kind, type(e)) for e in events[2:]} == {
        ("input", DeviceRestored),
        ("output", DeviceRestored),
    }
    frames = len(sink.frames)
    run(fake, stream, 0.1)
    assert len(sink.frames) >= frames + 9


# -- real time --------------------------------------------------------------------------------


def test_a_slow_sink_never_slows_the_callbacks_the_mic_ring_drops_instead() -> None:
    """The sink takes 50 ms per 10 ms frame on the processing thread. Once it is inside
    process(), the fake clock drives 1 s of callbacks as fast as the test can: a callback
    that waited for the sink (or for ring space) would take >= 50 ms and the drive >= 4 s;
    a ring that grew instead of dropping would report no overruns."""
    fake = FakeSoundDevice(near_end=tone(440, 2.0, 48000))
    sink = RecordingSink(process_seconds=0.05)
    stream = DuplexStream(AudioSettings(), sink, fake, mic_buffer_ms=100)  # 10 blocks
    stream.start()  # with its processing thread
    try:
        fake.advance(0.05)
        assert sink.entered.wait(2.0)  # the processing thread is busy in the sink now
        began = time.perf_counter()
        for _ in range(100):
            fake.advance(0.01)
        driven = time.perf_counter() - began
        stats = stream.stats()
    finally:
        stream.stop()
    assert driven < 0.5
    assert max(fake.callback_seconds["input"]) < 0.02  # vs 50 ms if it waited for the sink
    assert max(fake.callback_seconds["output"]) < 0.02
    assert stats.frames_processed <= 3  # the sink held the processing thread throughout...
    assert stats.input_overruns >= 80  # ...and the mic ring dropped what it could not hold
    assert not fake.callback_exceptions


def test_the_processing_thread_delivers_frames_as_a_context_manager() -> None:
    fake = FakeSoundDevice(near_end=tone(440, 1.0, 48000))
    sink = RecordingSink()
    with DuplexStream(AudioSettings(), sink, fake) as stream:
        for _ in range(30):
            fake.advance(0.01)
        deadline = time.monotonic() + 2.0
        while stream.stats().frames_processed < 25 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(sink.frames) >= 25
    assert not any(s.active for s in fake.streams)  # both closed on exit
    times = [t for t, _ in sink.frames]
    assert times == sorted(times)


def test_fake_duplex_stream_hands_input_and_output_to_one_callback() -> None:
    fake = FakeSoundDevice(
        [
            FakeDevice(
                "Codec", max_input_channels=1, max_output_channels=1, default_samplerate=16000
            )
        ],
        near_end=np.ones(16000, np.float32),
        input_latency=0.0,
    )
    seen: list[tuple[float, float]] = []

    def callback(
        indata: np.ndarray, outdata: np.ndarray, frames: int, time: StreamTime, status: object
    ) -> None:
        seen.append((float(indata.mean()), time.outputBufferDacTime - time.inputBufferAdcTime))
        outdata[:] = 0.5

    with fake.Stream(samplerate=16000, blocksize=160, channels=1, callback=callback):
        fake.advance(0.05)
    assert seen == [(1.0, pytest.approx(0.03))] * 5
    np.testing.assert_array_equal(fake.played, np.full(800, 0.5, np.float32))
