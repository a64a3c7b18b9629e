"""``minmo bench turns``: when to take the turn, measured on synthetic and real utterances.

Cases, half of each kind:
- finished: a whole sentence (espeak-ng, several voices; and the real recordings of the
  fixtures), then silence;
- unfinished: the same sentence cut mid-phrase: espeak-ng renders it with a long SSML break
  right after a function word ("...remind me to call the | dentist"), chosen by one rule for
  every sentence (the first or last function word between 30 % and 80 % of the words), so
  the speech before the pause is clearly incomplete and has espeak's continuation prosody;
  the real recordings are cut at their own inner pauses. The user pauses 0.3-1.5 s, then
  goes on.

Each policy either takes the turn before the user resumes (a positive decision) or not.
Reported: precision and recall of "take the turn" (finished = should take), F1, and the
decision latency from the end of speech on the finished cases. The silence rule takes the
turn ``T`` after the end of speech; Smart Turn judges the audio once the pause has lasted
``min_pause_s`` (its inference time counts), takes the turn when it says "finished", and
otherwise waits for its fallback. Speech ends are the synthesis' ground truth (the VAD's
own hang-over would add the same delay to every policy).

A control row ("coin") takes the same share of turns as Smart Turn at the same moment, but
at random, with the same fallback: what Smart Turn adds over its timing alone.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from app.bench.record import Table, machine_name
from minmo_core.common.audio import frame_levels_dbfs, read_audio
from minmo_core.common.espeak import espeak, render_file

SENTENCES = (
    "When you get a chance tomorrow morning, could you remind me to call the dentist?",
    "I was thinking that we could go to the beach this weekend if the weather is nice.",
    "Can you tell me how long it takes to drive from Boston to New York in the evening?",
    "My sister just moved to a new apartment and she wants to paint the kitchen yellow.",
    "Please add milk, eggs and two loaves of bread to the shopping list for Saturday.",
    "What would be a good recipe for dinner tonight that uses chicken and some rice?",
    "I need to book a table for four people at the Italian restaurant near the station.",
    "Could you explain why the sky looks red when the sun goes down in the evening?",
    "We should probably leave a little earlier because the traffic gets bad after five.",
    "How many minutes do I need to boil an egg if I want the yolk to stay soft?",
    "The meeting with the design team has been moved from Tuesday to Thursday afternoon.",
    "Tell me a short story about a dragon who is afraid of flying over the mountains.",
)
VOICES = ("en-us", "en-gb+f3", "en-us+m3")
REAL_CLIPS = (
    "sensevoice_sample.wav",
    "funasr_asr_example.wav",
    "cosyvoice_zero_shot_prompt.wav",
    "cosyvoice_cross_lingual_prompt.wav",
)
SILENCE_RULES_MS = (200, 500, 800, 1000)
FUNCTION_WORDS = frozenset(
    ("the", "a", "an", "to", "and", "about", "for", "with", "of", "from", "my", "your", "some",
     "that")
)  # fmt: skip
BREAK_MS = 1500  # the SSML pause inside an unfinished sentence
COIN_DRAWS = 200
PAUSE_RANGE_S = (0.3, 1.5)  # how long an unfinished speaker pauses before going on
FINISHED_SILENCE_S = 2.5
RATE = 16000


@dataclass(frozen=True)
class Case:
    name: str
    speech: np.ndarray  # up to the end of speech (the start of the pause)
    finished: bool
    pause_s: float  # unfinished: when the user resumes; finished: inf


def _espeak(text: str, voice: str, folder: Path, ssml: bool = False) -> np.ndarray:
    exe = espeak("the turn-taking cases are spoken by it")
    return _trim(read_audio(render_file(exe, text, folder, voice, 150, ssml=ssml), RATE))


def cut_points(text: str, lo: float = 0.3, hi: float = 0.8) -> list[int]:
    """Word counts after which ``text`` is clearly unfinished: right after the first and the
    last function word lying between ``lo`` and ``hi`` of the way through."""
    words = text.split()
    n = len(words)
    ks = [
        k for k in range(1, n) if lo * n <= k <= hi * n and words[k - 1].lower() in FUNCTION_WORDS
    ]
    return sorted({ks[0], ks[-1]}) if ks else []


def before_break(audio: np.ndarray, min_s: float = 0.8 * BREAK_MS / 1000) -> np.ndarray:
    """The audio up to the first quiet stretch of at least ``min_s`` (the rendered break)."""
    levels = frame_levels_dbfs(audio, RATE)
    quiet = levels < levels.max() - 40
    run, need = 0, int(min_s * 100)  # 10 ms frames
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run == need:
            return audio[: (i - need + 1) * 160]
    raise ValueError("no break found in the rendered audio")


def _trim(audio: np.ndarray) -> np.ndarray:
    levels = frame_levels_dbfs(audio, RATE)  # 10 ms frames
    loud = np.nonzero(levels > levels.max() - 40)[0]
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160]


def inner_pauses(audio: np.ndarray, min_gap_frames: int = 3) -> list[int]:
    """Sample positions where a quiet gap starts, between 30 % and 80 % of the speech."""
    levels = frame_levels_dbfs(audio, RATE)
    quiet = levels < levels.max() - 30
    n, starts, run = levels.size, [], 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        start = i - min_gap_frames + 1
        if run == min_gap_frames and 0.3 * n < start < 0.8 * n:
            starts.append(start * 160)
    return starts


def make_cases(
    fixtures_audio: Path | None, sentences=SENTENCES, voices=VOICES, seed: int = 0
) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in sentences:
            words, cuts = text.split(), cut_points(text)
            for j, voice in enumerate(voices):
                audio = _espeak(text, voice, Path(tmp))
                cases.append(Case(f"{voice}: {text[:24]}", audio, True, np.inf))
                for k in cuts[j % len(cuts) :][:1] if cuts else []:  # the cuts in turn
                    head, tail = escape(" ".join(words[:k])), escape(" ".join(words[k:]))
                    ssml = f'<speak>{head} <break time="{BREAK_MS}ms"/> {tail}</speak>'
                    speech = before_break(_espeak(ssml, voice, Path(tmp), ssml=True))
                    pause = float(rng.uniform(*PAUSE_RANGE_S))
                    cases.append(Case(f"{voice}: ...{head[-24:]} |", speech, False, pause))
    if fixtures_audio is not None:
        for clip in REAL_CLIPS:
            path = fixtures_audio / clip
            if not path.is_file():
                continue
            audio = _trim(read_audio(path, RATE))
            cases.append(Case(f"real: {clip}", audio, True, np.inf))
            for cut in inner_pauses(audio, min_gap_frames=12):
                pause = float(rng.uniform(*PAUSE_RANGE_S))
                cases.append(Case(f"real: {clip} @{cut / RATE:.2f} s", audio[:cut], False, pause))
    return cases


@dataclass
class Outcome:
    took: bool  # took the turn before the user resumed
    latency: float  # from the end of speech to the decision (finished cases)
    fallback: bool = False  # decided by the policy's fallback wait, not its model


def silence_rule(case: Case, timeout: float) -> Outcome:
    return Outcome(case.pause_s > timeout, timeout)


def smart_turn(case: Case, policy) -> Outcome:
    """The Smart Turn policy's decision on a case (its inference time counts)."""
    judged_at = policy.min_pause_s
    audio = np.concatenate([case.speech, np.zeros(int(judged_at * RATE), np.float32)])
    start = time.perf_counter()
    finished = policy.decide(audio)
    at = judged_at + (time.perf_counter() - start)
    if not finished:
        at = policy.max_wait_s
    return Outcome(case.pause_s > at, at, fallback=not finished)


def coin(case: Case, early: bool, at: float, fallback_s: float) -> Outcome:
    """The control: take the turn at ``at`` when ``early`` (drawn at random), else at the
    fallback."""
    when = at if early else fallback_s
    return Outcome(case.pause_s > when, when, fallback=not early)


def score(cases: list[Case], outcomes: list[Outcome]) -> tuple[float, float, float, list[float]]:
    tp = sum(o.took and c.finished for c, o in zip(cases, outcomes, strict=True))
    fp = sum(o.took and not c.finished for c, o in zip(cases, outcomes, strict=True))
    fn = sum(not o.took and c.finished for c, o in zip(cases, outcomes, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    latencies = [o.latency for c, o in zip(cases, outcomes, strict=True) if c.finished and o.took]
    return precision, recall, f1, latencies


def bench_turns(fixtures_audio: Path | None, seed: int = 0, cases: list[Case] | None = None):
    from minmo_core.engine.turns import SmartTurnPolicy

    cases = cases if cases is not None else make_cases(fixtures_audio, seed=seed)
    policies = [(f"silence {ms} ms", lambda c, t=ms / 1000: silence_rule(c, t)) for ms in
                SILENCE_RULES_MS]  # fmt: skip
    smart = SmartTurnPolicy()
    pipecat = SmartTurnPolicy(smart.model, threshold=0.5)  # pipecat's own threshold
    policies.append((f"Smart Turn v3.2, threshold 0.5, fallback {pipecat.max_wait_s:g} s",
                     lambda c: smart_turn(c, pipecat)))  # fmt: skip
    smart_outcomes = [smart_turn(c, smart) for c in cases]
    judged_cases = iter(smart_outcomes)
    policies.append(
        (f"Smart Turn v3.2 (the engine's: {smart.threshold:g}, {smart.max_wait_s:g} s)",
         lambda c: next(judged_cases))
    )  # fmt: skip
    rate = float(np.mean([not o.fallback for o in smart_outcomes]))
    judged = float(np.median([o.latency for o in smart_outcomes if not o.fallback] or [0.0]))
    rng = np.random.default_rng(seed + 1)
    coin_runs = [
        [coin(c, draw < rate, judged, smart.max_wait_s) for c, draw in
         zip(cases, rng.random(len(cases)), strict=True)]
        for _ in range(COIN_DRAWS)
    ]  # fmt: skip
    stamp = (dt.date.today().isoformat(), machine_name("cpu"))
    finished = sum(c.finished for c in cases)
    runs = [(name, [[decide(c) for c in cases]]) for name, decide in policies]
    runs.append((f"coin ({rate:.0%} early, control; mean of {COIN_DRAWS} draws)", coin_runs))
    rows = []
    for name, outcome_runs in runs:
        scores = [score(cases, outcomes) for outcomes in outcome_runs]
        precision, recall, f1 = (float(np.mean([sc[i] for sc in scores])) for i in range(3))
        latencies = [lat for sc in scores for lat in sc[3]]
        fallback = np.mean([sum(o.fallback and c.finished for c, o in
                                zip(cases, outcomes, strict=True))
                            for outcomes in outcome_runs])  # fmt: skip
        p50, p90 = (np.percentile(latencies, q) * 1000 if latencies else float("nan")
                    for q in (50, 90))  # fmt: skip
        mean = np.mean(latencies) * 1000 if latencies else float("nan")
        rows.append(
            (*stamp, name, f"{finished}+{len(cases) - finished}", f"{precision:.2f}",
             f"{recall:.2f}", f"{f1:.3f}", f"{p50:.0f}/{p90:.0f}", f"{mean:.0f}",
             f"{fallback:.0f} of {finished}")
        )  # fmt: skip
    columns = ("date", "machine", "policy", "cases (finished+not)", "precision", "recall", "F1",
               "latency p50/p90 ms", "mean ms",
               "finished cases left to the fallback")  # fmt: skip
    return Table("## Turn-taking (take the turn?)", columns, rows, ("date", "machine", "policy"))
