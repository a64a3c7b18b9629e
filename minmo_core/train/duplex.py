"""The full-duplex predictor's stage: decision points cut from labelled episodes, the
predictor trained on the LLM's hidden states over each cut, and turn-taking scored in
K-frame windows against the rules the app otherwise uses.

An episode (a ``duplex`` manifest example) is the user's audio from their speech onset on;
its labels split it into segments (from a label to the next). The engine asks the predictor
in one of two situations, and an episode is in one of them for its whole length:

* the user's turn (the first label comes after some speech, at a pause): at pauses it asks
  "take the turn?"; a ``speak`` segment should take it, a ``listen`` segment (a hesitation,
  a pause mid-sentence) should not;
* the assistant is speaking (the first label sits at the user's speech onset): it asks
  "stop speaking?"; a ``stop`` segment (an interruption) should stop it, a ``listen`` segment
  (a back-channel: "uh-huh") should not.

A decision point is a time ``t`` inside a segment; the predictor reads the hidden states of
the audio up to ``t``, exactly as ``DuplexPolicy`` computes them live (voice encoder, input
projector, LLM). Training points lie every ``duplex_hop_s`` from the segment's start, within
its first K frames for ``speak`` and ``stop`` (one LLM frame = LFR hop x projector stride =
120 ms at SenseVoice's rates), throughout for ``listen``.

Scoring (MinMo's "positive F1 at K"): in each segment the policy acts at its first firing.
A ``speak`` or ``stop`` segment is a true positive when that firing is its own action within
K frames of the label, else a false negative; a firing in a ``listen`` segment is a false
positive. The rules compared: the silence rule (take the turn after T of silence), Smart Turn
(judged after 0.2 s of pause, its fallback at 1.5 s), and for stopping, the barge-in rule
(stop after 0.3 s of the user's voice), which both rules use while the assistant speaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from minmo_core.common.audio import frame_levels_dbfs
from minmo_core.llm.duplex import DuplexAction
from minmo_core.train.data import load_clip, speech_embeddings
from minmo_core.train.manifest import Example
from minmo_core.train.metrics import Scores, precision_recall_f1
from minmo_core.train.models import TrainingModels

LABELS = {"listen": DuplexAction.KEEP_LISTENING, "speak": DuplexAction.TAKE_TURN,
          "stop": DuplexAction.STOP_SPEAKING}  # fmt: skip
FIRST_DECISION_S = 0.1  # DuplexPolicy's min_pause_s: the first judgement of a pause
BARGE_IN_S = 0.3  # the barge-in rule: this much of the user's voice stops the assistant
MAX_SEGMENT_POINTS = 12  # decision points per segment, at most
LEVEL_FLOOR_DBFS = -55.0
LEVEL_RANGE_DB = 35.0  # speech: within this of the episode's loudest 10 ms frame
SECONDS = 30  # DuplexPolicy reads the last 30 s


@dataclass(frozen=True)
class Segment:
    example: int  # index of the episode
    start: float  # the label's time, s
    end: float  # the next label's time or the end of the audio, s
    label: str  # listen, speak or stop
    speaking: bool  # the assistant is speaking (asked to stop) or not (asked to take over)

    @property
    def positive(self) -> bool:
        return self.label != "listen"


@dataclass(frozen=True)
class Point:
    segment: int  # index into the segments
    t: float  # the clip is the episode's audio up to here, s
    label: int  # DuplexAction at this point


def frame_seconds(models: TrainingModels) -> float:
    """One LLM position of speech: LFR hop x the projector's stride (0.12 s for SenseVoice)."""
    fe = models.sensevoice.frontend.cfg
    return fe.lfr_n * fe.frame_shift_ms / 1000 * models.adapters.input_projector.cfg.stride


def speech_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    """Which 10 ms frames hold the user's voice (bool, one per frame)."""
    levels = frame_levels_dbfs(audio, rate)
    return (levels > levels.max() - LEVEL_RANGE_DB) & (levels > LEVEL_FLOOR_DBFS)


def segments_of(index: int, example: Example, voiced: np.ndarray) -> list[Segment]:
    """The labelled segments of one episode; ``voiced`` from ``speech_frames``."""
    first = example.turns[0].t
    speaking = not voiced[: max(0, round(first * 100) - 2)].any()  # no voice before it
    times = [turn.t for turn in example.turns] + [example.duration]
    return [
        Segment(index, turn.t, times[i + 1], turn.label, speaking)
        for i, turn in enumerate(example.turns)
        if times[i + 1] > turn.t
    ]


def points_of(segment: Segment, window_s: float, hop_s: float, training: bool) -> list[float]:
    """Decision times in a segment: from its first judgement every ``hop_s``; for training,
    positives only inside their window."""
    first = segment.start + (BARGE_IN_S if segment.label == "stop" else FIRST_DECISION_S)
    end = segment.end
    if training and segment.positive:
        end = min(end, segment.start + window_s)
    times = []
    t = first
    while t < end - 1e-9 and len(times) < MAX_SEGMENT_POINTS:
        times.append(round(t, 4))
        t += hop_s
    return times


@dataclass
class Episodes:
    """Held-out or training episodes, cut into segments and decision points, with the
    predictor's input (the LLM's hidden states per point) computed once."""

    examples: list[Example]
    audio: list[np.ndarray]
    segments: list[Segment]
    points: list[Point]
    hidden: list[torch.Tensor]  # per point, (T, d_llm) float16 on the CPU
    voiced: list[np.ndarray] = field(default_factory=list)  # per episode, ``speech_frames``

    def __len__(self) -> int:
        return len(self.points)


def cut_episodes(
    models: TrainingModels,
    examples: Sequence[Example],
    window_frames: int,
    hop_s: float,
    training: bool,
    batch: int = 16,
) -> Episodes:
    rate = models.sensevoice.sample_rate
    window_s = window_frames * frame_seconds(models)
    audio, voiced, segments, points = [], [], [], []
    for index, example in enumerate(examples):
        clip = load_clip(example, models)
        audio.append(clip)
        voiced.append(speech_frames(clip, rate))
        for segment in segments_of(index, example, voiced[-1]):
            segments.append(segment)
            for t in points_of(segment, window_s, hop_s, training):
                label = LABELS[segment.label] if t < segment.start + window_s else 0
                points.append(Point(len(segments) - 1, t, int(label)))
    hidden = []
    for start in range(0, len(points), batch):
        chunk = points[start : start + batch]
        clips = []
        for p in chunk:
            whole = audio[segments[p.segment].example]
            clips.append(whole[: int(p.t * rate)][-SECONDS * rate :])
        hidden.extend(_hidden(models, clips))
    return Episodes(list(examples), audio, segments, points, hidden, voiced)


@torch.no_grad()
def _hidden(models: TrainingModels, clips: list[np.ndarray]) -> list[torch.Tensor]:
    speech, lengths = speech_embeddings(models, clips, grad_encoder=False)  # (B, T, D)
    mask = (torch.arange(speech.shape[1], device=speech.device) < lengths[:, None]).long()
    states = models.llm.model.base_model(inputs_embeds=speech, attention_mask=mask)
    out = states.last_hidden_state  # (B, T, D)
    return [out[i, : int(n)].to("cpu", torch.float16) for i, n in enumerate(lengths)]


def last_logits(models: TrainingModels, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """The predictor's scores after the last position of each point, (B, n_actions)."""
    predictor = models.adapters.duplex
    device, dtype = models.device, predictor.proj_in.weight.dtype
    lengths = torch.tensor([len(h) for h in hidden], device=device)
    padded = torch.nn.utils.rnn.pad_sequence([h.to(device, dtype) for h in hidden], True)
    logits = predictor.logits(padded, lengths)  # (B, T, n_actions)
    return logits[torch.arange(len(hidden), device=device), lengths - 1]


def loss_sum(models: TrainingModels, episodes: Episodes, items: Sequence[int]) -> torch.Tensor:
    logits = last_logits(models, [episodes.hidden[i] for i in items])
    labels = torch.tensor([episodes.points[i].label for i in items], device=logits.device)
    return F.cross_entropy(logits, labels, reduction="sum")


Policy = Callable[[Episodes, Point], int]  # the DuplexAction a policy fires at a point


def score(episodes: Episodes, decide: Callable[[int], int], window_s: float) -> dict[str, Scores]:
    """Windowed scores of a policy: ``decide(point index)`` -> DuplexAction. In a segment
    where the assistant speaks only STOP_SPEAKING fires; elsewhere only TAKE_TURN."""
    by_segment: dict[int, list[int]] = {}
    for i, p in enumerate(episodes.points):
        by_segment.setdefault(p.segment, []).append(i)
    counts = {name: [0, 0, 0] for name in ("speak", "stop")}  # tp, fp, fn
    for s, segment in enumerate(episodes.segments):
        fires = DuplexAction.STOP_SPEAKING if segment.speaking else DuplexAction.TAKE_TURN
        name = "stop" if segment.speaking else "speak"
        fired_at = None
        for i in by_segment.get(s, []):
            if decide(i) == fires:
                fired_at = episodes.points[i].t
                break
        if segment.positive:
            hit = fired_at is not None and fired_at < segment.start + window_s
            counts[name][0 if hit else 2] += 1
        elif fired_at is not None:
            counts[name][1] += 1
    scores = {name: precision_recall_f1(*c) for name, c in counts.items()}
    total = [sum(c[k] for c in counts.values()) for k in range(3)]
    scores["positive"] = precision_recall_f1(*total)
    return scores


def predictor_decisions(models: TrainingModels, episodes: Episodes, batch: int = 64) -> list[int]:
    out: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(episodes), batch):
            hidden = episodes.hidden[start : start + batch]
            out.extend(last_logits(models, hidden).argmax(-1).tolist())
    return out


def _silence_and_voice(episodes: Episodes, p: Point) -> tuple[float, float]:
    """At a point: seconds since the user's voice last sounded, and seconds of voice so far."""
    upto = episodes.voiced[episodes.segments[p.segment].example][: int(p.t * 100)]
    on = np.flatnonzero(upto)
    if on.size == 0:
        return p.t, 0.0
    return p.t - (on[-1] + 1) / 100, on.size / 100


def rule_decisions(episodes: Episodes, take_turn: Callable[[Point, float], bool]):
    """A rule's decisions: ``take_turn(point, silence_s)`` in the user's turn; the barge-in
    rule while the assistant speaks."""
    out = []
    for p in episodes.points:
        silence, voice = _silence_and_voice(episodes, p)
        if episodes.segments[p.segment].speaking:
            stop = voice >= BARGE_IN_S
            out.append(DuplexAction.STOP_SPEAKING if stop else DuplexAction.KEEP_LISTENING)
        else:
            take = silence > 0 and take_turn(p, silence)
            out.append(DuplexAction.TAKE_TURN if take else DuplexAction.KEEP_LISTENING)
    return out


def smart_turn_rule(episodes: Episodes, rate: int, model, threshold: float = 0.3,
                    judged_at: float = 0.2, fallback_s: float = 1.5):  # fmt: skip
    """The app's Smart Turn policy as a rule: judged once the pause reaches ``judged_at``;
    "finished" takes the turn then, otherwise the fallback takes it at ``fallback_s``."""
    verdicts: dict[tuple[int, float], bool] = {}

    def take(p: Point, silence: float) -> bool:
        if silence >= fallback_s:
            return True
        if silence < judged_at:
            return False
        pause_start = round(p.t - silence, 2)
        key = (episodes.segments[p.segment].example, pause_start)
        if key not in verdicts:
            audio = episodes.audio[key[0]]
            heard = audio[: int((pause_start + judged_at) * rate)]
            verdicts[key] = model.probability(heard) > threshold
        return verdicts[key]

    return rule_decisions(episodes, take)


__all__ = [
    "Episodes",
    "Point",
    "Segment",
    "cut_episodes",
    "frame_seconds",
    "loss_sum",
    "points_of",
    "predictor_decisions",
    "rule_decisions",
    "score",
    "segments_of",
    "smart_turn_rule",
    "speech_frames",
]
