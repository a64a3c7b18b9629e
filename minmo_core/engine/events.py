"""What the engine tells its user interface: plain frozen dataclasses, the only contract
between the engine and the GUI or command line.

Every event carries the turn it belongs to (``turn_id``; 0 before the first turn) and a
``time.monotonic()`` timestamp ``t``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class EngineState(StrEnum):
    IDLE = "idle"  # nothing to do: no microphone input is being listened to
    LISTENING = "listening"
    USER_SPEAKING = "user speaking"
    THINKING = "thinking"  # the reply is being prepared, nothing audible yet
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"


def now() -> float:
    return time.monotonic()


@dataclass(frozen=True, kw_only=True)
class EngineEvent:
    turn_id: int
    t: float = field(default_factory=now)


@dataclass(frozen=True, kw_only=True)
class StateChanged(EngineEvent):
    state: EngineState


@dataclass(frozen=True, kw_only=True)
class UserText(EngineEvent):
    """A typed message, as it enters the conversation."""

    text: str


@dataclass(frozen=True, kw_only=True)
class AssistantTextDelta(EngineEvent):
    """New reply text, as the LLM writes it (the screen's text, not the spoken form)."""

    text: str


@dataclass(frozen=True, kw_only=True, eq=False)
class AssistantAudio(EngineEvent):
    """A piece of the spoken reply: 24 kHz mono float32, in order.

    ``start_sample`` counts the turn's samples before this one; ``text_span`` is the range
    of the reply text (character offsets) this audio says, as far as the engine can tell.
    """

    audio: np.ndarray
    start_sample: int
    text_span: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class TurnTimings(EngineEvent):
    """Where a turn's time went, in seconds from its start (typed text in, or end of
    speech): None for a stage that never happened (an interrupted or silent reply)."""

    first_text_s: float | None  # first reply text from the LLM
    first_speech_token_s: float | None  # first speech token from the voice LM
    first_audio_s: float | None  # first audio chunk out of token2wav
    total_s: float
    llm_tokens: int
    speech_tokens: int
    d_llm_s: float | None  # mean LLM time per text token
    d_lm_s: float | None  # mean voice-LM time per speech token
    d_syn_s: float | None  # mean token2wav time per speech token
    engine_overhead_s: float  # total minus the stages' own compute
    policy_wait_s: float = 0.0  # end of speech to the turn-taking decision (spoken turns)
    speculative: bool = False  # the reply started at the pause, before the decision
    speculation_misses: int = 0  # replies started at earlier pauses, dropped: the user went on
    policy: str = ""  # the turn-taking policy that took the turn ("" for a typed turn)
    mode: str = "composed"  # "composed" (public models) or "aligned" (MinMo's adapters)
    transcribe_s: float | None = None  # the speech recogniser's time (spoken turns)


@dataclass(frozen=True, kw_only=True)
class TurnEnded(EngineEvent):
    """The turn's outcome: what the LLM wrote, what the user heard of it."""

    reply_text: str
    heard_text: str
    interrupted: bool


@dataclass(frozen=True, kw_only=True)
class EngineError(EngineEvent):
    """A one-line message naming what failed; the engine serves the next turn."""

    message: str


@dataclass(frozen=True, kw_only=True)
class UserSpeechStarted(EngineEvent):
    """The VAD heard the user start (``at``: the audio clock's time of the first frame)."""

    at: float


@dataclass(frozen=True, kw_only=True)
class PartialTranscript(EngineEvent):
    """What the user has said so far, while they are still speaking."""

    text: str


@dataclass(frozen=True, kw_only=True)
class FinalTranscript(EngineEvent):
    """The user's finished utterance, with SenseVoice's tags (None where it gave none)."""

    text: str
    language: str | None
    emotion: str | None
    event: str | None


@dataclass(frozen=True, kw_only=True, eq=False)
class UserAudio(EngineEvent):
    """The user's utterance as the recogniser heard it: 16 kHz mono float32 (after echo
    cancellation), right after its ``FinalTranscript`` (for a history that keeps audio)."""

    audio: np.ndarray


@dataclass(frozen=True, kw_only=True)
class StopSpeaking(EngineEvent):
    """The engine decided to stop speaking (MinMo's duplex predictor heard the user take
    the floor): generation has stopped; the audio side drops its queued audio and reports
    how much was heard with ``interrupt``."""

    reason: str
