"""A live spoken conversation: the audio path and the conversation engine joined (no Qt).

    microphone ─► DuplexStream ─► AudioProcessor (echo canceller, VAD, barge-in)
                                   │ clean frames, SpeechStarted/Ended ─► engine (listener)
                                   └ BargeIn ─► flush playback ─► engine.interrupt(heard)
    engine AssistantAudio ─► DuplexStream.play ─► speaker (and the canceller's far end)

Played samples are counted per turn: ``play`` numbers samples within a playback batch, and a
turn's audio can span batches when generation falls behind playback, so each turn keeps the
offset at which its current batch began. The window (coming) and ``minmo converse`` both use
this class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from app.audio.events import AudioSettings, BargeIn, SpeechEnded, SpeechStarted
from app.audio.processor import AudioProcessor
from app.audio.stream import DuplexStream
from minmo_core.engine.engine import ConversationEngine
from minmo_core.engine.events import AssistantAudio, EngineEvent


class _EngineSink:
    """The stream's frame sink: the processor, whose clean frames also feed the engine."""

    def __init__(self, processor: AudioProcessor, engine: ConversationEngine) -> None:
        self.processor, self.engine = processor, engine

    def push_far_end(self, samples16k: np.ndarray, dac_time: float) -> None:
        self.processor.push_far_end(samples16k, dac_time)

    def process(self, mic16k: np.ndarray, adc_time: float) -> np.ndarray:
        clean = self.processor.process(mic16k, adc_time)
        self.engine.push_frame(clean, adc_time)
        return clean

    def playback_started(self, time: float) -> None:
        self.processor.playback_started(time)

    def playback_stopped(self, time: float) -> None:
        self.processor.playback_stopped(time)


class LiveConversation:
    """Owns the stream and drives the engine; ``on_event`` sees engine and audio events."""

    def __init__(
        self,
        engine_factory: Callable[[Callable[[EngineEvent], None]], ConversationEngine],
        on_event: Callable[[object], None],
        audio_settings: AudioSettings | None = None,
        backend=None,
    ) -> None:
        settings = audio_settings or AudioSettings()
        self.on_event = on_event
        self.engine = engine_factory(self._engine_event)
        self.processor = AudioProcessor(settings, self._audio_event)
        sink = _EngineSink(self.processor, self.engine)
        self.stream = DuplexStream(settings, sink, backend=backend, on_event=self._audio_event)
        self._lock = threading.Lock()
        self._turn = 0  # the turn whose audio is playing
        self._turn_samples = 0  # of it, queued so far
        self._batch_start = 0  # of it, where the stream's current batch began

    def start(self, *, threaded: bool = True) -> LiveConversation:
        self.engine.start()
        try:
            self.stream.start(threaded=threaded)
        except BaseException:
            self.engine.shutdown()  # no device: nothing may keep running
            raise
        return self

    def stop(self) -> None:
        self.stream.stop()
        self.engine.shutdown()

    def played_of_turn(self, batch_played: int) -> int:
        with self._lock:
            return self._batch_start + batch_played

    def _engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, AssistantAudio):
            with self._lock:
                if event.turn_id != self._turn:
                    self._turn, self._turn_samples, self._batch_start = event.turn_id, 0, 0
                offset = self.stream.play(event.audio)
                if offset == 0:  # a new batch: everything before it was handed over
                    self._batch_start = self._turn_samples
                self._turn_samples += event.audio.size
        self.on_event(event)

    def _audio_event(self, event: object) -> None:
        if isinstance(event, SpeechStarted):
            self.engine.speech_started(event.time)
        elif isinstance(event, SpeechEnded):
            self.engine.speech_ended(event.time)
        elif isinstance(event, BargeIn):
            heard = self.played_of_turn(self.stream.flush_playback())
            self.engine.interrupt(heard)
        self.on_event(event)
