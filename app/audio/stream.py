"""Full-duplex audio: microphone and speaker streams, their callbacks, and the processing
thread that turns them into 10 ms frames at 16 kHz for the echo canceller.

Threads, and what each may do:

- PortAudio's callback threads (one per stream) only copy: mic blocks into the mic ring with
  their ADC time; queued playback from the playback ring into ``outdata`` (zeros when it runs
  short) and exactly that ``outdata`` into the played ring with its DAC time. No locks, no new
  audio buffers, and no exception escapes: it is counted and logged by the processing thread.
- The processing thread (``pump`` in a loop) resamples, calls the ``FrameSink``, moves queued
  playback into the playback ring, watches the streams and reopens lost devices.
- The app's threads call ``play``, ``flush_playback``, ``is_playing`` and ``stats``. The
  playback queue they share with the processing thread is guarded by one short lock that the
  callbacks never take.

Input and output are separate PortAudio streams rather than one duplex stream: each runs at
its own device's rate, and a headset mic that vanishes does not take the speakers with it.
Both report times on PortAudio's stream clock, which the host APIs take from the same system
clock, so ADC and DAC times can be compared (the echo canceller's delay comes from that).

Device loss is noticed by the processing thread: the stream's ``finished_callback`` fired
while we were not closing it, the stream is no longer active, or no callback came for
``stall_timeout_s`` of stream time (some host APIs simply stop calling back when a USB device
is pulled). It closes that stream, hands the sink the audio already captured, emits
``DeviceLost`` and tries to reopen the same setting (index, name, or the current default)
every ``retry_interval_s``, emitting ``DeviceRestored`` when that works. PortAudio lists
devices only when it is initialised, so while none of our streams is open each retry
re-initialises it to see a re-plugged device. Losing the output drops the queued playback
(``flush_playback`` still reports what was played), and ``play`` drops audio while the output
is lost; the sink, the settings and the event hook are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import soxr

from app.audio.devices import Backend, DeviceInfo, find_device, pick_rate, sounddevice_backend
from app.audio.events import (
    MIC_FRAME,
    MIC_RATE,
    PLAYBACK_RATE,
    AudioEvent,
    AudioSettings,
    DeviceLost,
    DeviceRestored,
)
from app.audio.ring import BlockClock, SampleRing
from minmo_core.errors import AudioError

logger = logging.getLogger(__name__)

RESAMPLE_QUALITY = "MQ"  # soxr: flat to 7.5 kHz, >100 dB alias rejection, ~15 ms held back
CLOCK_SLACK = 8  # extra BlockClock records: blocks inside the resampler and the partial frame
LOW_WATER_BLOCKS = 3  # playback ring this low and nothing queued: flush the resampler's tail


class FrameSink(Protocol):
    """What the processing thread feeds: the echo canceller and everything after it."""

    def push_far_end(self, samples16k: np.ndarray, dac_time: float) -> None:
        """What was played: (n,) float32 at 16 kHz; ``dac_time`` is its first sample's."""

    def process(self, mic16k: np.ndarray, adc_time: float) -> np.ndarray:
        """One mic frame (MIC_FRAME,) float32 at 16 kHz captured from ``adc_time`` (its first
        sample); returns the echo-cancelled frame (DuplexStream does not use it)."""
        ...

    def playback_started(self, time: float) -> None:
        """Queued audio reached the speaker at ``time`` (DAC time of its first sample)."""

    def playback_stopped(self, time: float) -> None:
        """The queued audio ran out at ``time`` (DAC time just after its last sample)."""


@dataclass(frozen=True)
class StreamStats:
    input_overruns: int  # mic blocks dropped (newest) because the processing thread fell behind
    output_underruns: int  # output callbacks that ran short while queued audio was still waiting
    far_end_overruns: int  # played blocks dropped before reaching the sink
    callback_errors: int  # exceptions caught inside the callbacks
    device_xruns: int  # callbacks whose PortAudio status flagged an over- or underflow
    sink_errors: int  # exceptions raised by the FrameSink
    frames_processed: int  # 10 ms mic frames handed to sink.process
    input_rate: int | None  # Hz of the open input stream (None when closed or lost)
    output_rate: int | None


def _resampler(rate_in: int, rate_out: int) -> soxr.ResampleStream | None:
    if rate_in == rate_out:
        return None
    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality=RESAMPLE_QUALITY)


class _Side:
    """One open stream: its device, rate, block and what its callback counts."""

    def __init__(self, kind: str, device: DeviceInfo, rate: int, block: int) -> None:
        self.kind = kind
        self.device = device
        self.rate = rate
        self.block = block  # samples per callback at the device rate
        self.stream: Any = None
        self.closing = False  # set before we stop it ourselves
        self.ended: str | None = None  # set by finished_callback when we were not closing
        self.calls = 0  # callbacks so far
        self.watched = (0, 0.0)  # (calls, stream time) when the supervisor last saw them change
        self.xruns = 0
        self.errors = 0
        self.error: BaseException | None = None  # latest callback exception, for the log

    def finished(self) -> None:
        if not self.closing:
            self.ended = "the stream stopped by itself"

    def failed(self, err: BaseException) -> None:
        self.errors += 1
        self.error = err


class _InputSide(_Side):
    def __init__(self, device: DeviceInfo, rate: int, block: int, capacity: int) -> None:
        super().__init__("input", device, rate, block)
        self.ring = SampleRing(capacity)  # mic samples at the device rate
        self.clock = BlockClock(capacity // block + CLOCK_SLACK, rate)  # their ADC times
        self.resampler = _resampler(rate, MIC_RATE)  # processing thread from here on
        self.produced = 0  # 16 kHz samples out of the resampler
        self.pending = np.zeros(0, np.float32)  # 16 kHz samples short of a whole frame

    def callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        try:
            self.calls += 1
            if status:
                self.xruns += 1
            self.clock.record(self.ring.written, time.inputBufferAdcTime)
            self.ring.write(indata[:, 0])
        except Exception as err:
            self.failed(err)


class _OutputSide(_Side):
    def __init__(
        self, device: DeviceInfo, rate: int, block: int, playback: int, played: int
    ) -> None:
        super().__init__("output", device, rate, block)
        self.playback = SampleRing(playback)  # queued assistant audio at the device rate
        self.played = SampleRing(played)  # exactly what went to outdata
        self.clock = BlockClock(played // block + CLOCK_SLACK, rate)  # DAC times, tag = real
        self.feeding = False  # queued audio still waits outside the ring (set under the lock)
        self.played_total = 0  # queued samples handed to the device
        self.underruns = 0
        self.resampler = _resampler(rate, MIC_RATE)  # processing thread from here on
        self.block_buf = np.zeros(block, np.float32)
        self.produced = 0
        self.pending = np.zeros(0, np.float32)
        self.playing = False
        self.last_dac_end = 0.0

    def callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        try:
            self.calls += 1
            if status:
                self.xruns += 1
            out = outdata[:, 0]
            n = self.playback.read_into(out)
            if n < frames and self.feeding:
                self.underruns += 1
            self.played_total += n
            self.clock.record(self.played.written, time.outputBufferDacTime, n)
            self.played.write(out)
        except Exception as err:
            outdata.fill(0.0)
            self.failed(err)


class _PlaybackQueue:
    """Audio queued by ``play`` that has not reached the playback ring yet, and the current
    batch's accounting. Every method runs under DuplexStream's playback lock."""

    def __init__(self) -> None:
        self.chunks: deque[np.ndarray] = deque()  # (n,) float32 at 24 kHz
        self.leftover = np.zeros(0, np.float32)  # resampled, waiting for ring space
        self.resampler: soxr.ResampleStream | None = None
        self.resampler_fed = False  # it holds samples back until flushed
        self.queued24k = 0  # samples queued in the current batch
        self.played_before = 0  # 24 kHz samples of this batch played by a lost output
        self.base = 0  # the output's played_total when the batch started

    def reset(self, out: _OutputSide | None) -> None:
        """Drop everything queued and start a new batch."""
        self.chunks.clear()
        self.leftover = np.zeros(0, np.float32)
        self.resampler = None if out is None else _resampler(PLAYBACK_RATE, out.rate)
        self.resampler_fed = False
        self.queued24k = 0
        self.played_before = 0
        self.base = 0 if out is None else out.played_total
        if out is not None:
            out.playback.clear()
            out.feeding = False

    def played24k(self, out: _OutputSide | None) -> int:
        live = (
            0 if out is None else round((out.played_total - self.base) * PLAYBACK_RATE / out.rate)
        )
        return min(self.queued24k, self.played_before + live)

    def busy(self, out: _OutputSide) -> bool:
        return out.feeding or out.playback.available() > 0

    def feed(self, out: _OutputSide) -> None:
        """Move what fits into the playback ring, resampling one queued chunk at a time; when
        nothing is queued and the ring runs low, flush the resampler's held-back tail."""
        while True:
            if not self.leftover.size:
                if self.chunks:
                    chunk = self.chunks.popleft()
                    if self.resampler is not None:
                        chunk = self.resampler.resample_chunk(chunk)
                        self.resampler_fed = True
                    self.leftover = chunk
                elif self.resampler_fed and (
                    out.playback.available() <= LOW_WATER_BLOCKS * out.block
                ):
                    self.leftover = self.resampler.resample_chunk(
                        np.zeros(0, np.float32), last=True
                    )
                    self.resampler = _resampler(PLAYBACK_RATE, out.rate)
                    self.resampler_fed = False
                else:
                    break
            n = min(self.leftover.size, out.playback.free())
            if not n:
                break
            out.playback.write(self.leftover[:n])
            self.leftover = self.leftover[n:]
        out.feeding = bool(self.leftover.size or self.chunks) or self.resampler_fed


class DuplexStream:
    """Microphone and speaker for the assistant: 16 kHz mic frames to a ``FrameSink`` with
    their capture times, 24 kHz assistant audio to the speaker, barge-in flushing.

    ``backend`` is the ``sounddevice`` module (the default) or a ``FakeSoundDevice``.
    ``mic_buffer_ms`` bounds how far the processing thread may fall behind before mic blocks
    are dropped; ``playback_buffer_ms`` is how much queued audio sits in the ring the output
    callback reads (the rest waits in the queue, so ``play`` takes any length).
    """

    def __init__(
        self,
        settings: AudioSettings,
        sink: FrameSink,
        backend: Backend = None,
        on_event: Callable[[AudioEvent], None] | None = None,
        *,
        mic_buffer_ms: int = 2000,
        playback_buffer_ms: int = 300,
        retry_interval_s: float = 0.5,
        stall_timeout_s: float = 1.0,
    ) -> None:
        if settings.frame_ms not in (10, 20):
            raise AudioError(f"frame_ms must be 10 or 20, got {settings.frame_ms}")
        self._settings = settings
        self._sink = sink
        self._backend = backend if backend is not None else sounddevice_backend()
        self._on_event = on_event
        self._mic_buffer_ms = mic_buffer_ms
        self._playback_buffer_ms = playback_buffer_ms
        self._retry_interval_s = retry_interval_s
        self._stall_timeout_s = stall_timeout_s
        self._input: _InputSide | None = None
        self._output: _OutputSide | None = None
        self._lost: dict[str, tuple[str, float]] = {}  # kind -> (device name, next retry)
        self._lock = threading.Lock()  # the playback queue and swapping self._output
        self._queue = _PlaybackQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._frames = 0
        self._sink_errors = 0
        self._retired = StreamStats(0, 0, 0, 0, 0, 0, 0, None, None)  # counts of closed sides

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, threaded: bool = True) -> None:
        """Open both devices (AudioError when one cannot be opened) and start processing.

        ``threaded=False`` starts no processing thread: the caller runs ``pump`` (tests)."""
        if self._started:
            raise RuntimeError("the stream is already started")
        self._input = self._open("input")
        try:
            output = self._open("output")
        except BaseException:
            self._close(self._input)
            self._input = None
            raise
        with self._lock:
            self._output = output
            self._queue.reset(output)
        self._started = True
        self._stop.clear()
        if threaded:
            self._thread = threading.Thread(target=self._run, name="audio-processing", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop processing and close both streams; queued playback is dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for side in (self._input, self._output):
            if side is not None:
                self._close(side)
        with self._lock:
            self._input = self._output = None
            self._queue.reset(None)
        self._lost.clear()
        self._started = False

    def __enter__(self) -> DuplexStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- playback (any thread) ---------------------------------------------------------------

    def play(self, audio24k: np.ndarray) -> int:
        """Queue (n,) float32 assistant audio at 24 kHz; returns its offset in the current
        batch, in 24 kHz samples (0: it started a new batch). A batch starts with the first
        ``play`` after ``start``, after ``flush_playback``, or when everything queued before
        has been handed to the device. While the output device is lost the audio is dropped.
        """
        if not self._started:
            raise RuntimeError("start() the stream before play()")
        audio = np.array(audio24k, np.float32)  # a copy: the caller may reuse its buffer
        if audio.ndim != 1:
            raise AudioError(f"play() takes (samples,) audio at 24 kHz, got shape {audio.shape}")
        with self._lock:
            out = self._output
            if out is not None and not self._queue.busy(out):
                self._queue.reset(out)
            offset = self._queue.queued24k
            if out is not None and audio.size:
                self._queue.chunks.append(audio)
                self._queue.queued24k += audio.size
                out.feeding = True
                self._queue.feed(out)
        return offset

    def flush_playback(self) -> int:
        """Drop all queued playback now (barge-in). Returns how many 24 kHz samples of the
        current batch were handed to the device; the device's output latency worth of them
        may still be sounding."""
        with self._lock:
            out = self._output
            if out is not None:
                out.playback.clear()  # first, so the callback stops taking from the queue
            played = self._queue.played24k(out)
            self._queue.reset(out)
        return played

    @property
    def is_playing(self) -> bool:
        """Queued audio has not all been handed to the device yet."""
        out = self._output
        return out is not None and (out.feeding or out.playback.available() > 0)

    def stats(self) -> StreamStats:
        r, inp, out = self._retired, self._input, self._output
        return StreamStats(
            input_overruns=r.input_overruns + (inp.ring.overruns if inp else 0),
            output_underruns=r.output_underruns + (out.underruns if out else 0),
            far_end_overruns=r.far_end_overruns + (out.played.overruns if out else 0),
            callback_errors=r.callback_errors + sum(s.errors for s in (inp, out) if s),
            device_xruns=r.device_xruns + sum(s.xruns for s in (inp, out) if s),
            sink_errors=self._sink_errors,
            frames_processed=self._frames,
            input_rate=inp.rate if inp else None,
            output_rate=out.rate if out else None,
        )

    # -- processing thread -------------------------------------------------------------------

    def pump(self) -> int:
        """One round of the processing thread: watch the devices, feed playback, hand every
        complete mic frame to the sink. Returns the frames processed. Call it yourself only
        after ``start(threaded=False)``."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("pump() runs on the processing thread; start(threaded=False)")
        self._supervise()
        with self._lock:
            if self._output is not None:
                self._queue.feed(self._output)
        self._drain_far_end()
        return self._drain_mic()

    def _run(self) -> None:
        idle_s = self._settings.frame_ms / 2000  # poll twice per callback period
        while not self._stop.is_set():
            try:
                frames = self.pump()
            except Exception:
                logger.exception("audio processing failed")
                frames = 0
            if not frames:
                self._stop.wait(idle_s)

    def _drain_mic(self) -> int:
        """Hand the sink every complete mic frame, taking from the ring only what the next
        frame needs: audio the sink has not caught up with waits in the bounded ring."""
        inp = self._input
        frames = 0
        while inp is not None and not self._stop.is_set():
            while inp.pending.size < MIC_FRAME and inp.ring.available():
                x = inp.ring.read(min(inp.block, inp.ring.available()))  # at the device rate
                y = x if inp.resampler is None else inp.resampler.resample_chunk(x)
                inp.pending = np.concatenate([inp.pending, y])
            if inp.pending.size < MIC_FRAME:
                break
            index = inp.produced * inp.rate / MIC_RATE  # the frame's first sample, device rate
            adc_time = inp.clock.time_at(index)
            inp.clock.forget_before(index)
            frame, inp.pending = inp.pending[:MIC_FRAME].copy(), inp.pending[MIC_FRAME:]
            inp.produced += MIC_FRAME
            self._drain_far_end()
            self._call_sink(self._sink.process, frame, adc_time)
            frames += 1
            self._frames += 1
        return frames

    def _drain_far_end(self) -> None:
        out = self._output
        if out is None:
            return
        while out.played.available() >= out.block:
            dac_time, real = out.clock.lookup(out.played.consumed)
            out.played.read_into(out.block_buf)
            self._track_playback(out, dac_time, real)
            y = out.block_buf
            if out.resampler is not None:
                y = out.resampler.resample_chunk(y)
            out.pending = np.concatenate([out.pending, y])
        while out.pending.size >= MIC_FRAME:
            index = out.produced * out.rate / MIC_RATE
            dac_time = out.clock.time_at(index)
            out.clock.forget_before(index)
            chunk, out.pending = out.pending[:MIC_FRAME].copy(), out.pending[MIC_FRAME:]
            out.produced += MIC_FRAME
            self._call_sink(self._sink.push_far_end, chunk, dac_time)

    def _track_playback(self, out: _OutputSide, dac_time: float, real: int) -> None:
        """Playback state from one played block holding ``real`` queued samples, then zeros."""
        if real and not out.playing:
            out.playing = True
            self._call_sink(self._sink.playback_started, dac_time)
        if out.playing and real < out.block:
            out.playing = False
            self._call_sink(self._sink.playback_stopped, dac_time + real / out.rate)
        out.last_dac_end = dac_time + out.block / out.rate

    def _call_sink(self, method: Callable[..., object], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            self._sink_errors += 1
            if self._sink_errors == 1 or self._sink_errors % 1000 == 0:
                logger.exception("the audio sink failed (%d times so far)", self._sink_errors)

    # -- devices -----------------------------------------------------------------------------

    def _open(self, kind: str) -> _InputSide | _OutputSide:
        wanted = self._settings.input_device if kind == "input" else self._settings.output_device
        device = find_device(self._backend, wanted, kind)
        preferred = MIC_RATE if kind == "input" else PLAYBACK_RATE
        rate = pick_rate(self._backend, device, kind, preferred)
        block = rate * self._settings.frame_ms // 1000
        side: _InputSide | _OutputSide
        if kind == "input":
            side = _InputSide(
                device, rate, block, max(4 * block, rate * self._mic_buffer_ms // 1000)
            )
            opener = self._backend.InputStream
        else:
            playback = max(4 * block, rate * self._playback_buffer_ms // 1000)
            side = _OutputSide(device, rate, block, playback, max(8 * block, rate // 2))
            opener = self._backend.OutputStream
        try:
            side.stream = opener(
                samplerate=rate,
                blocksize=block,
                device=device.index,
                channels=1,
                dtype="float32",
                latency="low",
                callback=side.callback,
                finished_callback=side.finished,
            )
            side.stream.start()
            side.watched = (side.calls, side.stream.time)
        except (self._backend.PortAudioError, ValueError) as err:
            if side.stream is not None:
                self._close(side)
            raise AudioError(
                f"cannot open audio {kind} device {device.name!r} at {rate} Hz: {err}"
            ) from err
        logger.info("audio %s: %s at %d Hz, %d-sample blocks", kind, device.name, rate, block)
        return side

    def _close(self, side: _Side) -> None:
        side.closing = True
        try:
            side.stream.abort()
            side.stream.close()
        except self._backend.PortAudioError as err:
            logger.debug("closing the audio %s stream: %s", side.kind, err)
        self._retire(side)

    def _retire(self, side: _Side) -> None:
        """Keep a closed side's counts in the totals ``stats`` reports."""
        r = self._retired
        inp = side if isinstance(side, _InputSide) else None
        out = side if isinstance(side, _OutputSide) else None
        self._retired = StreamStats(
            input_overruns=r.input_overruns + (inp.ring.overruns if inp else 0),
            output_underruns=r.output_underruns + (out.underruns if out else 0),
            far_end_overruns=r.far_end_overruns + (out.played.overruns if out else 0),
            callback_errors=r.callback_errors + side.errors,
            device_xruns=r.device_xruns + side.xruns,
            sink_errors=0,
            frames_processed=0,
            input_rate=None,
            output_rate=None,
        )

    def _supervise(self) -> None:
        for side in (self._input, self._output):
            if side is None:
                continue
            if side.error is not None:
                logger.error("audio %s callback failed: %r", side.kind, side.error)
                side.error = None
            reason = self._why_dead(side)
            if reason is not None:
                self._lose(side, reason)
        now = time.monotonic()
        for kind, (_, next_try) in list(self._lost.items()):
            if now >= next_try:
                self._retry(kind)

    def _why_dead(self, side: _Side) -> str | None:
        if side.ended is not None:
            return side.ended
        try:
            if not side.stream.active:
                return "the stream is no longer active"
            now = side.stream.time
        except self._backend.PortAudioError as err:
            return str(err)
        calls, since = side.watched
        if side.calls != calls:
            side.watched = (side.calls, now)
        elif now - since > self._stall_timeout_s:
            return f"no audio callback for {now - since:.1f} s"
        return None

    def _lose(self, side: _InputSide | _OutputSide, reason: str) -> None:
        if isinstance(side, _InputSide):
            self._drain_mic()  # what was captured before the loss still reaches the sink
            if side.resampler is not None:
                tail = side.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                side.pending = np.concatenate([side.pending, tail])
                self._drain_mic()
            self._input = None
        else:
            self._drain_far_end()
            if side.playing:
                self._call_sink(self._sink.playback_stopped, side.last_dac_end)
            with self._lock:
                played = self._queue.played24k(side)
                self._queue.reset(None)
                self._queue.played_before = played
                self._queue.queued24k = played
                self._output = None
        self._close(side)
        self._lost[side.kind] = (side.device.name, time.monotonic() + self._retry_interval_s)
        logger.warning("audio %s device %r lost: %s", side.kind, side.device.name, reason)
        self._emit(DeviceLost(side.kind, side.device.name, reason))

    def _retry(self, kind: str) -> None:
        name, _ = self._lost[kind]
        if self._input is None and self._output is None:
            self._reinitialise()
        try:
            side = self._open(kind)
        except AudioError as err:
            logger.debug("audio %s device %r still unavailable: %s", kind, name, err)
            self._lost[kind] = (name, time.monotonic() + self._retry_interval_s)
            return
        del self._lost[kind]
        if isinstance(side, _InputSide):
            self._input = side
        else:
            with self._lock:
                self._output = side
                self._queue.base = side.played_total
        logger.info("audio %s device %r restored", kind, side.device.name)
        self._emit(DeviceRestored(kind, side.device.name))

    def _reinitialise(self) -> None:
        """Make PortAudio list devices again (only safe while none of our streams is open)."""
        terminate = getattr(self._backend, "_terminate", None)
        initialize = getattr(self._backend, "_initialize", None)
        if terminate is None or initialize is None:
            return
        try:
            terminate()
            initialize()
        except self._backend.PortAudioError as err:
            logger.debug("re-initialising PortAudio: %s", err)

    def _emit(self, event: AudioEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("the audio event handler failed on %r", event)
