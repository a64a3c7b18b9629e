"""Turn-taking: when has the user finished speaking?

Every policy answers one question each time the VAD has seen a pause: given the user's audio
so far and how long they have been quiet, is the turn over (True), not over (False: keep
listening), or not known yet (None: ask again on the next frame). The silence rule is the
fallback; Smart Turn and MinMo's duplex predictor arrive behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TurnPolicy(Protocol):
    name: str

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        """audio : (N,) float32 at 16 kHz, the user's utterance so far."""


@dataclass(frozen=True)
class SilencePolicy:
    """The turn is over after ``timeout_s`` of silence following the VAD's end of speech."""

    timeout_s: float = 0.5
    name: str = "silence"

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        return True if silence_s >= self.timeout_s else None
