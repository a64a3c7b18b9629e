"""A stand-in for the part of the ``sounddevice`` module that ``DuplexStream`` uses, on a
manual clock, so tests drive the real callback code without audio hardware.

    fake = FakeSoundDevice(input_rate=48000, output_rate=24000, near_end=voice48k)
    stream = DuplexStream(AudioSettings(), sink, backend=fake)
    stream.start(threaded=False)
    fake.advance(0.5)  # every mic and speaker callback due in 0.5 s, in time order
    stream.pump()

The room: the mic hears ``near_end`` (a signal on the fake clock, sample i at time
i / ``near_end_rate``), plus what the speaker played convolved with ``echo_path`` (an impulse
response at the mic rate) and ``echo_delay`` mic samples later, plus optional white noise.
Times follow PortAudio: a callback at ``currentTime`` t gets input captured from
``inputBufferAdcTime = t - input_latency`` and output that plays from
``outputBufferDacTime = t + output_latency``. Output callbacks fire at the start of each block
period, input callbacks at its end (the block has been captured by then).

Like PortAudio, the buffers handed to a callback are reused: ``outdata`` starts as NaN (as
uninitialised memory would) and ``indata`` is overwritten with NaN after the callback, so code
that leaves part of ``outdata`` unwritten, or keeps a reference to ``indata``, shows up.
"""

from __future__ import annotations

import time as _time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PortAudioError(Exception):
    """What sounddevice raises for PortAudio errors."""


class CallbackStop(Exception):
    """Raised by a callback to end its stream after this block."""


class CallbackAbort(Exception):
    """Raised by a callback to end its stream at once."""


class CallbackFlags:
    """PortAudio's status flags for one callback (truthy when any is set)."""

    INPUT_UNDERFLOW, INPUT_OVERFLOW, OUTPUT_UNDERFLOW, OUTPUT_OVERFLOW = 1, 2, 4, 8

    def __init__(self, flags: int = 0) -> None:
        self.flags = flags

    def __bool__(self) -> bool:
        return bool(self.flags)

    @property
    def input_underflow(self) -> bool:
        return bool(self.flags & self.INPUT_UNDERFLOW)

    @property
    def input_overflow(self) -> bool:
        return bool(self.flags & self.INPUT_OVERFLOW)

    @property
    def output_underflow(self) -> bool:
        return bool(self.flags & self.OUTPUT_UNDERFLOW)

    @property
    def output_overflow(self) -> bool:
        return bool(self.flags & self.OUTPUT_OVERFLOW)


@dataclass
class FakeDevice:
    name: str
    max_input_channels: int = 0
    max_output_channels: int = 0
    default_samplerate: int = 48000
    rates: tuple[int, ...] = ()  # rates it accepts besides its default
    connected: bool = True  # unplugged devices are not listed and cannot be opened
    stalls: bool = False  # when unplugged: its streams stop calling back instead of aborting

    def info(self, index: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": index,
            "hostapi": 0,
            "max_input_channels": self.max_input_channels,
            "max_output_channels": self.max_output_channels,
            "default_low_input_latency": 0.01,
            "default_low_output_latency": 0.01,
            "default_high_input_latency": 0.1,
            "default_high_output_latency": 0.1,
            "default_samplerate": float(self.default_samplerate),
        }


@dataclass(frozen=True)
class StreamTime:
    """The ``time`` argument of a callback (PortAudio's PaStreamCallbackTimeInfo)."""

    currentTime: float
    inputBufferAdcTime: float
    outputBufferDacTime: float


class _Default:
    """``sounddevice.default``: here only ``device`` (the default input and output index)."""

    def __init__(self, fake: FakeSoundDevice) -> None:
        self._fake = weakref.proxy(fake)  # no cycle: the fake goes when the test drops it

    @property
    def device(self) -> list[int]:
        return [self._fake.default_index("input"), self._fake.default_index("output")]


@dataclass
class FakeStream:
    """An open fake PortAudio stream: "input", "output" or "duplex"."""

    fake: FakeSoundDevice
    kind: str
    input_device: FakeDevice | None
    output_device: FakeDevice | None
    samplerate: int
    blocksize: int
    channels: int
    callback: Callable[..., None] | None
    finished_callback: Callable[[], None] | None
    active: bool = False
    closed: bool = False
    blocks: int = 0  # callbacks so far
    started_at: float = 0.0
    status_next: int = 0  # CallbackFlags for the next callback
    _indata: np.ndarray = field(init=False)
    _outdata: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._indata = np.full((self.blocksize, self.channels), np.nan, np.float32)
        self._outdata = np.full((self.blocksize, self.channels), np.nan, np.float32)

    @property
    def devices(self) -> list[FakeDevice]:
        return [d for d in (self.input_device, self.output_device) if d is not None]

    @property
    def time(self) -> float:
        return self.fake.now

    @property
    def stopped(self) -> bool:
        return not self.active

    @property
    def next_time(self) -> float:
        """When the next callback is due (fake clock)."""
        late = 0 if self.output_device is not None else 1
        return self.started_at + (self.blocks + late) * self.blocksize / self.samplerate

    @property
    def stalled(self) -> bool:
        return any(not d.connected and d.stalls for d in self.devices)

    def start(self) -> None:
        if self.closed:
            raise PortAudioError("Stream is closed [PaErrorCode -9988]")
        self.active, self.started_at, self.blocks = True, self.fake.now, 0

    def stop(self, ignore_errors: bool = True) -> None:
        self._finish()

    def abort(self, ignore_errors: bool = True) -> None:
        self._finish()

    def close(self, ignore_errors: bool = True) -> None:
        self._finish()
        self.closed = True

    def __enter__(self) -> FakeStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _finish(self) -> None:
        """Inactive from now on; PortAudio then calls the finished callback."""
        if self.active:
            self.active = False
            if self.finished_callback is not None:
                self.finished_callback()

    def fire(self) -> None:
        """Run the callback due now, or abort like PortAudio when a device has vanished."""
        if any(not d.connected for d in self.devices):
            self._finish()
            return
        now, fake = self.fake.now, self.fake
        adc = now - fake.input_latency if self.input_device is not None else 0.0
        dac = now + fake.output_latency if self.output_device is not None else 0.0
        args: list[Any] = []
        if self.input_device is not None:
            self._indata[:] = fake.mic_signal(adc, self.blocksize, self.samplerate)[:, None]
            args.append(self._indata)
        if self.output_device is not None:
            self._outdata.fill(np.nan)
            args.append(self._outdata)
        status, self.status_next = CallbackFlags(self.status_next), 0
        args += [self.blocksize, StreamTime(now, adc, dac), status]
        began = _time.perf_counter()
        try:
            if self.callback is not None:
                self.callback(*args)
        except (CallbackStop, CallbackAbort):
            self._finish()
        except Exception as err:  # sounddevice prints it and PortAudio aborts the stream
            fake.callback_exceptions.append(err)
            self._finish()
        fake.callback_seconds[self.kind].append(_time.perf_counter() - began)
        self.blocks += 1
        if self.output_device is not None:
            fake.speaker_played(dac, self._outdata[:, 0].copy(), self.samplerate)
        self._indata.fill(np.nan)


class FakeSoundDevice:
    """The ``sounddevice`` subset DuplexStream uses, on a manual clock (see the module doc).

    ``devices`` replaces the default pair ("Fake Microphone" taking only ``input_rate``,
    "Fake Speakers" taking only ``output_rate``).
    """

    PortAudioError = PortAudioError
    CallbackStop = CallbackStop
    CallbackAbort = CallbackAbort
    CallbackFlags = CallbackFlags

    def __init__(
        self,
        devices: list[FakeDevice] | None = None,
        *,
        input_rate: int = 48000,
        output_rate: int = 48000,
        near_end: np.ndarray | None = None,
        near_end_rate: int | None = None,  # Hz of near_end; input_rate when None
        echo_path: np.ndarray | None = None,  # (taps,) impulse response at the mic rate
        echo_delay: int = 0,  # extra mic samples between the speaker and the echo path
        noise_dbfs: float | None = None,  # white noise at the mic, RMS level
        input_latency: float = 0.01,  # s: currentTime - inputBufferAdcTime (>= one block)
        output_latency: float = 0.03,  # s: outputBufferDacTime - currentTime
        seed: int = 0,
    ) -> None:
        self.devices = (
            devices
            if devices is not None
            else [
                FakeDevice("Fake Microphone", max_input_channels=1, default_samplerate=input_rate),
                FakeDevice("Fake Speakers", max_output_channels=2, default_samplerate=output_rate),
            ]
        )
        self.near_end = np.zeros(0, np.float32) if near_end is None else np.asarray(near_end)
        self.near_end_rate = near_end_rate or input_rate
        self.echo_path = None if echo_path is None else np.asarray(echo_path, np.float64)
        self.echo_delay = echo_delay
        self.noise_dbfs = noise_dbfs
        self.input_latency = input_latency
        self.output_latency = output_latency
        self.now = 0.0
        self.default = _Default(self)
        self.streams: list[FakeStream] = []  # every stream opened, oldest first
        self.played_blocks: list[tuple[float, np.ndarray]] = []  # (DAC time, outdata[:, 0])
        self.callback_seconds: dict[str, list[float]] = {"input": [], "output": [], "duplex": []}
        self.callback_exceptions: list[BaseException] = []
        self.reinitialised = 0  # _terminate/_initialize pairs
        self._speaker = np.zeros(0, np.float32)  # what the speaker emitted, sample i at i / rate
        self._speaker_rate = output_rate
        self._rng = np.random.default_rng(seed)
        self._unplugged: dict[str, FakeDevice] = {}

    # -- the sounddevice API -----------------------------------------------------------------

    def query_devices(
        self, device: int | str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        listed = self._listed()
        if device is None and kind is None:
            return [d.info(i) for i, d in enumerate(listed)]
        if device is None:
            device = self.default_index(kind or "input")
        found = self._resolve(device, kind)
        return found.info(listed.index(found))

    def check_input_settings(self, device: int | str | None = None, **settings: Any) -> None:
        self._check(self._resolve(self._or_default(device, "input"), "input"), "input", settings)

    def check_output_settings(self, device: int | str | None = None, **settings: Any) -> None:
        self._check(self._resolve(self._or_default(device, "output"), "output"), "output", settings)

    def InputStream(self, **kwargs: Any) -> FakeStream:
        return self._open("input", kwargs)

    def OutputStream(self, **kwargs: Any) -> FakeStream:
        return self._open("output", kwargs)

    def Stream(self, **kwargs: Any) -> FakeStream:
        return self._open("duplex", kwargs)

    def _terminate(self) -> None:
        for stream in self.streams:
            stream.abort()

    def _initialize(self) -> None:
        self.reinitialised += 1

    # -- the test's controls -----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every callback due before the new time, in time order
        (output first on a tie, so the echo of a block is known when the mic needs it)."""
        target = self.now + seconds
        while True:
            due = [
                s
                for s in self.streams
                if s.active and not s.stalled and s.next_time < target - 1e-9
            ]
            if not due:
                break
            stream = min(due, key=lambda s: (s.next_time, s.output_device is None))
            self.now = max(self.now, stream.next_time)
            stream.fire()
        self.now = target

    def disconnect(self, kind: str, *, stall: bool = False) -> FakeDevice:
        """Unplug the device the newest open ``kind`` stream uses (else the default one).

        Its streams abort at their next callback (``stall``: they just stop calling back),
        and it is no longer listed or openable until ``reconnect(kind)``."""
        open_ = [s for s in self.streams if s.active and kind in (s.kind, "duplex")]
        if open_:
            wanted = open_[-1].input_device if kind == "input" else open_[-1].output_device
        else:
            wanted = self._listed()[self.default_index(kind)]
        assert wanted is not None
        wanted.connected, wanted.stalls = False, stall
        self._unplugged[kind] = wanted
        return wanted

    def reconnect(self, kind: str) -> None:
        device = self._unplugged.pop(kind)
        device.connected, device.stalls = True, False

    def report_xrun(self, kind: str) -> None:
        """The next callback of the open ``kind`` streams reports an over- or underflow."""
        flag = CallbackFlags.INPUT_OVERFLOW if kind == "input" else CallbackFlags.OUTPUT_UNDERFLOW
        for stream in self.streams:
            if stream.active and stream.kind == kind:
                stream.status_next |= flag

    @property
    def played(self) -> np.ndarray:
        """Every sample the output callbacks wrote, (n,) float32 at the output rate."""
        if not self.played_blocks:
            return np.zeros(0, np.float32)
        return np.concatenate([block for _, block in self.played_blocks])

    def default_index(self, kind: str) -> int:
        """Index of the first listed ``kind`` device, -1 when there is none."""
        channels = f"max_{kind}_channels"
        return next((i for i, d in enumerate(self._listed()) if getattr(d, channels) > 0), -1)

    # -- the room ----------------------------------------------------------------------------

    def mic_signal(self, adc_time: float, n: int, rate: int) -> np.ndarray:
        """(n,) float32: what the mic hears from ``adc_time`` on, sampled at ``rate``."""
        times = adc_time + np.arange(n) / rate  # (n,)
        x = _sample(self.near_end, self.near_end_rate, times)
        if self.echo_path is not None:
            taps = self.echo_path.size
            back = (np.arange(n + taps - 1) - (taps - 1) - self.echo_delay) / rate
            source = _sample(self._speaker, self._speaker_rate, adc_time + back)
            x += np.convolve(source, self.echo_path, mode="valid")
        if self.noise_dbfs is not None:
            x += self._rng.normal(0.0, 10 ** (self.noise_dbfs / 20), n)
        return x.astype(np.float32)

    def speaker_played(self, dac_time: float, block: np.ndarray, rate: int) -> None:
        """Record a block that the speaker emits from ``dac_time`` on."""
        self.played_blocks.append((dac_time, block))
        self._speaker_rate = rate
        at = round(dac_time * rate)
        if at < 0:
            return
        if at + block.size > self._speaker.size:
            grown = np.zeros(max(2 * self._speaker.size, at + block.size), np.float32)
            grown[: self._speaker.size] = self._speaker
            self._speaker = grown
        self._speaker[at : at + block.size] = block

    # -- helpers -----------------------------------------------------------------------------

    def _listed(self) -> list[FakeDevice]:
        return [d for d in self.devices if d.connected]

    def _or_default(self, device: int | str | None, kind: str) -> int | str:
        return self.default_index(kind) if device is None else device

    def _resolve(self, device: int | str, kind: str | None) -> FakeDevice:
        listed = self._listed()
        if isinstance(device, int):
            if not 0 <= device < len(listed):
                raise PortAudioError(f"Error querying device {device}")
            found = listed[device]
        else:
            matches = [d for d in listed if device.lower() in d.name.lower()]
            if kind is not None:
                matches = [d for d in matches if getattr(d, f"max_{kind}_channels") > 0]
            if len(matches) != 1:
                what = "No" if not matches else "Multiple"
                raise ValueError(f"{what} {kind or ''} device matching {device!r}".strip())
            found = matches[0]
        if kind is not None and getattr(found, f"max_{kind}_channels") < 1:
            raise ValueError(f"Not an {kind} device: {found.name!r}")
        return found

    def _check(self, device: FakeDevice, kind: str, settings: dict[str, Any]) -> None:
        channels = settings.get("channels") or 1
        if channels > getattr(device, f"max_{kind}_channels"):
            raise PortAudioError("Invalid number of channels [PaErrorCode -9998]")
        if settings.get("dtype") not in (None, "float32", np.float32):
            raise PortAudioError("Sample format not supported [PaErrorCode -9994]")
        rate = settings.get("samplerate")
        if rate is not None and rate not in (device.default_samplerate, *device.rates):
            raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    def _open(self, kind: str, kwargs: dict[str, Any]) -> FakeStream:
        wanted = kwargs.get("device")
        pair = wanted if isinstance(wanted, (list, tuple)) else (wanted, wanted)
        devices: dict[str, FakeDevice] = {}
        for direction, asked in zip(("input", "output"), pair, strict=True):
            if kind in (direction, "duplex"):
                device = self._resolve(self._or_default(asked, direction), direction)
                self._check(device, direction, kwargs)
                devices[direction] = device
        rate = kwargs.get("samplerate") or next(iter(devices.values())).default_samplerate
        stream = FakeStream(
            fake=weakref.proxy(self),
            kind=kind,
            input_device=devices.get("input"),
            output_device=devices.get("output"),
            samplerate=int(rate),
            blocksize=kwargs.get("blocksize") or int(rate) // 100,
            channels=kwargs.get("channels") or 1,
            callback=kwargs.get("callback"),
            finished_callback=kwargs.get("finished_callback"),
        )
        self.streams.append(stream)
        return stream


def _sample(signal: np.ndarray, rate: float, times: np.ndarray) -> np.ndarray:
    """(n,) float64: ``signal`` (sample i at time i / rate) at ``times``, linearly
    interpolated, zero outside it."""
    if not signal.size:
        return np.zeros(times.shape)
    pos = times * rate
    left = np.floor(pos).astype(np.int64)
    frac = pos - left

    def at(i: np.ndarray) -> np.ndarray:
        return np.where((i >= 0) & (i < signal.size), signal[np.clip(i, 0, signal.size - 1)], 0.0)

    return (1.0 - frac) * at(left) + frac * at(left + 1)
