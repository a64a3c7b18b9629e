"""The user's side of a spoken turn, fed from the audio thread: frames, VAD starts and ends.

    speech_started ─► a new utterance (with the last ``padding_s`` of audio before it)
    push_frame     ─► the utterance grows; every ``partial_every_s`` a partial transcript is
                      asked for; after a VAD end, the turn policy is asked on every frame
    speech_ended   ─► the pause the policy judges (``on_pause`` lets the engine start a
                      reply speculatively); speech before it decides continues the same
                      utterance (``on_resume``)

The utterance handed on is the audio up to the VAD's end of speech, whether the turn is
taken at the pause (speculation) or after the policy's wait: both hear the same audio.

All methods are cheap and thread-safe: the transcription and the reply run on the engine's
worker, which the callbacks hand work to.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from minmo_core.engine.turns import TurnPolicy

SAMPLE_RATE = 16000


class _Utterance:
    """An utterance's samples in one growing buffer. Appending a frame costs the frame
    (amortised), and reading the whole utterance is a view, not a copy: the audio thread asks
    for it on every frame of a pause. Written samples are never overwritten, so the views
    handed to other threads stay valid while the utterance grows."""

    def __init__(self, frames) -> None:
        self.buffer = np.zeros(SAMPLE_RATE, np.float32)
        self.size = 0
        for frame in frames:
            self.append(frame)

    def append(self, frame: np.ndarray) -> None:
        end = self.size + frame.size
        if end > self.buffer.size:
            grown = np.zeros(max(end, 2 * self.buffer.size), np.float32)
            grown[: self.size] = self.buffer[: self.size]
            self.buffer = grown
        self.buffer[self.size : end] = frame
        self.size = end

    def audio(self, samples: int | None = None) -> np.ndarray:
        return self.buffer[: self.size if samples is None else samples]


class Listener:
    def __init__(
        self,
        policy: TurnPolicy,
        on_start: Callable[[float], None],
        on_partial: Callable[[np.ndarray], None],
        on_turn: Callable[[np.ndarray, float], None],  # (utterance, silence waited in s)
        padding_s: float = 0.2,
        partial_every_s: float = 0.3,
        on_pause: Callable[[np.ndarray], None] | None = None,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_start, self.on_partial, self.on_turn = on_start, on_partial, on_turn
        self.on_pause, self.on_resume = on_pause, on_resume
        self.partial_every_s = partial_every_s
        self._lock = threading.Lock()
        self._before: deque[np.ndarray] = deque(maxlen=max(1, round(padding_s * 100)))
        self._frames: _Utterance | None = None  # the utterance, while there is one
        self._ended_at: float | None = None  # the VAD's end of the latest speech
        self._end_samples = 0  # the utterance's length at that end
        self._last_partial = 0.0

    @property
    def active(self) -> bool:
        return self._frames is not None

    def speech_started(self, t: float) -> None:
        with self._lock:
            resumed = self._frames is not None and self._ended_at is not None
            self._ended_at = None
            if self._frames is None:
                self._frames = _Utterance(self._before)
                self._last_partial = t
                started = True
            else:
                started = False  # the user went on after a pause the policy had not judged
        if started:
            self.on_start(t)
        elif resumed and self.on_resume is not None:
            self.on_resume()

    def speech_ended(self, t: float) -> None:
        with self._lock:
            if self._frames is None:
                return
            self._ended_at = t
            self._end_samples = self._frames.size
            speech = self._frames.audio() if self.on_pause is not None else None
        if speech is not None:
            self.on_pause(speech)

    def push_frame(self, frame: np.ndarray, t: float) -> None:
        """frame : (n,) float32 at 16 kHz (10 ms frames), the echo-cancelled microphone."""
        partial = turn = None
        with self._lock:
            if self._frames is None:
                self._before.append(frame)
                return
            self._frames.append(frame)
            if self._ended_at is None:
                if t - self._last_partial >= self.partial_every_s:
                    self._last_partial = t
                    partial = self._frames.audio()
            else:
                audio = self._frames.audio()
                silence = t - self._ended_at
                if self.policy.turn_is_over(audio, silence):
                    turn = audio[: self._end_samples]  # the speech, as the pause saw it
                    self._frames, self._ended_at = None, None
                    self._before.clear()
        if partial is not None:
            self.on_partial(partial)
        if turn is not None:
            self.on_turn(turn, silence)

    def reset(self) -> None:
        with self._lock:
            self._frames, self._ended_at = None, None
            self._before.clear()
