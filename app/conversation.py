"""A live spoken conversation: the audio path and the conversation engine joined (no Qt).

    microphone ─► DuplexStream ─► AudioProcessor (echo canceller, VAD, barge-in)
                                   │ clean frames, SpeechStarted/Ended ─► engine (listener)
                                   └ BargeIn ─► flush playback, engine.pause(heard)
                                     FalseBargeIn ─► engine.resume(), replay from heard
                                     BargeInConfirmed ─► engine.interrupt(heard)
    engine AssistantAudio ─► DuplexStream.play ─► speaker (and the canceller's far end)
    engine StopSpeaking (duplex predictor) ─► flush playback, engine.interrupt(heard)

A barge-in silences the assistant at once but is tentative: the reply is held, not ended,
until the audio path knows whether the user really took the floor. If they said nothing
more (a cough, a door), playback resumes where it stopped and generation goes on; if they
went on speaking, or the engine took their turn, the reply ends and the history keeps what
was heard. Audio the engine makes while held waits here, unplayed.

Played samples are counted per turn: ``play`` numbers samples within a playback batch, and a
turn's audio can span batches (generation falling behind playback, a resume), so each turn
keeps the turn sample at which its current batch began. The window (coming) and
``minmo converse`` both use this class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from app.audio.events import (
    AudioSettings,
    BargeIn,
    BargeInConfirmed,
    FalseBargeIn,
    SpeechEnded,
    SpeechStarted,
)
from app.audio.processor import AudioProcessor
from app.audio.stream import DuplexStream
from minmo_core.engine.engine import ConversationEngine
from minmo_core.engine.events import AssistantAudio, EngineEvent, StopSpeaking, TurnEnded
from minmo_core.engine.turns import SilencePolicy

VOICE_DECISIONS = (SpeechStarted, SpeechEnded, BargeIn, FalseBargeIn, BargeInConfirmed)


class _EngineSink:
    """The stream's frame sink: the processor, whose clean frames also feed the engine."""

    def __init__(self, processor: AudioProcessor, engine: ConversationEngine) -> None:
        self.processor, self.engine = processor, engine
        self.last_time = 0.0  # the capture time of the latest frame (the stream clock)

    def push_far_end(self, samples16k: np.ndarray, dac_time: float) -> None:
        self.processor.push_far_end(samples16k, dac_time)

    def process(self, mic16k: np.ndarray, adc_time: float) -> np.ndarray:
        clean = self.processor.process(mic16k, adc_time)
        self.last_time = adc_time
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
        self._sink = sink = _EngineSink(self.processor, self.engine)
        self.stream = DuplexStream(settings, sink, backend=backend, on_event=self._audio_event)
        self._lock = threading.Lock()
        self._turn = 0  # the turn whose audio is playing
        self._audio: list[np.ndarray] = []  # that turn's audio, as the engine made it
        self._made = 0  # of it, samples made
        self._queued = 0  # of it, samples handed to the stream (the end of what was queued)
        self._batch_start = 0  # of it, where the stream's current batch began
        self._held_at: int | None = None  # a tentative barge-in: the samples heard by then
        self._ended = 0  # the latest turn whose reply was ended by the user
        self._talk_policy = None  # push-to-talk: the hands-free policy, kept to go back to
        self._talking = False  # push-to-talk: the talk key is down

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

    @property
    def held(self) -> bool:
        """A barge-in is tentative: the assistant is silent, its reply waits."""
        return self._held_at is not None

    def played_of_turn(self, batch_played: int) -> int:
        with self._lock:
            return self._batch_start + batch_played

    def _play(self, audio: np.ndarray) -> None:
        """Queue the next samples of the turn (the caller holds the lock)."""
        offset = self.stream.play(audio)
        if offset == 0:  # a new batch: everything before it was handed over
            self._batch_start = self._queued
        self._queued += audio.size

    def _engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, AssistantAudio):
            with self._lock:
                if event.turn_id != self._turn:
                    self._turn, self._audio, self._made = event.turn_id, [], 0
                    self._queued = self._batch_start = 0
                    self._held_at = None
                self._audio.append(event.audio)
                self._made += event.audio.size
                if self._held_at is None and event.turn_id != self._ended:
                    self._play(event.audio)
        elif isinstance(event, StopSpeaking):
            self._stop_turn()
        elif isinstance(event, TurnEnded) and event.interrupted:
            with self._lock:
                self._ended = max(self._ended, event.turn_id)
        self.on_event(event)

    # -- push-to-talk -----------------------------------------------------------------------
    @property
    def push_to_talk(self) -> bool:
        return self._talk_policy is not None

    def set_push_to_talk(self, on: bool) -> None:
        """Push-to-talk: the talk key, not the VAD, says when the user speaks, and its
        release ends the turn at once; the voice alone never interrupts the assistant.
        Hands-free (off): the VAD, the turn-taking policy and barge-in decide."""
        if on == self.push_to_talk:
            return
        if on:
            self._talk_policy = self.engine.policy
            self.engine.set_policy(SilencePolicy(timeout_s=0.0, name="push-to-talk"))
        else:
            if self._talking:
                self.talk_released()
            self.engine.set_policy(self._talk_policy)
            self._talk_policy = None

    def talk_pressed(self) -> None:
        """The talk key went down: the assistant stops, the user's utterance begins."""
        if not self.push_to_talk or self._talking:
            return
        self._talking = True
        if self.engine.replying or self.stream.is_playing:
            self._stop_turn()
        self.engine.speech_started(self._sink.last_time)

    def talk_released(self) -> None:
        """The talk key came up: the utterance is over and is answered."""
        if not self._talking:
            return
        self._talking = False
        self.engine.speech_ended(self._sink.last_time)

    def _audio_event(self, event: object) -> None:
        if self.push_to_talk and isinstance(event, VOICE_DECISIONS):
            if not isinstance(event, BargeIn | FalseBargeIn | BargeInConfirmed):
                self.on_event(event)  # the VAD's spans still show; its decisions do not act
            return
        if isinstance(event, SpeechStarted):
            self.engine.speech_started(event.time)
        elif isinstance(event, SpeechEnded):
            self.engine.speech_ended(event.time)
        elif isinstance(event, BargeIn):
            with self._lock:
                flushed = self.stream.flush_playback()
                self._held_at = heard = self._batch_start + flushed
            self.engine.pause(heard)
        elif isinstance(event, FalseBargeIn):
            self._resume()
        elif isinstance(event, BargeInConfirmed):
            self._stop_turn()
        self.on_event(event)

    def _resume(self) -> None:
        """The barge-in was false: play the rest of the turn from where it stopped."""
        with self._lock:
            heard, self._held_at = self._held_at, None
            if heard is None or self._turn == self._ended:
                return
            self.engine.resume()
            rest = np.concatenate(self._audio)[heard:] if self._audio else np.zeros(0)
            self._queued = heard
            if rest.size:
                self._play(rest.astype(np.float32, copy=False))

    def _stop_turn(self) -> None:
        """The reply is over where the user stopped hearing it."""
        with self._lock:
            if self._held_at is not None:
                heard = self._held_at
            else:
                heard = self._batch_start + self.stream.flush_playback()
            self._held_at = None
            self._ended = max(self._ended, self._turn)
        self.engine.interrupt(heard)
