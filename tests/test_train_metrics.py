"""Training metrics: error rates and answers after normalisation, and turn-taking scored in
K-frame windows (the first firing in a segment decides; late, wrong or spurious firings
count against the policy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minmo_core.llm.duplex import DuplexAction
from minmo_core.train.duplex import Episodes, Point, Segment, points_of, score, segments_of
from minmo_core.train.manifest import Example, TurnLabel
from minmo_core.train.metrics import (
    answer_accuracy,
    normalise,
    number_words,
    precision_recall_f1,
    word_error_rate,
)

LISTEN, SPEAK, STOP = (int(a) for a in DuplexAction)


def test_text_is_normalised_before_it_is_scored() -> None:
    assert number_words(7) == "seven" and number_words(42) == "forty two"
    assert number_words(90) == "ninety"
    assert normalise("It's 7, I think!") == "it's seven i think"
    assert word_error_rate(["four seven one"], ["Four, 7 one."]) == 0.0
    assert word_error_rate(["four seven one"], ["four one"]) == pytest.approx(1 / 3)
    assert word_error_rate(["a b", "c d"], ["", "c d"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="every reference is empty"):
        word_error_rate([""], ["x"])
    assert answer_accuracy(["five", "blue"], ["The answer is 5.", "It is bluish."]) == 0.5


def test_precision_recall_f1() -> None:
    s = precision_recall_f1(tp=3, fp=1, fn=2)
    assert (s.precision, s.recall) == (0.75, 0.6)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert precision_recall_f1(0, 0, 0).f1 == 0.0


def episodes(segments: list[Segment], times: list[list[float]]) -> Episodes:
    points = [Point(s, t, LISTEN) for s, ts in enumerate(times) for t in ts]
    return Episodes([], [], segments, points, [])


def test_turn_taking_counts_the_first_firing_in_each_segment_within_k_frames() -> None:
    window = 1.2  # K = 10 frames of 120 ms
    segs = [
        Segment(0, 1.0, 3.0, "speak", False),  # user finished: take the turn
        Segment(1, 0.8, 2.0, "listen", False),  # mid-sentence pause: do not
        Segment(2, 0.2, 1.5, "stop", True),  # an interruption: stop speaking
        Segment(3, 0.2, 1.5, "listen", True),  # a back-channel: keep speaking
    ]
    times = [[1.1, 1.5, 2.5], [0.9, 1.3], [0.5, 0.9], [0.5, 0.9]]
    ep = episodes(segs, times)
    index = {(p.segment, p.t): i for i, p in enumerate(ep.points)}

    def policy(fires: dict[tuple[int, float], int]):
        return lambda i: fires.get((ep.points[i].segment, ep.points[i].t), LISTEN)

    perfect = score(ep, policy({(0, 1.1): SPEAK, (2, 0.5): STOP}), window)
    assert perfect["positive"].f1 == 1.0 and perfect["speak"].tp == 1 and perfect["stop"].tp == 1
    # late (after the window), a spurious take-over and a spurious stop
    bad = score(ep, policy({(0, 2.5): SPEAK, (1, 0.9): SPEAK, (3, 0.5): STOP}), window)
    assert (bad["speak"].tp, bad["speak"].fp, bad["speak"].fn) == (0, 1, 1)
    assert (bad["stop"].tp, bad["stop"].fp, bad["stop"].fn) == (0, 1, 1)
    # a stop while the user holds the floor is no take-over: the engine ignores it there
    ignored = score(ep, policy({(0, 1.1): STOP, (0, 1.5): SPEAK}), window)
    assert ignored["speak"].tp == 1
    assert len(index) == len(ep.points)


def test_segments_know_who_is_speaking_and_points_respect_the_window(tmp_path: Path) -> None:
    voiced = np.zeros(300, bool)
    voiced[20:150] = True  # voice from 0.2 s to 1.5 s
    turn = Example(tmp_path / "a.wav", 3.0, "what time is it", "en", "duplex",
                   turns=(TurnLabel(1.5, "speak"),))  # fmt: skip
    (user,) = segments_of(0, turn, voiced)
    assert not user.speaking and (user.start, user.end) == (1.5, 3.0)
    barge = Example(tmp_path / "b.wav", 3.0, "wait", "en", "duplex",
                    turns=(TurnLabel(0.2, "stop"),))  # fmt: skip
    (stop,) = segments_of(0, barge, voiced)
    assert stop.speaking
    train = points_of(user, window_s=1.2, hop_s=0.24, training=True)
    assert train[0] == pytest.approx(1.6) and train[-1] < 1.5 + 1.2
    scored = points_of(user, window_s=1.2, hop_s=0.24, training=False)
    assert scored[-1] > 1.5 + 1.2  # late decisions are seen (and counted as misses)
    assert points_of(stop, 1.2, 0.24, True)[0] == pytest.approx(0.5)  # after 0.3 s of voice
