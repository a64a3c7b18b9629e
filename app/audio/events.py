"""The audio path's contract with the rest of the app: settings and events (plain data)."""

from __future__ import annotations

from dataclasses import dataclass

MIC_RATE = 16000  # Hz: everything after capture runs at the speech models' rate
PLAYBACK_RATE = 24000  # Hz: what CosyVoice 2 produces
FRAME_MS = 10
AEC_BACKENDS = ("auto", "speex", "webrtc")  # echo canceller backends (app.audio.aec)
MIC_FRAME = MIC_RATE * FRAME_MS // 1000  # 160 samples per processing frame


@dataclass(frozen=True)
class AudioSettings:
    """What the user (or a test) can set about the audio path."""

    input_device: int | str | None = None  # index, (part of a) name, or the system default
    output_device: int | str | None = None
    frame_ms: int = FRAME_MS  # 10 or 20
    aec_tail_ms: int = 400  # echo canceller filter length (>= 200; SpeexDSP's)
    echo_cancellation: bool = True  # off: the microphone as it is (headphones, a test)
    aec_backend: str = "auto"  # one of AEC_BACKENDS (app.audio.aec.make_canceller)
    vad_aggressiveness: int = 2  # webrtcvad 0..3
    vad_start_ms: int = 60  # speech this long starts an utterance
    vad_hangover_ms: int = 400  # silence this long ends it
    vad_padding_ms: int = 200  # audio kept before the detected start
    bargein_warmup_ms: int = 300  # after playback starts, no barge-in
    bargein_min_speech_ms: int = 100  # sustained user speech needed to interrupt
    bargein_false_ms: int = 800  # no speech this long after a barge-in: it was false


@dataclass(frozen=True)
class SpeechStarted:
    time: float  # seconds on the stream clock (capture time of the first speech frame)


@dataclass(frozen=True)
class SpeechEnded:
    time: float
    duration: float


@dataclass(frozen=True)
class BargeIn:
    time: float  # when the detector decided
    speech_onset: float  # when the user's speech began


@dataclass(frozen=True)
class FalseBargeIn:
    """The user went quiet again right after a barge-in: playback may resume."""

    time: float


@dataclass(frozen=True)
class BargeInConfirmed:
    """The user went on speaking after a barge-in: it was real, the reply ends."""

    time: float


@dataclass(frozen=True)
class DeviceLost:
    kind: str  # "input" or "output"
    name: str
    reason: str


@dataclass(frozen=True)
class DeviceRestored:
    kind: str
    name: str


@dataclass(frozen=True)
class Level:
    time: float
    dbfs: float  # echo-cancelled microphone level, for a meter


AudioEvent = (
    SpeechStarted
    | SpeechEnded
    | BargeIn
    | FalseBargeIn
    | BargeInConfirmed
    | DeviceLost
    | DeviceRestored
    | Level
)
