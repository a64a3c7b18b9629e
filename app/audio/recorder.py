"""Recording a short clip from the microphone and playing one back, on the ``sounddevice``
API (or ``app.audio.fake_device.FakeSoundDevice`` in tests): what the voice-cloning dialog
records with and previews through. Blocking device calls: run them in worker threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from app.audio.devices import Backend, find_device, pick_rate, sounddevice_backend
from minmo_core.common.audio import resample, to_mono_float32
from minmo_core.errors import AudioError

REFERENCE_RATE = 24000  # a cloned voice's reference clip (CosyVoice 2's rate)


class Recorder(Protocol):
    rate: int  # Hz of the blocks, known once ``start`` returns

    def start(self, on_block: Callable[[np.ndarray], None]) -> None: ...
    def stop(self) -> None: ...
    def play(self, audio: np.ndarray, rate: int) -> None: ...


class _Playback:
    """The output callback's state: the clip and how much of it has been played."""

    def __init__(self, audio: np.ndarray, stop: type[Exception]) -> None:
        self.audio, self.at, self.stop = audio, 0, stop

    def callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        n = min(frames, self.audio.size - self.at)
        outdata[:n, 0] = self.audio[self.at : self.at + n]
        outdata[n:] = 0.0
        self.at += n
        if self.at >= self.audio.size:
            raise self.stop


class SoundDeviceRecorder:
    """Microphone recording and playback on the ``sounddevice`` API (``backend``: the module,
    the default, or ``app.audio.fake_device.FakeSoundDevice`` in tests).

    ``start`` hands each 10 ms block, copied, to ``on_block`` from the audio callback;
    ``play`` starts playback and returns. Every method opens or closes devices: call them
    from worker threads.
    """

    def __init__(
        self,
        backend: Backend = None,
        device: int | str | None = None,
        output_device: int | str | None = None,
        preferred_rate: int = REFERENCE_RATE,
    ) -> None:
        self._backend = backend
        self.device, self.output_device = device, output_device
        self.preferred_rate = preferred_rate  # the microphone's rate when it offers it
        self.rate = preferred_rate
        self._input: Any = None
        self._output: Any = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = sounddevice_backend()
        return self._backend

    def start(self, on_block: Callable[[np.ndarray], None]) -> None:
        self.stop()
        backend = self.backend
        device = find_device(backend, self.device, "input")
        rate = pick_rate(backend, device, "input", self.preferred_rate)

        def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
            on_block(indata[:, 0].copy())

        self._input = self._open(backend.InputStream, device, rate, callback, "microphone")
        self.rate = rate

    def stop(self) -> None:
        """Close the microphone and any playback."""
        self._close(self._input)
        self._close(self._output)
        self._input = self._output = None

    def play(self, audio: np.ndarray, rate: int) -> None:
        backend = self.backend
        self._close(self._output)
        self._output = None
        device = find_device(backend, self.output_device, "output")
        out_rate = pick_rate(backend, device, "output", rate)
        clip = resample(to_mono_float32(audio), rate, out_rate)
        playback = _Playback(clip, backend.CallbackStop)
        self._output = self._open(
            backend.OutputStream, device, out_rate, playback.callback, "speaker"
        )

    def _close(self, stream: Any) -> None:
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except self.backend.PortAudioError:
            pass  # a device that vanished has closed its stream already

    def _open(self, opener: Callable[..., Any], device, rate: int, callback, what: str) -> Any:
        stream = None
        try:
            stream = opener(
                samplerate=rate,
                blocksize=rate // 100,
                device=device.index,
                channels=1,
                dtype="float32",
                callback=callback,
            )
            stream.start()
        except (self.backend.PortAudioError, ValueError) as err:
            self._close(stream)
            raise AudioError(f"cannot open the {what} {device.name!r} at {rate} Hz: {err}") from err
        return stream
