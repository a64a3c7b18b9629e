"""Audio devices: finding the one the user asked for, and the rate to open it at.

``Backend`` is the ``sounddevice`` module, or ``app.audio.fake_device.FakeSoundDevice``
standing in for it in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minmo_core.errors import AudioError

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
