"""Synthetic training data: espeak-ng speech written as WAV files plus JSONL manifests.

Two kinds of data, both read by ``minmo_core.train.manifest``:

* utterances (``write_utterances``): one ``Item`` per clip, "asr" (repeat what was said) or
  "qa" (answer it) over a closed vocabulary (``command_items``: digit strings, alarm times,
  small sums, one-word-answer questions), so a tiny adapter can be trained and checked
  exactly;
* dialogues (``write_dialogues``): "duplex" episodes, the user's side of a two-party
  conversation as the assistant hears it, with the turn-taking decisions labelled
  ("listen", "speak", "stop") at exact sample times: finished turns, hesitations (a sentence
  cut mid-phrase, a pause, maybe a filler, the rest), back-channels and interruptions.

Speech. ``render`` runs ``espeak-ng -v VOICE -s SPEED -p PITCH -w out.wav TEXT``, resamples
to 16 kHz (soxr), trims leading and trailing silence (10 ms frames more than ``TRIM_DB`` below
the loudest frame; espeak's silence is exact zeros) and scales the speech to an *active* RMS
of ``SPEECH_LEVEL_DBFS`` (RMS over the frames within ``ACTIVE_DB`` of the loudest), so every
voice and text lands at the same loudness whatever its crest factor. espeak's output is
cached by ``minmo_core.common.espeak`` (keyed by espeak version, voice, speed, pitch, SSML or
not, and text; written atomically) in ``$MINMO_SYNTH_CACHE`` or
``<tempdir>/minmo-synth-cache``. A hesitation's two halves come from one SSML render with a
``<break>`` after the cut, split at that break: the first half keeps espeak's continuation prosody
instead of sounding finished.

Voices (``voice_pool``) are English espeak accents x voice variants, each with its own speed
and pitch. The held-out voices use (accent, variant) pairs that no training voice uses, with
every accent and variant still present in training: they test unseen combinations, not
unseen accents.

Timing. Episodes are built by concatenating rendered speech and silences, so every label is
an exact sample index (written as ``index / SAMPLE_RATE`` seconds): a turn's end is where its
trimmed speech ends, an onset is where it starts.

Acoustics (optional, per example). ``room=True``: a random pyroomacoustics shoebox (floor
sides 3-8 m, height 2.5-3.5 m, RT60 0.15-0.6 s via Sabine's formula, raised to just above the
room's shortest where a large room cannot be that dry; source and microphone at least 0.5 m
from every wall and from each other), image-source method to the order Sabine's formula asks
for. The dry signal is convolved with the impulse response and advanced by the direct path's
delay (``round(distance / c * fs)`` plus half pyroomacoustics' fractional-delay filter, where
it puts the direct sound), so the direct sound of every word stays at its label; the
reverberant speech is scaled back to the dry active level. Whatever the response holds more
than half a fractional-delay filter (2.5 ms) ahead of the direct path, the pre-echo of
pyroomacoustics' zero-phase 10 Hz high-pass, is cut: no sound comes earlier than 2.5 ms before
its label. Sabine's formula asks for too little absorption in long, narrow rooms: the T30
measured there can exceed the drawn RT60 by a third or more; for augmentation that does not
matter. ``snr_db``: pink noise (1/f power above 50 Hz) at an SNR drawn uniformly from the
range, relative to the speech's active RMS. A clip that would clip is scaled down as a whole
(labels are times, so they do not move). WAVs are 16 kHz mono PCM_16.

Determinism: one ``np.random.Generator`` from the seed draws, in order, every content choice
(items' voices, texts, pauses); then each example gets a child generator (``rng.spawn``) for
its room and noise. Examples are rendered in a small thread pool, in any order, with the same
bytes as a serial run; switching the room or noise on leaves the content and label times of
a seed unchanged. Same seed, same espeak-ng: byte-identical manifests and audio.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf

from minmo_core.common.audio import frame_levels_dbfs, resample
from minmo_core.common.espeak import espeak, render_file
from minmo_core.errors import MissingDependencyError
from minmo_core.train.metrics import number_words

SAMPLE_RATE = 16000
FRAME = SAMPLE_RATE // 100  # 160 samples: the 10 ms frame of frame_levels_dbfs
SPEECH_LEVEL_DBFS = -26.0  # active RMS of rendered speech; its loudest peaks reach about -5 dBFS
TRIM_DB = 50.0  # frames this far below the loudest are silence when trimming
ACTIVE_DB = 40.0  # frames within this of the loudest count towards the active RMS
PEAK_LIMIT = 0.99  # a finished clip louder than this is scaled down as a whole
WORKERS = 2  # threads rendering examples (espeak runs as a subprocess)

ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)  # fmt: skip
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
HELD_OUT_VOICES = 8  # each with its own variant; the other 77 - 8 = 69 pairs train
SPEED_WPM = (130, 190)  # espeak -s, inclusive
PITCH = (30, 70)  # espeak -p, inclusive

NUMBERS = tuple(number_words(n) for n in range(21))  # zero .. twenty
MINUTES = ("", "oh five", "ten", "fifteen", "twenty", "thirty", "forty", "forty five", "fifty")
TIME_COMMANDS = (
    "set an alarm for {}", "wake me up at {}", "remind me at {}", "set a reminder for {}",
)  # fmt: skip
SUM_QUESTIONS = ("what is {} {} {}", "how much is {} {} {}")
QUESTIONS = (
    ("what color is the sky", "blue"), ("how many days are in a week", "seven"),
    ("what color is grass", "green"), ("how many legs does a spider have", "eight"),
    ("how many legs does a dog have", "four"), ("what is the opposite of hot", "cold"),
    ("what is the opposite of up", "down"), ("what animal says moo", "cow"),
    ("how many months are in a year", "twelve"), ("how many wheels does a bicycle have", "two"),
    ("what color is snow", "white"), ("what is the capital of france", "paris"),
    ("how many sides does a triangle have", "three"), ("what do bees make", "honey"),
    ("what is frozen water called", "ice"), ("which day comes after monday", "tuesday"),
    ("which month comes after january", "february"), ("what color is a banana", "yellow"),
    ("how many fingers are on one hand", "five"), ("what planet do we live on", "earth"),
    ("what is the opposite of yes", "no"), ("how many minutes are in an hour", "sixty"),
)  # fmt: skip
REPEAT = "Repeat exactly what was said."

SENTENCES = (
    "could you remind me to call the dentist tomorrow morning",
    "i was thinking we could go to the beach this weekend",
    "please add milk and eggs to the shopping list",
    "what would be a good recipe for dinner tonight",
    "i need to book a table for four people on friday",
    "can you tell me how long it takes to drive to the airport",
    "the meeting with the design team has moved to thursday",
    "tell me a short story about a dragon",
    "how many minutes do i need to boil an egg",
    "turn off the lights in the kitchen",
    "play some quiet music in the living room",
    "what is the weather going to be like tomorrow",
    "send a message to my sister that i will be late",
    "how do i get to the train station from here",
    "read me the news headlines from this morning",
)  # everyday sentences for finished turns and hesitations, beside command_items' texts
FUNCTION_WORDS = frozenset(
    ("the", "a", "an", "to", "and", "about", "for", "with", "of", "from", "my", "your", "some",
     "that", "at", "in", "on", "is", "me", "i", "plus", "minus")
)  # fmt: skip
FILLERS = ("um", "uh", "er")
BACK_CHANNELS = ("uh huh", "mm hmm", "right", "okay", "yeah", "i see", "sure")
INTERRUPTIONS = (
    "wait", "hold on", "stop please", "no i meant tomorrow", "sorry can you repeat that",
    "actually what about friday", "wait a second", "hang on", "no stop", "excuse me",
    "that is not what i asked", "can i say something",
)  # fmt: skip
SPOKEN = {"mm hmm": "[[m'hm]]"}  # what espeak is given where it would spell the words out
KINDS = ("finished", "hesitation", "back-channel", "interruption")

LEAD_S = (0.1, 0.3)  # silence before an episode's speech onset
END_SILENCE_S = {
    "finished": (1.5, 2.5), "hesitation": (1.5, 2.5), "back-channel": (1.5, 2.0),
    "interruption": (1.0, 1.5),
}  # fmt: skip
PAUSE_S = (0.5, 1.5)  # a hesitation's pause after the cut
FILLER_PAUSE_S = (0.2, 0.6)  # the shorter pause after a filler
FILLER_P = 0.5  # share of hesitations with a filler
CUT_BREAK_MS = 1000  # the SSML break rendered at a hesitation's cut (split off again)
PAD_S = (0.1, 0.3)  # silence before and after an utterance clip

ROOM_SIDE_M = (3.0, 8.0)  # floor length and width
ROOM_HEIGHT_M = (2.5, 3.5)  # floor to ceiling
RT60_S = (0.15, 0.6)  # the reverberation time asked of Sabine's formula
WALL_GAP_M = 0.5  # source and microphone keep this far from walls (and from each other)


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng voice, e.g. "en-us+m3"
    speed: int  # words per minute (espeak -s)
    pitch: int  # 0..99 (espeak -p)

    @property
    def key(self) -> str:
        """Unique per voice, e.g. "en-us+m3/s160/p45"."""
        return f"{self.name}/s{self.speed}/p{self.pitch}"


@dataclass(frozen=True)
class Item:
    task: str  # "asr" or "qa" (manifest TASKS)
    transcript: str  # what is said, lower case words, no punctuation
    instruction: str | None  # asr: REPEAT; qa: None
    response: str  # asr: the transcript; qa: the short canonical answer, e.g. "five"


@dataclass(frozen=True)
class _Episode:
    kind: str  # one of KINDS
    voice: Voice
    chunks: tuple[str, ...]  # words spoken between pauses; hesitation: (head, [filler,] tail)
    lead: int  # samples of silence before the first chunk
    gaps: tuple[int, ...]  # samples of silence after each chunk (the last: the end silence)


# --------------------------------------------------------------------------- voices


def voice_pool(seed: int = 0) -> tuple[tuple[Voice, ...], tuple[Voice, ...]]:
    """(training voices, held-out voices): 69 and 8, deterministic per seed.

    The held-out pairs take distinct variants and cycle through the accents, so training
    keeps every accent and every variant; each voice draws its own speed and pitch.
    """
    rng = np.random.default_rng(seed)
    accents = rng.permutation(len(ACCENTS))
    variants = rng.permutation(len(VARIANTS))
    held = {
        (ACCENTS[accents[i % len(ACCENTS)]], VARIANTS[variants[i]]) for i in range(HELD_OUT_VOICES)
    }
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    voices = {
        pair: Voice(
            f"{pair[0]}+{pair[1]}",
            int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
            int(rng.integers(PITCH[0], PITCH[1] + 1)),
        )
        for pair in pairs
    }
    train = tuple(voices[p] for p in pairs if p not in held)
    return train, tuple(voices[p] for p in pairs if p in held)


# --------------------------------------------------------------------------- espeak


def cache_dir() -> Path:
    """Where espeak renders are kept: ``$MINMO_SYNTH_CACHE`` or <tempdir>/minmo-synth-cache."""
    path = Path(
        os.environ.get("MINMO_SYNTH_CACHE") or Path(tempfile.gettempdir()) / "minmo-synth-cache"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _espeak() -> str:
    return espeak("the synthetic training data is spoken by it")


def _espeak_file(exe: str, text: str, voice: Voice, ssml: bool) -> Path:
    """espeak-ng's WAV for ``text`` (cached on disk; rendered on a miss)."""
    return render_file(exe, text, cache_dir(), voice.name, voice.speed, voice.pitch, ssml)


@functools.lru_cache(maxsize=4096)
def _speech(exe: str, text: str, voice: Voice, ssml: bool = False) -> np.ndarray:
    """(N,) float32 16 kHz espeak speech at the active level, untrimmed, read-only."""
    x, rate = sf.read(_espeak_file(exe, text, voice, ssml), dtype="float32", always_2d=True)
    x = resample(np.ascontiguousarray(x[:, 0]), rate, SAMPLE_RATE)
    x = (x * (_db(SPEECH_LEVEL_DBFS) / _active_rms(x))).astype(np.float32)
    x.flags.writeable = False
    return x


def render(text: str, voice: Voice) -> np.ndarray:
    """(N,) float32 16 kHz speech of ``text``: silence trimmed, active RMS at
    SPEECH_LEVEL_DBFS. MissingDependencyError without espeak-ng."""
    x = _speech(_espeak(), text, voice)
    start, end = _speech_bounds(x)
    return x[start:end].copy()


def _render_cut(head: str, tail: str, voice: Voice) -> tuple[np.ndarray, np.ndarray]:
    """``head`` and ``tail`` as one sentence broken after ``head``: (head, tail) trimmed."""
    ssml = f'<speak>{escape(head)} <break time="{CUT_BREAK_MS}ms"/> {escape(tail)}</speak>'
    x = _speech(_espeak(), ssml, voice, ssml=True)
    quiet = frame_levels_dbfs(x, SAMPLE_RATE) < _max_level(x) - TRIM_DB
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    starts, ends = edges[::2], edges[1::2]  # quiet runs [start, end) in frames
    inner = (starts > 0) & (ends < quiet.size)
    if not inner.any():
        raise RuntimeError(f"espeak-ng rendered no break in {ssml!r} ({voice.key})")
    longest = np.argmax(np.where(inner, ends - starts, -1))
    first, second = x[: starts[longest] * FRAME], x[ends[longest] * FRAME :]
    a, b = _speech_bounds(first)
    c, d = _speech_bounds(second)
    return first[a:b].copy(), second[c:d].copy()


# --------------------------------------------------------------------------- levels


def _db(dbfs: float) -> float:
    return float(10 ** (dbfs / 20))


def _max_level(x: np.ndarray) -> float:
    return float(frame_levels_dbfs(x, SAMPLE_RATE).max())


def _speech_bounds(x: np.ndarray) -> tuple[int, int]:
    """[start, end) samples from the first to the last frame within TRIM_DB of the loudest."""
    levels = frame_levels_dbfs(x, SAMPLE_RATE)
    loud = np.flatnonzero(levels > levels.max() - TRIM_DB)
    return int(loud[0]) * FRAME, min(x.size, (int(loud[-1]) + 1) * FRAME)


def _active_rms(x: np.ndarray) -> float:
    """RMS over the 10 ms frames within ACTIVE_DB of the loudest (the speech, not pauses)."""
    levels = frame_levels_dbfs(x, SAMPLE_RATE)
    active = levels[levels > levels.max() - ACTIVE_DB]
    return float(np.sqrt(np.mean(10 ** (active / 10))))


# --------------------------------------------------------------------------- items


def _number(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def command_items(rng: np.random.Generator, n: int) -> list[Item]:
    """``n`` items over a closed vocabulary, about half asr (digit strings, alarm times) and
    half qa (sums and differences 0-20 answered in words, one-word-answer questions)."""
    items = []
    for _ in range(n):
        kind = int(rng.integers(4))
        if kind == 0:
            digits = [NUMBERS[_number(rng, 0, 9)] for _ in range(_number(rng, 2, 4))]
            items.append(Item("asr", " ".join(digits), REPEAT, " ".join(digits)))
        elif kind == 1:
            minute = MINUTES[int(rng.integers(len(MINUTES)))]
            time = f"{NUMBERS[_number(rng, 1, 12)]} {minute}".strip()
            text = TIME_COMMANDS[int(rng.integers(len(TIME_COMMANDS)))].format(time)
            items.append(Item("asr", text, REPEAT, text))
        elif kind == 2:
            a = _number(rng, 0, 20)
            plus = bool(rng.integers(2))
            b = _number(rng, 0, 20 - a) if plus else _number(rng, 0, a)
            template = SUM_QUESTIONS[int(rng.integers(len(SUM_QUESTIONS)))]
            text = template.format(NUMBERS[a], "plus" if plus else "minus", NUMBERS[b])
            items.append(Item("qa", text, None, NUMBERS[a + b if plus else a - b]))
        else:
            question, answer = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
            items.append(Item("qa", question, None, answer))
    return items


# --------------------------------------------------------------------------- acoustics


def _pyroomacoustics() -> ModuleType:
    """pyroomacoustics, imported only when a room is asked for (it is optional)."""
    try:
        import pyroomacoustics
    except ImportError as err:
        raise MissingDependencyError(
            "room simulation (room=True) needs pyroomacoustics: pip install pyroomacoustics "
            "(it comes with the dev extra: pip install 'minmo-assistant[dev]')"
        ) from err
    return pyroomacoustics


def _room(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random shoebox's impulse response (float64) and its direct path's delay in samples."""
    pra = _pyroomacoustics()
    dim = np.array([*rng.uniform(*ROOM_SIDE_M, size=2), rng.uniform(*ROOM_HEIGHT_M)])
    rt60 = float(rng.uniform(*RT60_S))
    while True:
        source, mic = rng.uniform(WALL_GAP_M, dim - WALL_GAP_M, size=(2, 3))
        distance = float(np.linalg.norm(source - mic))
        if distance >= WALL_GAP_M:
            break
    c = pra.constants.get("c")
    surface = 2 * (dim[0] * dim[1] + dim[0] * dim[2] + dim[1] * dim[2])
    shortest = 24 * np.log(10) * np.prod(dim) / (c * surface)  # Sabine's RT60, walls absorbing all
    absorption, order = pra.inverse_sabine(max(rt60, 1.02 * shortest), dim.tolist())
    room = pra.ShoeBox(
        dim.tolist(), fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=order
    )
    room.add_source(source.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    half = pra.constants.get("frac_delay_length") // 2
    delay = round(distance / c * SAMPLE_RATE) + half  # where pyroomacoustics puts the direct path
    rir = np.array(room.rir[0][0], np.float64)
    rir[: max(0, delay - half)] = 0  # its zero-phase 10 Hz high-pass leaks ahead of the direct path
    return rir, delay


def _reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` as heard in a random room, direct sound aligned with ``x``, same active level."""
    from scipy.signal import oaconvolve  # pyroomacoustics depends on scipy

    rir, delay = _room(rng)
    wet = oaconvolve(x.astype(np.float64), rir)[delay : delay + x.size]
    wet = np.pad(wet, (0, x.size - wet.size)).astype(np.float32)
    return wet * np.float32(_active_rms(x) / _active_rms(wet))


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) Gaussian noise with a 1/f power spectrum above 50 Hz, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum /= np.sqrt(np.maximum(f, 50.0))
    spectrum[f < 20] = 0
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _acoustics(
    x: np.ndarray, rng: np.random.Generator, room: bool, snr_db: tuple[float, float] | None
) -> np.ndarray:
    """Room, then noise (each if asked for), then the peak limit."""
    if room:
        x = _reverberate(x, rng)
    if snr_db is not None:
        snr = rng.uniform(*snr_db)
        x = x + _pink_noise(rng, x.size) * np.float32(_active_rms(x) * 10 ** (-snr / 20))
    peak = float(np.max(np.abs(x)))
    return x * np.float32(PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x


# --------------------------------------------------------------------------- writing

Plan = TypeVar("Plan")  # what one example is built from: an utterance's or an episode's plan


def _seconds(rng: np.random.Generator, span: tuple[float, float]) -> int:
    """A uniform duration from ``span`` in whole samples."""
    return round(rng.uniform(*span) * SAMPLE_RATE)


def _write(
    folder: Path,
    name: str,
    plans: Sequence[Plan],
    rng: np.random.Generator,
    build: Callable[[Plan], tuple[np.ndarray, dict]],
    room: bool,
    snr_db: tuple[float, float] | None,
) -> Path:
    """Build, process and write every planned example (threads), then the manifest."""
    if room:
        _pyroomacoustics()  # refuse before writing anything
    clips = folder / name
    clips.mkdir(parents=True, exist_ok=True)
    children = rng.spawn(len(plans))

    def one(i: int) -> dict:
        dry, row = build(plans[i])
        audio = _acoustics(dry, children[i], room, snr_db)
        path = clips / f"{i:05d}.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        return {"audio": f"{name}/{path.name}", "duration": audio.size / SAMPLE_RATE, **row}

    with ThreadPoolExecutor(WORKERS) as pool:
        rows = list(pool.map(one, range(len(plans))))
    manifest = folder / f"{name}.jsonl"
    tmp = manifest.with_name(f"{manifest.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, manifest)
    return manifest


def write_utterances(
    folder: Path,
    name: str,
    items: Sequence[Item],
    voices: Sequence[Voice],
    seed: int,
    *,
    room: bool = False,
    snr_db: tuple[float, float] | None = None,
) -> Path:
    """Each item spoken by a seeded choice of ``voices`` with 0.1-0.3 s of silence either
    side: folder/<name>/NNNNN.wav and the manifest folder/<name>.jsonl (returned)."""
    if not voices:
        raise ValueError("write_utterances needs at least one voice")
    _espeak()
    rng = np.random.default_rng(seed)
    plans = [
        (item, voices[int(rng.integers(len(voices)))], _seconds(rng, PAD_S), _seconds(rng, PAD_S))
        for item in items
    ]

    def build(plan: tuple[Item, Voice, int, int]) -> tuple[np.ndarray, dict]:
        item, voice, before, after = plan
        speech = render(item.transcript, voice)
        audio = np.concatenate([np.zeros(before, np.float32), speech, np.zeros(after, np.float32)])
        row = {"transcript": item.transcript, "language": "en", "task": item.task}
        if item.instruction is not None:
            row["instruction"] = item.instruction
        return audio, {**row, "response": item.response}

    return _write(Path(folder), name, plans, rng, build, room, snr_db)


def _cut(words: list[str], rng: np.random.Generator) -> int:
    """Words kept before a hesitation: after a function word 30-80 % of the way through when
    there is one, else at any inner word boundary (mid-phrase)."""
    n = len(words)
    after_function = [
        k for k in range(1, n) if 0.3 * n <= k <= 0.8 * n and words[k - 1] in FUNCTION_WORDS
    ]
    choices = after_function or list(range(1, n))
    return choices[int(rng.integers(len(choices)))]


def _plan_episode(kind: str, voice: Voice, rng: np.random.Generator) -> _Episode:
    lead = _seconds(rng, LEAD_S)
    end = _seconds(rng, END_SILENCE_S[kind])
    if kind in ("finished", "hesitation"):
        if rng.random() < 0.5:
            text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        else:
            text = command_items(rng, 1)[0].transcript
        if kind == "finished":
            return _Episode(kind, voice, (text,), lead, (end,))
        words = text.split()
        k = _cut(words, rng)
        head, tail = " ".join(words[:k]), " ".join(words[k:])
        pause = _seconds(rng, PAUSE_S)
        if rng.random() < FILLER_P:
            filler = FILLERS[int(rng.integers(len(FILLERS)))]
            gaps = (pause, _seconds(rng, FILLER_PAUSE_S), end)
            return _Episode(kind, voice, (head, filler, tail), lead, gaps)
        return _Episode(kind, voice, (head, tail), lead, (pause, end))
    phrases = BACK_CHANNELS if kind == "back-channel" else INTERRUPTIONS
    return _Episode(kind, voice, (phrases[int(rng.integers(len(phrases)))],), lead, (end,))


def _episode_audio(episode: _Episode) -> tuple[np.ndarray, list[dict]]:
    """The episode's dry audio and its turn labels (exact sample times, in seconds)."""
    voice, texts = episode.voice, episode.chunks
    if episode.kind == "hesitation":
        head, tail = _render_cut(texts[0], texts[-1], voice)
        chunks = [head, *(render(text, voice) for text in texts[1:-1]), tail]
    else:
        chunks = [render(SPOKEN.get(text, text), voice) for text in texts]
    onset = {"back-channel": "listen", "interruption": "stop"}.get(episode.kind)
    turns = [(episode.lead, onset)] if onset else []
    parts, at = [np.zeros(episode.lead, np.float32)], episode.lead
    for i, (speech, gap) in enumerate(zip(chunks, episode.gaps, strict=True)):
        at += speech.size
        if i < len(chunks) - 1:
            turns.append((at, "listen"))
        elif onset is None:
            turns.append((at, "speak"))
        parts += [speech, np.zeros(gap, np.float32)]
        at += gap
    labels = [{"t": t / SAMPLE_RATE, "label": label} for t, label in turns]
    return np.concatenate(parts), labels


def write_dialogues(
    folder: Path,
    name: str,
    n: int,
    voices: Sequence[Voice],
    seed: int,
    *,
    room: bool = False,
    snr_db: tuple[float, float] | None = None,
) -> Path:
    """``n`` "duplex" episodes, KINDS in equal shares (shuffled), each spoken by a seeded
    choice of ``voices``: folder/<name>/NNNNN.wav and folder/<name>.jsonl (returned)."""
    if not voices:
        raise ValueError("write_dialogues needs at least one voice")
    _espeak()
    rng = np.random.default_rng(seed)
    kinds = rng.permutation([KINDS[i % len(KINDS)] for i in range(n)])
    plans = [
        _plan_episode(str(kind), voices[int(rng.integers(len(voices)))], rng) for kind in kinds
    ]

    def build(episode: _Episode) -> tuple[np.ndarray, dict]:
        audio, turns = _episode_audio(episode)
        transcript = " ".join(episode.chunks)
        return audio, {"transcript": transcript, "language": "en", "task": "duplex", "turns": turns}

    return _write(Path(folder), name, plans, rng, build, room, snr_db)


__all__ = [
    "SAMPLE_RATE", "Item", "Voice", "cache_dir", "command_items", "render", "voice_pool",
    "write_dialogues", "write_utterances",
]  # fmt: skip
