"""Audio devices: finding the one the user asked for, the rate to open it at, and the
settings' checks of a device (a test tone, a microphone's level).

``Backend`` is the ``sounddevice`` module, or ``app.audio.fake_device.FakeSoundDevice``
standing in for it in tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.audio.events import MIC_RATE
from minmo_core.errors import AudioError, first_line

Backend = Any


@dataclass(frozen=True)
class DeviceInfo:
    index: int  # PortAudio device index (changes when devices come and go)
    name: str
    default_rate: int  # Hz


def list_devices(backend: Backend, kind: str) -> list[DeviceInfo]:
    """The devices with at least one ``kind`` ("input" or "output") channel."""
    try:
        devices = list(backend.query_devices())
    except backend.PortAudioError as err:
        raise AudioError(f"cannot list audio devices: {err}") from err
    return [
        DeviceInfo(int(d.get("index", i)), str(d["name"]), round(d["default_samplerate"]))
        for i, d in enumerate(devices)
        if d[f"max_{kind}_channels"] > 0
    ]


def find_device(backend: Backend, wanted: int | str | None, kind: str) -> DeviceInfo:
    """The ``kind`` device by index, by (case-insensitive part of its) name, or the default.

    Raises AudioError naming the device and listing those that exist when there is no match,
    when a name matches several devices, or when there is no ``kind`` device at all.
    """
    devices = list_devices(backend, kind)
    if not devices:
        thing = "microphone" if kind == "input" else "speaker or headphones"
        raise AudioError(f"no audio {kind} device found: is a {thing} connected?")
    listing = "; ".join(f"{d.index}: {d.name}" for d in devices)
    if wanted is None:
        try:
            default = int(backend.query_devices(kind=kind)["index"])
        except (backend.PortAudioError, ValueError):
            return devices[0]
        return next((d for d in devices if d.index == default), devices[0])
    if isinstance(wanted, int):
        matches = [d for d in devices if d.index == wanted]
    else:
        needle = wanted.strip().lower()
        matches = [d for d in devices if d.name.lower() == needle] or [
            d for d in devices if needle in d.name.lower()
        ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioError(f"audio {kind} device {wanted!r} not found; {kind} devices: {listing}")
    names = ", ".join(repr(d.name) for d in matches)
    raise AudioError(
        f"audio {kind} device {wanted!r} matches {names}: give more of the name or the index"
    )


def pick_rate(backend: Backend, device: DeviceInfo, kind: str, preferred: int) -> int:
    """``preferred`` when the device takes it (mono float32), else its default rate."""
    check = backend.check_input_settings if kind == "input" else backend.check_output_settings
    try:
        check(device=device.index, channels=1, dtype="float32", samplerate=preferred)
    except (backend.PortAudioError, ValueError):
        return device.default_rate
    return preferred


def sounddevice_backend() -> Backend:
    """The sounddevice module; AudioError when PortAudio itself is missing."""
    try:
        import sounddevice
    except OSError as err:  # the PortAudio library itself is missing
        raise AudioError(f"PortAudio is not available: {err}") from err
    return sounddevice


TONE_HZ = 440.0
TONE_DBFS = -12.0  # peak level of the test tone: clearly audible, never loud
FADE_S = 0.01  # the tone's fade in and out (no clicks)
SILENCE_DBFS = -120.0  # what measure_input reports for digital silence
GRACE_S = 3.0  # how long past its length a check waits for the device before giving up


def tone_samples(rate: int, seconds: float, frequency: float = TONE_HZ) -> np.ndarray:
    """(n,) float32: a sine at ``TONE_DBFS`` peak, faded in and out."""
    n = max(1, round(rate * seconds))
    x = 10 ** (TONE_DBFS / 20) * np.sin(2 * np.pi * frequency * np.arange(n) / rate)
    fade = min(n // 2, round(rate * FADE_S))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    return x.astype(np.float32)


def play_tone(
    backend: Backend, wanted: int | str | None, seconds: float = 1.0, timeout_s: float | None = None
) -> DeviceInfo:
    """Play the test tone on the ``wanted`` output device and return once it has played
    (blocking: call it from a worker thread). AudioError says what went wrong."""
    device = find_device(backend, wanted, "output")
    rate = pick_rate(backend, device, "output", 48000)
    samples = tone_samples(rate, seconds)
    played = [0]

    def callback(outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        start = played[0]
        chunk = samples[start : start + frames]
        outdata[: chunk.size, 0] = chunk
        outdata[chunk.size :] = 0.0
        played[0] = start + chunk.size
        if played[0] >= samples.size:
            raise backend.CallbackStop

    _run(backend, "output", device, rate, callback, seconds, timeout_s)
    if played[0] < samples.size:
        raise AudioError(f"audio output device {device.name!r} stopped during the test tone")
    return device


def measure_input(
    backend: Backend, wanted: int | str | None, seconds: float = 2.0, timeout_s: float | None = None
) -> float:
    """The peak level in dBFS that the ``wanted`` input device hears over ``seconds``
    (``SILENCE_DBFS`` at the least; blocking: call it from a worker thread)."""
    device = find_device(backend, wanted, "input")
    rate = pick_rate(backend, device, "input", MIC_RATE)
    needed = max(1, round(rate * seconds))
    heard = [0, 0.0]  # samples, peak

    def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        take = min(frames, needed - heard[0])
        if take > 0:
            heard[1] = max(heard[1], float(np.abs(indata[:take, 0]).max()))
            heard[0] += take
        if heard[0] >= needed:
            raise backend.CallbackStop

    _run(backend, "input", device, rate, callback, seconds, timeout_s)
    if heard[0] < needed:
        raise AudioError(f"audio input device {device.name!r} stopped during the check")
    return max(SILENCE_DBFS, 20 * math.log10(heard[1])) if heard[1] > 0 else SILENCE_DBFS


def _run(
    backend: Backend,
    kind: str,
    device: DeviceInfo,
    rate: int,
    callback: Callable[..., None],
    seconds: float,
    timeout_s: float | None,
) -> None:
    """Open a mono ``kind`` stream on ``device`` with ``callback`` and wait until the callback
    stops it (or the device does), at most ``timeout_s`` (its length plus a grace)."""
    ended = threading.Event()
    opener = backend.InputStream if kind == "input" else backend.OutputStream
    wait = seconds + GRACE_S if timeout_s is None else timeout_s
    try:
        with opener(
            device=device.index,
            samplerate=rate,
            channels=1,
            dtype="float32",
            callback=callback,
            finished_callback=ended.set,
        ):
            finished = ended.wait(wait)
    except (backend.PortAudioError, ValueError) as err:
        why = first_line(err)
        raise AudioError(f"cannot open audio {kind} device {device.name!r}: {why}") from err
    if not finished:
        raise AudioError(f"audio {kind} device {device.name!r} did not run for {wait:g} s")
