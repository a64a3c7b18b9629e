"""Acoustic echo scenarios for measuring the echo canceller, the VAD and the barge-in detector.

A scenario is what the microphone would hear while the assistant talks through a loudspeaker in
a room and a user (sometimes) talks over it, with every component known exactly:

* far end (the assistant's voice): espeak-ng ``en-us`` reading varied English sentences with
  short pauses, rendered at 24 kHz (``PLAYBACK_RATE``), the reference the app plays;
* near end (the user): other espeak-ng voices (``en-gb+f3``, ``en-us+m3``) saying short
  interjections of 1-3 s, and, when ``real_speech`` clips are given, 1-3 s pieces of real speech;
* room: a pyroomacoustics shoebox (image source method) at 16 kHz. Its wall absorption comes from
  ``pra.inverse_sabine`` and is then corrected (a few iterations) until the T30 measured on the
  simulated impulse response matches the condition's RT60 within 5 %: the plain Sabine value
  gives tails up to 30 % too long in the larger rooms. Every source gets its own impulse
  response to the microphone and is convolved separately (exactly what ``room.simulate`` does per
  source), so echo, near end and noise are separate, exact ground truth;
* levels: the reverberant near end at the mic is set to ``NEAR_LEVEL_DBFS`` (active speech level),
  the echo to ``NEAR_LEVEL_DBFS + condition.echo_db``, the noise to
  ``NEAR_LEVEL_DBFS - condition.noise_snr_db`` (RMS). These absolute levels are the same for every
  kind, so single talk and double talk of one condition and seed share the same echo and noise.
  The far end is played at ``FAR_LEVEL_DBFS``; the close-talk near-end reference
  ``near_dry_16k`` is at ``NEAR_DRY_LEVEL_DBFS`` +-3 dB per utterance (not at the mic's scale);
* noise: "pink" = Gaussian noise with a 1/f power spectrum above 50 Hz added at the mic (a fan,
  ventilation); "babble" = four other espeak-ng voices reading sentences with short pauses, each
  from its own spot in the room (through its own impulse response);
* delays: pyroomacoustics puts the direct path at distance / c plus 40 samples (2.5 ms, half its
  fractional-delay filter), so the echo follows the far end by 2.7-4.2 ms; there is no device
  buffering delay. CONDITIONS have linear loudspeakers and one clock; UNSEEN_CONDITIONS (kept
  out of the audio path's tuning) add a clipping loudspeaker (``loudspeaker_clip_db``) and a
  microphone clock drifting against the loudspeaker's (``clock_drift_ppm``).

Active speech level of a component = RMS over the frames where its source is active: echo over
``far_active`` frames, near end over ``near_active`` frames (see ``active_level_db``).

Ground-truth activity (``speech_activity``) is computed on the dry signals in 10 ms frames: a
frame is active when its power is within 30 dB of the loudest frame of that signal and above
-70 dBFS; then gaps of up to 100 ms between active frames are filled (stop closures, short
pauses inside a phrase) and every active run is extended by a 50 ms hangover.

Speech is rendered once with ``espeak-ng`` into a cache (``$MINMO_SIM_CACHE`` or
``<tempdir>/minmo-sim-cache``, by ``minmo_core.common.espeak``, keyed by espeak version, voice,
speed and text); room impulse responses are cached there too. Everything is deterministic
given the seed (on one espeak-ng version): the far-end content depends only on the seed, the
near-end content on the seed (and the clips given), the noise on the seed and condition, so one
seed gives comparable scenarios across conditions and kinds.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from minmo_core.common.espeak import EspeakNotFoundError, espeak, render_file
from minmo_core.errors import MissingDependencyError

try:
    import pyroomacoustics as pra
except ImportError as _err:  # a plain install has no dev extra
    raise MissingDependencyError(
        "the room simulation needs pyroomacoustics, which comes with the dev extra: "
        "pip install 'minmo-assistant[dev]' (or run from a checkout with make test)"
    ) from _err

from app.audio.events import FRAME_MS, MIC_RATE, PLAYBACK_RATE

__all__ = [
    "CONDITIONS",
    "KINDS",
    "UNSEEN_CONDITIONS",
    "Acoustics",
    "Condition",
    "EspeakNotFoundError",
    "Scenario",
    "active_level_db",
    "condition",
    "frame_power_db",
    "make_scenario",
    "room_acoustics",
    "speech_activity",
]

KINDS = ("single_talk", "double_talk", "near_only")

FRAME_S = FRAME_MS / 1000
NEAR_LEVEL_DBFS = -38.0  # active level of the reverberant near end at the mic
FAR_LEVEL_DBFS = -18.0  # active level of what the assistant plays (each sentence)
NEAR_DRY_LEVEL_DBFS = -26.0  # active level of the close-talk near-end reference (each utterance)
NEAR_GAIN_SPREAD_DB = 3.0  # utterances vary by up to +-3 dB around it
ACTIVE_RANGE_DB = 30.0
ACTIVE_FLOOR_DBFS = -70.0
GAP_FILL_MS = 100
HANGOVER_MS = 50

FIRST_NEAR_S = 2.0  # no near-end speech before: the echo canceller converges on far end alone
NEAR_MIN_SPACING_S = 1.5  # between near-end onsets
NEAR_GAP_S = (0.8, 2.0)  # silence between near-end utterances
NEAR_LEN_S = (1.0, 3.0)
FAR_PAUSE_S = (0.2, 0.7)  # between the assistant's sentences
END_MARGIN_S = 0.3  # near-end utterances end this long before the scenario does

FAR_VOICE, FAR_SPEED = "en-us", 165
NEAR_VOICES, NEAR_SPEED = ("en-gb+f3", "en-us+m3"), 170
BABBLE_VOICES, BABBLE_SPEED = ("en-029+m2", "en-gb-x-rp+f4", "en-gb-scotland+f2", "en-us+m7"), 175
BABBLE_SENTENCES = 10  # the first sentences of FAR_SENTENCES, in the babble voices

FAR_SENTENCES = (
    "Sure, here is what I found about the weather this weekend.",
    "Tomorrow will be mostly sunny, with a high of twenty two degrees and a light breeze.",
    "Your next meeting starts at three thirty in the small conference room.",
    "I have set a timer for twelve minutes.",
    "The capital of Australia is Canberra, not Sydney, although many people assume otherwise.",
    "To boil an egg, place it in boiling water for about seven minutes, then cool it down.",
    "There are three new messages from your team, and one of them is marked urgent.",
    "Let me read the first paragraph of the article for you.",
    "The train to Cambridge leaves from platform nine at a quarter past four.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Would you like me to add milk, eggs and bread to your shopping list?",
    "The recipe needs two cups of flour, one teaspoon of salt, and a little olive oil.",
    "Traffic on the highway is heavy right now, so the drive will take about forty minutes.",
    "I can play some quiet piano music while you work.",
    "The closest pharmacy is open until nine tonight, about a ten minute walk away.",
    "In eighteen sixty nine, the first transcontinental railroad was completed.",
    "Your package was shipped yesterday and should arrive on Thursday.",
    "Why did the scarecrow win an award? Because he was outstanding in his field.",
    "The exchange rate today is one point zero eight dollars to the euro.",
    "Remember to drink some water and take a short break from the screen.",
    "The museum is closed on Mondays, but you can book tickets online for any other day.",
    "I'm sorry, I didn't quite catch that. Could you say it again?",
    "Mount Everest is eight thousand eight hundred and forty nine metres tall.",
    "Your flight is on time, and boarding begins at gate twenty one at six fifteen.",
    "A balanced diet includes vegetables, fruit, whole grains and enough protein.",
    "The battery is at forty percent, which should last for about three more hours.",
    "I've added a reminder to call your sister on Saturday morning.",
    "The speed of light is roughly three hundred thousand kilometres per second.",
    "Okay, turning off the living room lights and setting the thermostat to twenty degrees.",
    "The football match ended two to one after a late goal in extra time.",
)

NEAR_PHRASES = (
    "Hold on a second.",
    "No, that's not what I asked.",
    "Stop, stop, stop.",
    "Actually, never mind.",
    "Can you repeat that please?",
    "Okay, thanks, that's enough.",
    "What about Saturday instead?",
    "Turn the volume down please.",
    "Sorry, I meant the other one.",
    "Hey, wait a moment.",
    "How long will that take?",
    "Please skip this one.",
    "Set an alarm for seven tomorrow.",
    "Yes, please do that.",
    "No, cancel the timer.",
    "Tell me more about the second one.",
    "What time is it in Tokyo right now?",
    "Can you send that to my phone?",
    "Louder please, I can't hear you.",
    "Wait, go back to the beginning.",
)


# --------------------------------------------------------------------------- conditions


Position = tuple[float, float, float]


@dataclass(frozen=True)
class Condition:
    """One room, geometry and level setting. Positions are (x, y, z) in metres inside the room."""

    name: str
    room_dim: Position
    rt60: float  # s
    loudspeaker_pos: Position
    mic_pos: Position
    talker_pos: Position  # the user's mouth
    noise_snr_db: float | None  # noise RMS relative to the near end's active level; None: none
    echo_db: float  # echo-to-near-end ratio at the mic (active speech levels), dB
    noise_kind: str = "pink"  # "pink" (fan / HVAC) or "babble" (other people talking)
    second_loudspeaker_pos: Position | None = None  # a stereo pair playing the same mono signal
    description: str = ""
    # a loudspeaker driven into saturation: the far end passes c * tanh(x / c) on its way into
    # the room, c this many dB above the far end's active RMS (None: a linear loudspeaker)
    loudspeaker_clip_db: float | None = None
    # the microphone's sample clock runs this many parts per million fast against the
    # loudspeaker's (two devices, two crystals): the echo slowly slides later in time
    clock_drift_ppm: float = 0.0

    def __post_init__(self) -> None:
        if self.noise_kind not in ("pink", "babble"):
            raise ValueError(f"noise_kind must be 'pink' or 'babble', not {self.noise_kind!r}")
        if abs(self.clock_drift_ppm) > 1000:
            raise ValueError(f"clock drift {self.clock_drift_ppm} ppm is beyond +-1000 ppm")
        if not 0.1 <= self.rt60 <= 2.0:
            raise ValueError(f"rt60 {self.rt60} s is outside 0.1..2 s")
        points = [self.loudspeaker_pos, self.mic_pos, self.talker_pos]
        if self.second_loudspeaker_pos is not None:
            points.append(self.second_loudspeaker_pos)
        for p in points:
            if len(p) != 3 or not all(0 < c < d for c, d in zip(p, self.room_dim, strict=True)):
                raise ValueError(f"{self.name}: position {p} is not inside room {self.room_dim}")

    @property
    def loudspeakers(self) -> tuple[Position, ...]:
        if self.second_loudspeaker_pos is None:
            return (self.loudspeaker_pos,)
        return (self.loudspeaker_pos, self.second_loudspeaker_pos)

    def with_noise(self, snr_db: float, kind: str | None = None) -> Condition:
        """The same room and geometry with noise (named ``<name>_noisy``)."""
        return replace(
            self,
            name=f"{self.name}_noisy",
            noise_snr_db=snr_db,
            noise_kind=kind or self.noise_kind,
        )


_LAPTOP = Condition(
    name="laptop_small_office",
    room_dim=(3.6, 3.0, 2.6),
    rt60=0.25,
    # laptop on a desk (0.75 m high) near the wall: stereo speakers at the sides of the keyboard,
    # the mic at the top of the screen, the user seated 0.6 m in front of it
    loudspeaker_pos=(1.65, 0.72, 0.77),
    second_loudspeaker_pos=(1.95, 0.72, 0.77),
    mic_pos=(1.80, 0.52, 1.00),
    talker_pos=(1.80, 1.12, 1.18),
    noise_snr_db=None,
    echo_db=10.0,
    description="laptop on a desk, small furnished office; speakers 0.3 m from the mic",
)
_DESKTOP = Condition(
    name="desktop_speakers_home_office",
    room_dim=(4.5, 4.0, 2.7),
    rt60=0.4,
    # a pair of desktop speakers 1 m apart either side of a monitor with a webcam mic on top
    loudspeaker_pos=(1.75, 0.45, 0.95),
    second_loudspeaker_pos=(2.75, 0.45, 0.95),
    mic_pos=(2.25, 0.40, 1.25),
    talker_pos=(2.25, 1.10, 1.20),
    noise_snr_db=None,
    echo_db=5.0,
    description="desktop speakers 1 m apart, webcam mic on the monitor, medium room",
)
_MEETING = Condition(
    name="speakerphone_meeting_room",
    room_dim=(8.0, 6.0, 3.0),
    rt60=0.7,
    # a conference speakerphone in the middle of the table: loudspeaker 8 cm from the mic,
    # the user seated 1.8 m away
    loudspeaker_pos=(4.00, 3.08, 0.80),
    mic_pos=(4.00, 3.00, 0.78),
    talker_pos=(5.40, 4.10, 1.20),
    noise_snr_db=None,
    echo_db=15.0,
    noise_kind="babble",
    description="speakerphone on a meeting-room table, large reverberant room",
)
_KITCHEN = Condition(
    name="smart_display_kitchen",
    room_dim=(5.5, 4.5, 2.7),
    rt60=0.55,
    # a tablet / smart display on the counter: speaker 12 cm below the mic, the user standing
    # 2 m away
    loudspeaker_pos=(0.80, 0.35, 0.98),
    mic_pos=(0.80, 0.32, 1.10),
    talker_pos=(2.40, 1.50, 1.60),
    noise_snr_db=None,
    echo_db=12.0,
    description="smart display on a kitchen counter, hard surfaces, user standing 2 m away",
)

CONDITIONS: tuple[Condition, ...] = (
    _LAPTOP,
    _LAPTOP.with_noise(20.0, "pink"),
    _DESKTOP,
    _DESKTOP.with_noise(15.0, "pink"),
    _MEETING,
    _MEETING.with_noise(10.0, "babble"),
    _KITCHEN,
    _KITCHEN.with_noise(10.0, "pink"),
)


# conditions the audio path's tuning never saw (issue 14), reported on their own: a laptop
# whose small speakers are driven into clipping (a non-linear echo path no linear filter
# models), and desktop speakers on one sound card with a USB webcam microphone on another
# (their clocks drift 100 ppm apart: the echo slides 7.5 ms later over 75 s)
UNSEEN_CONDITIONS: tuple[Condition, ...] = (
    replace(_LAPTOP, name="laptop_clipping_speakers", loudspeaker_clip_db=3.0,
            description="laptop speakers driven into clipping (tanh, 3 dB above the RMS)"),
    replace(_DESKTOP, name="desktop_usb_mic_clock_drift", clock_drift_ppm=100.0,
            description="desktop speakers and a USB microphone 100 ppm apart"),
)  # fmt: skip


def condition(name: str) -> Condition:
    """The condition of ``CONDITIONS`` or ``UNSEEN_CONDITIONS`` with that name."""
    for c in CONDITIONS + UNSEEN_CONDITIONS:
        if c.name == name:
            return c
    known = ", ".join(c.name for c in CONDITIONS + UNSEEN_CONDITIONS)
    raise KeyError(f"no condition {name!r}; known: {known}")


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Acoustics:
    """What the simulated room turned out to be (measured on its impulse responses)."""

    absorption: float  # energy absorption of the walls (after the RT60 correction)
    max_order: int  # image-source order
    rt60_measured: float  # s, T30 of a mid-room source-mic pair
    echo_delay_ms: float  # acoustic loudspeaker-to-mic delay (nearest speaker)
    near_delay_ms: float  # acoustic talker-to-mic delay
    echo_drr_db: float  # direct-to-reverberant energy ratio of the echo path
    near_drr_db: float  # ... of the talker-to-mic path
    rir_ms: float  # length of the impulse responses used


@dataclass
class Scenario:
    condition: Condition
    kind: str
    seed: int
    far_end_24k: np.ndarray  # what the assistant plays, float32 at PLAYBACK_RATE
    mic_16k: np.ndarray  # echo_16k + near_16k + noise_16k
    echo_16k: np.ndarray
    near_16k: np.ndarray  # the reverberant near end at the mic
    noise_16k: np.ndarray
    near_dry_16k: np.ndarray  # close-talk near end, its direct sound aligned with near_16k
    near_active: np.ndarray  # bool per 10 ms frame, from near_dry_16k (speech_activity)
    near_onsets: list[float]  # s, first active frame of each near-end utterance
    near_utterances: list[tuple[float, float]]  # s, (onset, end of its last active frame)
    far_active: np.ndarray  # bool per 10 ms frame, from far_end_24k, on the playback timeline
    # scaled echo path: echo_16k = far end at 16 kHz (*) this, for a linear loudspeaker on the
    # microphone's clock (not for loudspeaker_clip_db or clock_drift_ppm)
    echo_rir_16k: np.ndarray
    acoustics: Acoustics

    @property
    def seconds(self) -> float:
        return len(self.near_active) * FRAME_S

    @property
    def n_frames(self) -> int:
        return len(self.near_active)


def make_scenario(
    condition: Condition,
    kind: str,
    seconds: float = 20.0,
    seed: int = 0,
    *,
    real_speech: Sequence[str | os.PathLike[str]] | None = None,
) -> Scenario:
    """Simulate ``seconds`` (rounded to whole 10 ms frames) of one kind of scenario.

    kind: "single_talk" (far end throughout, no near end: ERLE, false barge-ins),
    "double_talk" (far end throughout, near-end utterances of 1-3 s from 2 s on, onsets at least
    1.5 s apart: barge-in latency, near-end preservation), "near_only" (the same near-end
    utterances as double talk with the same seed, no playback: VAD accuracy).
    real_speech: WAV files of real speech; when given, about half of the near-end utterances
    are 1-3 s pieces of them (starting at a speech onset) instead of TTS.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    n_frames = round(seconds / FRAME_S)
    if n_frames <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    if kind != "single_talk" and n_frames * FRAME_S < 5.0:
        raise ValueError(f"{kind} needs at least 5 s (near-end speech starts after 2 s)")
    exe = _espeak()
    n16 = n_frames * MIC_RATE * FRAME_MS // 1000
    n24 = n_frames * PLAYBACK_RATE * FRAME_MS // 1000
    room = _room(condition)

    # far end: what the assistant plays, and its echo at the mic
    if kind == "near_only":
        far24 = np.zeros(n24, np.float32)
        far_active = np.zeros(n_frames, bool)
        echo = np.zeros(n16, np.float32)
        echo_rir = np.zeros_like(room.echo_rir)
    else:
        far24 = _far_stream(exe, np.random.default_rng([seed, 0]), n24)
        far_active = speech_activity(far24, PLAYBACK_RATE)
        far16 = soxr.resample(far24, PLAYBACK_RATE, MIC_RATE).astype(np.float32)[:n16]
        if condition.loudspeaker_clip_db is not None:
            far16 = _saturate(far16, speech_activity(far16, MIC_RATE),
                              condition.loudspeaker_clip_db)  # fmt: skip
        echo = _convolve(far16, room.echo_rir, n16)
        if condition.clock_drift_ppm:
            echo = _drift(echo, condition.clock_drift_ppm)
        gain = _db_to_gain(NEAR_LEVEL_DBFS + condition.echo_db - active_level_db(echo, far_active))
        echo *= gain
        echo_rir = (room.echo_rir * gain).astype(np.float32)

    # near end: the user, dry (aligned with its direct sound at the mic) and reverberant
    near_dry = np.zeros(n16, np.float32)
    near = np.zeros(n16, np.float32)
    placed: list[tuple[int, int]] = []
    if kind != "single_talk":
        pool = _near_pool(exe, tuple(os.fspath(p) for p in real_speech or ()))
        near_dry, placed = _near_stream(pool, np.random.default_rng([seed, 1]), n16)
        # the talker plays the dry signal advanced by the direct-path delay, so that the direct
        # sound reaches the mic exactly where near_dry has it
        source = np.zeros(n16, np.float32)
        source[: n16 - room.near_delay] = near_dry[room.near_delay :]
        near = _convolve(source, room.near_rir, n16)
    near_active = speech_activity(near_dry, MIC_RATE)
    onsets, utterances = _onsets(near_active, placed)
    if near_active.any():
        near *= _db_to_gain(NEAR_LEVEL_DBFS - active_level_db(near, near_active))

    # noise
    noise = np.zeros(n16, np.float32)
    if condition.noise_snr_db is not None:
        rng = np.random.default_rng([seed, 2, _stable_hash(condition.name)])
        if condition.noise_kind == "pink":
            noise = _pink_noise(rng, n16)
        else:
            noise = _babble(exe, rng, room, n16)
        rms_db = 10 * np.log10(np.mean(np.square(noise, dtype=np.float64)) + 1e-30)
        noise *= _db_to_gain(NEAR_LEVEL_DBFS - condition.noise_snr_db - rms_db)

    mic = (echo + near + noise).astype(np.float32)
    return Scenario(
        condition=condition,
        kind=kind,
        seed=seed,
        far_end_24k=far24,
        mic_16k=mic,
        echo_16k=echo,
        near_16k=near,
        noise_16k=noise,
        near_dry_16k=near_dry,
        near_active=near_active,
        near_onsets=onsets,
        near_utterances=utterances,
        far_active=far_active,
        echo_rir_16k=echo_rir,
        acoustics=room.acoustics,
    )


def _saturate(x: np.ndarray, active: np.ndarray, clip_db: float) -> np.ndarray:
    """A loudspeaker driven into saturation: c * tanh(x / c), with c ``clip_db`` above the
    signal's active RMS (speech peaks 12-15 dB above its RMS, so +3 dB clips every peak)."""
    c = _db_to_gain(active_level_db(x, active) + clip_db)
    return (c * np.tanh(x / c)).astype(np.float32)


def _drift(x: np.ndarray, ppm: float) -> np.ndarray:
    """``x`` as a microphone whose clock runs ``ppm`` fast records it: resampled from 16 kHz
    to 16 kHz x (1 + ppm / 1e6), so sample n is the sound of time n / (16 kHz (1 + ppm))."""
    out = soxr.resample(x, MIC_RATE, MIC_RATE * (1 + ppm * 1e-6), quality="VHQ")
    fitted = np.zeros_like(x)
    fitted[: min(x.size, out.size)] = out[: x.size]
    return fitted.astype(np.float32)


def room_acoustics(condition: Condition) -> Acoustics:
    """The simulated room's measured characteristics (computes or loads its impulse responses)."""
    return _room(condition).acoustics


# --------------------------------------------------------------------------- levels, activity


def frame_power_db(x: np.ndarray, rate: int) -> np.ndarray:
    """Mean power per 10 ms frame in dBFS (a trailing partial frame is dropped)."""
    n = rate * FRAME_MS // 1000
    frames = np.asarray(x, np.float64)[: len(x) // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def speech_activity(
    x: np.ndarray,
    rate: int,
    *,
    range_db: float = ACTIVE_RANGE_DB,
    floor_dbfs: float = ACTIVE_FLOOR_DBFS,
    gap_ms: int = GAP_FILL_MS,
    hangover_ms: int = HANGOVER_MS,
) -> np.ndarray:
    """Ground-truth activity of a clean signal, per 10 ms frame.

    A frame is active when its power is within ``range_db`` of the loudest frame and above
    ``floor_dbfs``; gaps of up to ``gap_ms`` between active frames are filled and each active
    run is extended by ``hangover_ms``.
    """
    p = frame_power_db(x, rate)
    active = (p > p.max(initial=-np.inf) - range_db) & (p > floor_dbfs)
    idx = np.flatnonzero(active)
    gap = gap_ms // FRAME_MS
    for a, b in itertools.pairwise(idx):
        if 1 < b - a <= gap + 1:
            active[a + 1 : b] = True
    raw = active.copy()
    for k in range(1, hangover_ms // FRAME_MS + 1):
        active[k:] |= raw[:-k]
    return active


def active_level_db(x: np.ndarray, active: np.ndarray, rate: int = MIC_RATE) -> float:
    """RMS level in dBFS of ``x`` over its frames marked active (per 10 ms frame)."""
    n = rate * FRAME_MS // 1000
    frames = np.asarray(x, np.float64)[: len(active) * n].reshape(-1, n)
    sel = frames[np.asarray(active, bool)[: len(frames)]]
    if sel.size == 0:
        return -np.inf
    return float(10 * np.log10(np.mean(sel**2) + 1e-30))


def _raw_active_rms(x: np.ndarray, rate: int) -> float:
    p = frame_power_db(x, rate)
    n = rate * FRAME_MS // 1000
    frames = np.asarray(x, np.float64)[: len(p) * n].reshape(-1, n)
    return float(np.sqrt(np.mean(frames[p > p.max() - ACTIVE_RANGE_DB] ** 2)))


def _db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _onsets(
    active: np.ndarray, placed: list[tuple[int, int]]
) -> tuple[list[float], list[tuple[float, float]]]:
    n = MIC_RATE * FRAME_MS // 1000
    hang = HANGOVER_MS // FRAME_MS
    onsets: list[float] = []
    utterances: list[tuple[float, float]] = []
    for start, end in placed:
        lo, hi = start // n, min(len(active), -(-end // n) + hang + 1)
        on = np.flatnonzero(active[lo:hi])
        if on.size == 0:
            continue
        onsets.append(round(float(lo + on[0]) * FRAME_S, 6))
        utterances.append((onsets[-1], round(float(lo + on[-1] + 1) * FRAME_S, 6)))
    return onsets, utterances


# --------------------------------------------------------------------------- speech material


def cache_dir() -> Path:
    path = Path(
        os.environ.get("MINMO_SIM_CACHE") or Path(tempfile.gettempdir()) / "minmo-sim-cache"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _espeak() -> str:
    return espeak("the echo simulation renders its speech with it")


def _tts_file(exe: str, text: str, voice: str, speed: int) -> Path:
    return render_file(exe, text, cache_dir(), voice, speed, prefix="tts-")


@functools.lru_cache(maxsize=1024)
def _tts(exe: str, text: str, voice: str, speed: int, rate: int) -> np.ndarray:
    """espeak-ng speech at ``rate``, leading/trailing silence trimmed, active RMS 1."""
    x, sr = sf.read(_tts_file(exe, text, voice, speed), dtype="float32", always_2d=True)
    x = soxr.resample(x[:, 0], sr, rate).astype(np.float32)
    x = _trim(x, rate)
    x /= _raw_active_rms(x, rate)
    x.flags.writeable = False
    return x


def _trim(x: np.ndarray, rate: int, margin_ms: int = 20) -> np.ndarray:
    p = frame_power_db(x, rate)
    on = np.flatnonzero(p > p.max() - 50)
    n = rate * FRAME_MS // 1000
    m = rate * margin_ms // 1000
    return x[max(0, on[0] * n - m) : min(len(x), (on[-1] + 1) * n + m)].copy()


def _fade(x: np.ndarray, rate: int, fade_in: bool = True, fade_out: bool = True) -> np.ndarray:
    k = min(len(x) // 2, rate * 10 // 1000)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))).astype(np.float32)
    x = x.copy()
    if fade_in:
        x[:k] *= ramp
    if fade_out:
        x[len(x) - k :] *= ramp[::-1]
    return x


def _far_stream(exe: str, rng: np.random.Generator, n24: int) -> np.ndarray:
    """Sentences in a seeded random order with short pauses, from t=0, at FAR_LEVEL_DBFS."""
    out = np.zeros(n24, np.float32)
    gain = _db_to_gain(FAR_LEVEL_DBFS)
    order: list[int] = []
    t = int(rng.uniform(0.0, 0.1) * PLAYBACK_RATE)
    while t < n24:
        if not order:
            order = list(rng.permutation(len(FAR_SENTENCES)))
        s = _tts(exe, FAR_SENTENCES[order.pop()], FAR_VOICE, FAR_SPEED, PLAYBACK_RATE)
        seg = s[: n24 - t]
        if len(seg) < len(s):
            seg = _fade(seg, PLAYBACK_RATE, fade_in=False)
        out[t : t + len(seg)] = seg * gain
        t += len(s) + int(rng.uniform(*FAR_PAUSE_S) * PLAYBACK_RATE)
    return out


@functools.lru_cache(maxsize=16)
def _near_pool(exe: str, real_speech: tuple[str, ...]) -> tuple[tuple[np.ndarray, ...], ...]:
    """Near-end utterances of 1-3 s at 16 kHz (active RMS 1): (TTS,) or (TTS, real speech)."""
    lo, hi = (int(s * MIC_RATE) for s in NEAR_LEN_S)
    tts = []
    for voice in NEAR_VOICES:
        for text in NEAR_PHRASES:
            x = _tts(exe, text, voice, NEAR_SPEED, MIC_RATE)
            if lo <= len(x) <= hi:
                tts.append(x)
    if not tts:
        raise RuntimeError("no near-end phrase rendered to 1-3 s: check espeak-ng")
    if not real_speech:
        return (tuple(tts),)
    real = [seg for path in real_speech for seg in _real_segments(path)]
    if not real:
        raise ValueError(f"no 1-3 s speech found in {real_speech}")
    return (tuple(tts), tuple(real))


def _real_segments(path: str) -> list[np.ndarray]:
    """Pieces of a real recording that start at a speech onset and last 1-3 s."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = soxr.resample(x[:, 0], sr, MIC_RATE).astype(np.float32)
    n = MIC_RATE * FRAME_MS // 1000
    act = speech_activity(x, MIC_RATE, floor_dbfs=-90, hangover_ms=0, gap_ms=150)
    lo, hi = (round(s / FRAME_S) for s in NEAR_LEN_S)
    segments = []
    starts = [k for k in range(len(act)) if act[k] and (k == 0 or not act[k - 1])]
    for k in starts:
        if k < 10:  # the clip may start mid-word
            continue
        first = k - 2  # 20 ms before the onset: the attack
        last = first + int(np.flatnonzero(act[first : min(len(act), first + hi)])[-1]) + 1
        if last - first < lo:
            continue
        seg = x[first * n : last * n]
        seg = _fade(seg, MIC_RATE)
        seg /= _raw_active_rms(seg, MIC_RATE)
        segments.append(seg)
    return segments


def _near_stream(
    pool: tuple[tuple[np.ndarray, ...], ...], rng: np.random.Generator, n16: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    out = np.zeros(n16, np.float32)
    placed: list[tuple[int, int]] = []
    t = FIRST_NEAR_S + rng.uniform(0.0, 0.6)
    last_end = n16 - int(END_MARGIN_S * MIC_RATE)
    while True:
        start = int(t * MIC_RATE)
        source = pool[int(rng.integers(len(pool)))]
        fits = [u for u in source if start + len(u) <= last_end]
        if not fits:
            fits = [u for s in pool for u in s if start + len(u) <= last_end]
        if not fits:
            break
        utt = fits[int(rng.integers(len(fits)))]
        gain = _db_to_gain(NEAR_DRY_LEVEL_DBFS + rng.uniform(-1, 1) * NEAR_GAIN_SPREAD_DB)
        out[start : start + len(utt)] = utt * gain
        placed.append((start, start + len(utt)))
        t = max(t + NEAR_MIN_SPACING_S, (start + len(utt)) / MIC_RATE + rng.uniform(*NEAR_GAP_S))
    return out, placed


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum above 50 Hz (fan / ventilation like)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / MIC_RATE)
    spec /= np.sqrt(np.maximum(f, 50.0))
    spec[f < 20] = 0
    return np.fft.irfft(spec, n).astype(np.float32)


def _babble(exe: str, rng: np.random.Generator, room: _Room, n16: int) -> np.ndarray:
    """Four other talkers (espeak voices) at fixed spots in the room, each a sentence stream."""
    out = np.zeros(n16, np.float32)
    for voice, rir in zip(BABBLE_VOICES, room.babble_rirs, strict=True):
        stream = np.zeros(n16, np.float32)
        t = -int(rng.uniform(0, 2.0) * MIC_RATE)
        while t < n16:
            text = FAR_SENTENCES[int(rng.integers(BABBLE_SENTENCES))]
            s = _tts(exe, text, voice, BABBLE_SPEED, MIC_RATE)
            a, b = max(t, 0), min(n16, t + len(s))
            if b > a:
                stream[a:b] = s[a - t : b - t]
            t += len(s) + int(rng.uniform(0.1, 0.5) * MIC_RATE)
        out += _convolve(stream, rir, n16)
    return out


# --------------------------------------------------------------------------- room


RIR_VERSION = 1
BABBLE_SPOTS = ((0.2, 0.8, 1.2), (0.8, 0.8, 1.5), (0.8, 0.2, 1.3), (0.2, 0.25, 1.6))


@dataclass(frozen=True)
class _Room:
    echo_rir: np.ndarray  # sum over the loudspeakers
    near_rir: np.ndarray
    babble_rirs: tuple[np.ndarray, ...]
    near_delay: int  # samples from the talker's dry signal to its direct sound at the mic
    acoustics: Acoustics


def _convolve(x: np.ndarray, h: np.ndarray, n: int) -> np.ndarray:
    from scipy.signal import oaconvolve

    return oaconvolve(x, h)[:n].astype(np.float32)


def _babble_positions(c: Condition) -> list[Position]:
    return [(fx * c.room_dim[0], fy * c.room_dim[1], z) for fx, fy, z in BABBLE_SPOTS]


@functools.cache
def _room(c: Condition) -> _Room:
    babble = _babble_positions(c) if c.noise_snr_db is not None and c.noise_kind == "babble" else []
    geometry = {
        "v": RIR_VERSION,
        "pra": pra.__version__,
        "fs": MIC_RATE,
        "dim": c.room_dim,
        "rt60": c.rt60,
        "speakers": c.loudspeakers,
        "mic": c.mic_pos,
        "talker": c.talker_pos,
        "babble": babble,
    }
    key = hashlib.sha256(json.dumps(geometry, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir() / f"rir-{key}.npz"
    fdl = pra.constants.get("frac_delay_length")
    speed = pra.constants.get("c")
    if path.exists():
        data = np.load(path)
        rirs = [data[f"rir{i}"] for i in range(int(data["count"]))]
        absorption, max_order, rt60 = float(data["e"]), int(data["order"]), float(data["rt60"])
    else:
        absorption, max_order, rt60 = _calibrate(c.room_dim, c.rt60)
        room = pra.ShoeBox(
            list(c.room_dim),
            fs=MIC_RATE,
            materials=pra.Material(absorption),
            max_order=max_order,
        )
        for p in [*c.loudspeakers, c.talker_pos, *babble]:
            room.add_source(list(p))
        room.add_microphone(list(c.mic_pos))
        room.compute_rir()
        rirs = [np.asarray(h, np.float64) for h in room.rir[0]]
        length = max(len(h) for h in rirs)
        total = np.zeros(length)
        for h in rirs:
            total[: len(h)] += h**2
        tail = np.cumsum(total[::-1])[::-1]
        length = int(np.flatnonzero(tail > tail[0] * 1e-7)[-1]) + 1  # drop the last -70 dB
        rirs = [np.pad(h, (0, max(0, length - len(h))))[:length].astype(np.float32) for h in rirs]
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            count=len(rirs),
            e=absorption,
            order=max_order,
            rt60=rt60,
            **{f"rir{i}": h for i, h in enumerate(rirs)},
        )
        os.replace(tmp, path)
    n_ls = len(c.loudspeakers)
    echo_rir = np.sum(rirs[:n_ls], axis=0).astype(np.float32)
    near_rir = rirs[n_ls]

    def delay(p: Position) -> float:
        return float(np.linalg.norm(np.subtract(p, c.mic_pos))) / speed * MIC_RATE

    def drr(h: np.ndarray, d: float) -> float:
        k = round(d) + fdl // 2
        direct = np.sum(h[max(0, k - fdl // 2) : k + fdl // 2 + 1].astype(np.float64) ** 2)
        rest = np.sum(h.astype(np.float64) ** 2) - direct
        return float(10 * np.log10(direct / rest))

    echo_d = min(delay(p) for p in c.loudspeakers)
    near_d = delay(c.talker_pos)
    acoustics = Acoustics(
        absorption=absorption,
        max_order=max_order,
        rt60_measured=rt60,
        echo_delay_ms=echo_d / MIC_RATE * 1000,
        near_delay_ms=near_d / MIC_RATE * 1000,
        echo_drr_db=drr(echo_rir, echo_d) if n_ls == 1 else drr(rirs[0], delay(c.loudspeakers[0])),
        near_drr_db=drr(near_rir, near_d),
        rir_ms=len(near_rir) / MIC_RATE * 1000,
    )
    for h in rirs:
        h.flags.writeable = False
    return _Room(
        echo_rir=echo_rir,
        near_rir=near_rir,
        babble_rirs=tuple(rirs[n_ls + 1 :]),
        near_delay=round(near_d) + fdl // 2,  # pyroomacoustics puts the direct path there
        acoustics=acoustics,
    )


@functools.cache
def _calibrate(room_dim: Position, rt60: float) -> tuple[float, int, float]:
    """Wall absorption giving ``rt60`` (T30 of a mid-room source-mic pair) within 5 %.

    Starts from ``pra.inverse_sabine`` and rescales the RT60 asked of it by target / measured;
    the image-source order stays the one Sabine gives for the target. Cached on disk.
    """
    key = json.dumps({"v": RIR_VERSION, "pra": pra.__version__, "dim": room_dim, "rt60": rt60})
    path = cache_dir() / f"rt60-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    if path.exists():
        absorption, max_order, measured = json.loads(path.read_text())
        return float(absorption), int(max_order), float(measured)
    dim = np.asarray(room_dim)
    src, mic = dim * (0.3, 0.35, 0.45), dim * (0.68, 0.7, 0.4)
    absorption, max_order = pra.inverse_sabine(rt60, list(room_dim))
    target = measured = rt60
    for _ in range(5):
        room = pra.ShoeBox(
            list(room_dim), fs=MIC_RATE, materials=pra.Material(absorption), max_order=max_order
        )
        room.add_source(list(src))
        room.add_microphone(list(mic))
        room.compute_rir()
        measured = float(pra.experimental.measure_rt60(room.rir[0][0], fs=MIC_RATE, decay_db=30))
        if abs(measured / rt60 - 1) < 0.05:
            break
        target *= rt60 / measured
        try:
            absorption = float(pra.inverse_sabine(target, list(room_dim))[0])
        except ValueError:  # that short a reverberation needs walls absorbing everything
            break
    result = (float(absorption), int(max_order), measured)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return result
