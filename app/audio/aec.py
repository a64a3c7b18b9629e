"""Echo cancellation: the assistant's own voice removed from the microphone signal.

The far end (exactly what was played, at 16 kHz) is aligned to each microphone frame by the
stream's timestamps (a sample played at DAC time t reaches the mic at t plus the acoustic
path), and a cross-correlation estimate confirms that alignment: when the device reports its
latencies wrongly, the measured lag replaces the reported one.

Backends sit behind ``EchoCanceller`` and ``make_canceller`` picks one from the settings:

* ``speex``: SpeexDSP's multi-delay block frequency-domain (MDF) adaptive filter, through the
  ``speexdsp`` package where it is installed (Linux, macOS: it compiles against the system's
  libspeexdsp), else straight from the shared library with ctypes: the one
  ``installers/speexdsp.py`` builds into ``app/audio/native/`` (what the Windows bundle
  carries), or the system's.
* ``webrtc``: WebRTC's audio processing module with AEC3 (the canceller browsers ship:
  linear filter, residual echo suppression, its own delay estimator), plus its noise
  suppressor and high-pass filter. It comes from LiveKit's ``livekit`` package, whose wheels
  carry a current WebRTC build for Linux, Windows and macOS.
* ``auto``: ``DEFAULT_BACKEND`` of the platform, or whichever of the two is installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from app.audio.events import AEC_BACKENDS, MIC_RATE, AudioSettings
from minmo_core.errors import AudioError

# the backend "auto" takes on each platform (sys.platform prefix -> backend)
DEFAULT_BACKEND = {"linux": "speex", "darwin": "speex", "win32": "speex"}


class EchoCanceller(Protocol):
    frame: int  # samples per call
    # the last near frame as the canceller passes it with the echo left in: its filters and
    # delay applied, nothing removed. ``passed - clean`` is the echo the canceller took out.
    passed: np.ndarray

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """near, far : (frame,) float32 in [-1, 1] -> echo-cancelled near (frame,) float32."""
        ...

    def reset(self) -> None: ...


def describe(canceller: EchoCanceller) -> str:
    """Which canceller this is, and for SpeexDSP where its library came from (the
    self-test says it: on Windows, proof that the bundled DLL loads and runs)."""
    if isinstance(canceller, SpeexEchoCanceller):
        speex = canceller._speex
        source = speex.path if isinstance(speex, SpeexLibrary) else "the speexdsp package"
        return f"SpeexDSP ({source})"
    if isinstance(canceller, WebRtcEchoCanceller):
        return "WebRTC AEC3"
    return "off"


class NoEchoCanceller:
    """Echo cancellation switched off (headphones): the microphone as it came."""

    def __init__(self, frame: int = 160) -> None:
        self.frame = frame
        self.passed = np.zeros(frame, np.float32)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        self.passed = near.astype(np.float32, copy=True)
        return self.passed.copy()

    def reset(self) -> None:
        pass


class SpeexEchoCanceller:
    """SpeexDSP's multi-delay block frequency-domain adaptive filter."""

    def __init__(self, frame: int = 160, tail_ms: int = 400, sample_rate: int = MIC_RATE):
        self._speex = _speexdsp()
        self.frame, self.tail, self.sample_rate = frame, tail_ms * sample_rate // 1000, sample_rate
        self._state = self._speex.EchoCanceller_create(frame, self.tail, sample_rate)
        self.passed = np.zeros(frame, np.float32)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        self.passed = near.astype(np.float32, copy=True)
        out = self._speex.EchoCanceller_process(self._state, _pcm16(near), _pcm16(far))
        return np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768.0

    def reset(self) -> None:
        self._speex.delete_EchoCanceller(self._state)
        self._state = self._speex.EchoCanceller_create(self.frame, self.tail, self.sample_rate)

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None:
            self._speex.delete_EchoCanceller(state)


class WebRtcEchoCanceller:
    """WebRTC's AEC3 with its noise suppressor and high-pass filter, through LiveKit's APM.

    Each call hands the far end (already aligned to the microphone frame by the caller) to
    the module's render side, then the microphone frame to its capture side, with a reported
    delay of 0: what is left, the acoustic path and any misalignment, AEC3's own delay
    estimator finds. The module takes 10 ms frames of 16-bit PCM.

    The module does not pass the voice through untouched: its high-pass filter turns the
    phase of low frequencies (120 degrees at 200 Hz) and AEC3 delays the capture by 8 ms
    (two of its 64-sample blocks). So ``mic - clean`` would hold the user's voice as well as
    the removed echo. A twin module with the same settings and a silent far end gives
    ``passed``, the microphone as the module treats it with no echo removed.
    """

    def __init__(
        self, frame: int = 160, noise_suppression: bool = True, sample_rate: int = MIC_RATE
    ) -> None:
        if frame * 100 != sample_rate:
            raise AudioError(
                f"WebRTC's echo canceller takes 10 ms frames: {frame} samples at "
                f"{sample_rate} Hz is {1000 * frame / sample_rate:g} ms"
            )
        self._rtc = _livekit_rtc()
        self.frame, self.sample_rate, self.noise_suppression = frame, sample_rate, noise_suppression
        self._apm, self._twin = self._new(), self._new()
        self.passed = np.zeros(frame, np.float32)
        self._silence = _pcm16(np.zeros(frame, np.float32))

    def _new(self):
        return self._rtc.AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=self.noise_suppression,
            high_pass_filter=True,
            auto_gain_control=False,  # the level meter and the VAD's thresholds need the raw level
        )

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        if near.size != self.frame or far.size != self.frame:
            raise AudioError(f"the echo canceller takes frames of {self.frame} samples")
        pcm = _pcm16(near)
        clean = self._run(self._apm, pcm, _pcm16(far))
        self.passed = self._run(self._twin, pcm, self._silence)
        return clean

    def _run(self, apm, near: bytes, far: bytes) -> np.ndarray:
        render = self._rtc.AudioFrame(far, self.sample_rate, 1, self.frame)
        capture = self._rtc.AudioFrame(near, self.sample_rate, 1, self.frame)
        try:
            apm.process_reverse_stream(render)
            apm.set_stream_delay_ms(0)
            apm.process_stream(capture)
        except RuntimeError as err:
            raise AudioError(f"WebRTC's echo canceller failed: {err}") from err
        return np.frombuffer(capture.data, dtype=np.int16).astype(np.float32) / 32768.0

    def reset(self) -> None:
        self._apm, self._twin = self._new(), self._new()


@functools.cache
def _livekit_rtc():
    try:
        from livekit import rtc
    except ImportError as err:
        raise AudioError(
            "WebRTC's echo canceller comes with LiveKit's package: `pip install livekit`"
        ) from err
    return rtc


def backend_installed(name: str) -> bool:
    """Whether the named backend's library can be loaded here."""
    try:
        if name == "speex":
            _speexdsp()
        elif name == "webrtc":
            _livekit_rtc()
        else:
            raise AudioError(f"unknown echo canceller {name!r}: one of {', '.join(AEC_BACKENDS)}")
    except AudioError:
        return False
    return True


def resolve_backend(name: str) -> str:
    """The backend that ``name`` means here: ``auto`` is the platform's default if it is
    installed, else the other one; a named backend must be installed."""
    if name not in AEC_BACKENDS:
        raise AudioError(f"unknown echo canceller {name!r}: one of {', '.join(AEC_BACKENDS)}")
    if name != "auto":
        return name
    default = next((b for p, b in DEFAULT_BACKEND.items() if sys.platform.startswith(p)), "speex")
    others = [b for b in AEC_BACKENDS if b not in ("auto", default)]
    for backend in (default, *others):
        if backend_installed(backend):
            return backend
    raise AudioError(
        f"no echo canceller is installed: {SPEEX_HOW_TO} or `pip install livekit` (WebRTC); or "
        "switch echo cancellation off in Settings when you use headphones"
    )


def make_canceller(settings: AudioSettings) -> EchoCanceller:
    """The echo canceller the settings ask for (the microphone as it is when switched off)."""
    frame = MIC_RATE // 100
    if not settings.echo_cancellation:
        return NoEchoCanceller(frame)
    backend = resolve_backend(settings.aec_backend)
    if backend == "webrtc":
        return WebRtcEchoCanceller(frame)
    return SpeexEchoCanceller(frame, settings.aec_tail_ms)


SPEEX_HOW_TO = (
    "`pip install speexdsp` (needs libspeexdsp: `apt install libspeexdsp-dev`, `brew install "
    "speexdsp`), or build the library with `python -m installers.speexdsp`"
)
NATIVE_DIR = Path(__file__).resolve().parent / "native"  # installers/speexdsp.py builds here
SPEEX_LIBRARY_NAMES = {"win32": "speexdsp.dll", "darwin": "libspeexdsp.dylib"}  # else .so


@functools.cache
def _speexdsp():
    """SpeexDSP's echo canceller: the ``speexdsp`` package's compiled module if it is
    installed, else the shared library through ctypes (``SpeexLibrary``).
    MINMO_SPEEXDSP_LIBRARY names a library to use instead of either."""
    chosen = os.environ.get("MINMO_SPEEXDSP_LIBRARY")
    if chosen:
        try:
            return SpeexLibrary(chosen)
        except OSError as err:
            raise AudioError(f"MINMO_SPEEXDSP_LIBRARY={chosen} cannot be loaded: {err}") from err
    try:
        return _speexdsp_extension()
    except AudioError as missing:
        for path in speex_library_candidates():
            try:
                return SpeexLibrary(path)
            except OSError:
                continue
        raise AudioError(f"SpeexDSP is not installed: {SPEEX_HOW_TO}") from missing


def _speexdsp_extension():
    """The ``speexdsp`` package's compiled module, loaded on its own.

    The package's Python wrapper was generated by an old SWIG that imports ``imp``, which
    Python 3.12 removed; the extension itself is fine, so it is loaded directly.
    """
    spec = importlib.util.find_spec("speexdsp")
    if spec is None or spec.origin is None:
        raise AudioError("the speexdsp package is not installed")
    found = sorted(Path(spec.origin).parent.glob("_speexdsp*.so")) + sorted(
        Path(spec.origin).parent.glob("_speexdsp*.pyd")
    )
    if not found:
        raise AudioError(f"the speexdsp package in {Path(spec.origin).parent} has no extension")
    ext = importlib.util.spec_from_file_location("_speexdsp", found[0])
    module = importlib.util.module_from_spec(ext)
    ext.loader.exec_module(module)
    return module


def speex_library_candidates() -> list[str]:
    """Where libspeexdsp may be, best first: the one built for the app, then the system's
    (its loader's search path, then Homebrew's and MSYS2's usual places)."""
    name = SPEEX_LIBRARY_NAMES.get(sys.platform, "libspeexdsp.so")
    found = [str(NATIVE_DIR / name)] if (NATIVE_DIR / name).exists() else []
    system = ctypes.util.find_library("speexdsp") or ctypes.util.find_library("libspeexdsp")
    if system:
        found.append(system)
    if sys.platform == "darwin":
        found += [f"{p}/lib/libspeexdsp.dylib" for p in ("/opt/homebrew", "/usr/local")]
    elif sys.platform == "win32":
        found.append("libspeexdsp-1.dll")
    else:
        found.append("libspeexdsp.so.1")
    return list(dict.fromkeys(found))


class SpeexLibrary:
    """SpeexDSP's echo canceller called in its shared library with ctypes.

    It offers the three calls of the ``speexdsp`` package's module that
    ``SpeexEchoCanceller`` makes, and does what that module does: a one-microphone,
    one-loudspeaker state told its sampling rate, then ``speex_echo_cancellation`` per frame.
    """

    SET_SAMPLING_RATE = 24  # SPEEX_ECHO_SET_SAMPLING_RATE in speex/speex_echo.h

    def __init__(self, path: str) -> None:
        self.path = path
        lib = self._lib = ctypes.CDLL(path)
        lib.speex_echo_state_init_mc.restype = ctypes.c_void_p
        lib.speex_echo_state_init_mc.argtypes = [ctypes.c_int] * 4
        lib.speex_echo_ctl.restype = ctypes.c_int
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_cancellation.restype = None
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
        lib.speex_echo_state_destroy.restype = None
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        self._frames: dict[int, int] = {}  # state -> samples per frame

    def EchoCanceller_create(self, frame: int, tail: int, sample_rate: int) -> int:
        state = self._lib.speex_echo_state_init_mc(frame, tail, 1, 1)
        if not state:
            raise AudioError(f"SpeexDSP ({self.path}) could not make an echo canceller")
        rate = ctypes.c_int(sample_rate)
        self._lib.speex_echo_ctl(state, self.SET_SAMPLING_RATE, ctypes.byref(rate))
        self._frames[state] = frame
        return state

    def EchoCanceller_process(self, state: int, near: bytes, far: bytes) -> bytes:
        frame = self._frames[state]
        if len(near) != 2 * frame or len(far) != 2 * frame:
            raise AudioError(f"the echo canceller takes frames of {frame} samples")
        out = ctypes.create_string_buffer(2 * frame)
        self._lib.speex_echo_cancellation(state, near, far, out)
        return out.raw

    def delete_EchoCanceller(self, state: int) -> None:
        if self._frames.pop(state, None) is not None:
            self._lib.speex_echo_state_destroy(state)


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


class FarEndBuffer:
    """What was played, at 16 kHz, indexed by the time each sample left the loudspeaker.

    Holds the last ``seconds`` of playback; time with nothing playing reads as silence.
    """

    def __init__(self, seconds: float = 4.0, sample_rate: int = MIC_RATE) -> None:
        self.rate = sample_rate
        self.buffer = np.zeros(int(seconds * sample_rate), np.float32)
        self.start = None  # stream time of buffer[0], once anything was played
        self.end = 0  # samples written (relative to start)

    def push(self, samples: np.ndarray, dac_time: float) -> None:
        """samples (n,) float32 whose first sample was played at ``dac_time``."""
        if self.start is None:
            self.start = dac_time
        at = round((dac_time - self.start) * self.rate)
        at = max(at, self.end - samples.size)  # never rewrite far back in time (clock jitter)
        cap = self.buffer.size
        if at + samples.size - self.end > cap or at - self.end > cap:  # long gap: start afresh
            self.buffer[:] = 0.0
            self.start, self.end, at = dac_time, 0, 0
        if at > self.end:  # a pause in playback: silence
            self._write(self.end, np.zeros(at - self.end, np.float32))
        self._write(at, samples)
        self.end = max(self.end, at + samples.size)

    def _write(self, at: int, samples: np.ndarray) -> None:
        idx = (at + np.arange(samples.size)) % self.buffer.size
        self.buffer[idx] = samples

    def read(self, time: float, n: int, shift: float = 0.0) -> np.ndarray:
        """The n samples that were played from ``time`` on (zeros where nothing was),
        ``shift`` samples earlier: a fractional shift is read between samples through a
        Kaiser-windowed sinc (exact to -60 dB up to 6 kHz, so the echo path the canceller
        learns does not change as the fraction sweeps; above 7 kHz it is not), for
        clock-drift compensation."""
        if self.start is None:
            return np.zeros(n, np.float32)
        at = round((time - self.start) * self.rate)
        whole = math.floor(shift)
        frac = shift - whole
        if frac < 1e-9:
            return self._read_at(at - whole, n)
        # position at - shift + k = base + u + k, between base + k and base + k + 1
        base, u = at - whole - 1, 1.0 - frac
        half = FRACTIONAL_TAPS // 2
        points = self._read_at(base - half + 1, n + FRACTIONAL_TAPS - 1)
        return np.correlate(points, _fractional_taps(round(u, 4)), "valid").astype(np.float32)

    def _read_at(self, at: int, n: int) -> np.ndarray:
        """n samples from buffer position ``at`` (samples since ``start``)."""
        out = np.zeros(n, np.float32)
        lo, hi = max(at, self.end - self.buffer.size, 0), min(at + n, self.end)
        if hi > lo:
            out[lo - at : hi - at] = self.buffer[np.arange(lo, hi) % self.buffer.size]
        return out


FRACTIONAL_TAPS = 16  # windowed-sinc taps of a fractional far-end read


@functools.lru_cache(maxsize=4096)
def _fractional_taps(u: float) -> np.ndarray:
    """Taps that interpolate at u (0..1) past a sample, from FRACTIONAL_TAPS neighbours
    (the first at -FRACTIONAL_TAPS / 2 + 1): a Kaiser-windowed sinc, normalised to unit
    gain at DC."""
    half = FRACTIONAL_TAPS // 2
    offsets = np.arange(-half + 1, half + 1) - u  # each neighbour's distance from the point
    window = np.i0(6.0 * np.sqrt(np.clip(1.0 - (offsets / half) ** 2, 0.0, 1.0))) / np.i0(6.0)
    taps = np.sinc(offsets) * window
    return (taps / taps.sum()).astype(np.float32)


def estimate_delay(far: np.ndarray, mic: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples, mic behind far) maximising their normalised cross-correlation, and the
    peak's height (0..1): how much of the mic signal is a delayed copy of the far end."""
    lag, strength = estimate_delay_fine(far, mic, max_lag)
    return round(lag), strength


def estimate_delay_fine(far: np.ndarray, mic: np.ndarray, max_lag: int) -> tuple[float, float]:
    """``estimate_delay`` to a fraction of a sample: the parabola through the peak and its
    two neighbours puts the lag between them (the clock-drift fit needs it: a 100 ppm drift
    moves the echo 1.6 samples a second)."""
    n = far.size + mic.size
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(mic, size) * np.conj(np.fft.rfft(far, size))
    # phase transform: sharp peaks even for reverberant, coloured echo paths
    corr = np.fft.irfft(spectrum / np.maximum(np.abs(spectrum), 1e-12), size)[: max_lag + 1]
    lag = int(np.argmax(corr))
    offset = 0.0
    if 0 < lag < corr.size - 1:
        before, peak, after = corr[lag - 1], corr[lag], corr[lag + 1]
        curve = before - 2 * peak + after
        if curve < 0:
            offset = float(np.clip(0.5 * (before - after) / curve, -0.5, 0.5))
    return lag + offset, float(corr[lag])
