"""The user's side of a spoken turn, fed from the audio thread: frames, VAD starts and ends.

    speech_started ─► a new utterance (with the last ``padding_s`` of audio before it)
    push_frame     ─► the utterance grows; every ``partial_every_s`` a partial transcript is
                      asked for; after a VAD end, the turn policy is asked on every frame
    speech_ended   ─► the pause the policy judges; speech before it decides continues the
                      same utterance

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


class Listener:
    def __init__(
        self,
        policy: TurnPolicy,
        on_start: Callable[[float], None],
        on_partial: Callable[[np.ndarray], None],
        on_turn: Callable[[np.ndarray, float], None],  # (utterance, silence waited in s)
        padding_s: float = 0.2,
        partial_every_s: float = 0.3,
    ) -> None:
        self.policy = policy
        self.on_start, self.on_partial, self.on_turn = on_start, on_partial, on_turn
        self.partial_every_s = partial_every_s
        self._lock = threading.Lock()
        self._before: deque[np.ndarray] = deque(maxlen=max(1, round(padding_s * 100)))
        self._frames: list[np.ndarray] | None = None  # the utterance, while there is one
        self._ended_at: float | None = None  # the VAD's end of the latest speech
        self._last_partial = 0.0

    @property
    def active(self) -> bool:
        return self._frames is not None

    def speech_started(self, t: float) -> None:
        with self._lock:
            self._ended_at = None
            if self._frames is not None:
                return  # the user went on after a pause the policy had not judged over
            self._frames = list(self._before)
            self._last_partial = t
        self.on_start(t)

    def speech_ended(self, t: float) -> None:
        with self._lock:
            if self._frames is not None:
                self._ended_at = t

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
                    partial = np.concatenate(self._frames)
            else:
                audio = np.concatenate(self._frames)
                silence = t - self._ended_at
                if self.policy.turn_is_over(audio, silence):
                    turn = audio
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
