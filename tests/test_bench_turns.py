"""The turn-taking bench: cases of both kinds, and decisions scored as the module says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.bench.turns import (
    Case,
    Outcome,
    before_break,
    bench_turns,
    cut_points,
    inner_pauses,
    make_cases,
    score,
    silence_rule,
)


def test_cases_come_in_both_kinds_with_pauses_in_range() -> None:
    cases = make_cases(None, sentences=("I was thinking that we could go to the beach today.",))
    finished = [c for c in cases if c.finished]
    cut = [c for c in cases if not c.finished]
    assert len(finished) == 3 and len(cut) == 3  # one per voice
    for c, whole in zip(cut, finished, strict=True):
        assert 0.3 <= c.pause_s <= 1.5
        assert c.name.endswith("go to |") or c.name.endswith("that |")
        # the speech before the break: a clearly unfinished part of the whole sentence
        assert 0.2 * whole.speech.size < c.speech.size < 0.85 * whole.speech.size


def test_cuts_fall_right_after_a_function_word_inside_the_sentence() -> None:
    text = "Could you remind me to call the dentist about my appointment tomorrow?"
    # 12 words: cuts 3.6 to 9.6 words in; the first after "to" (5), the last after "about" (9)
    assert cut_points(text) == [5, 9]
    assert cut_points("Hello there.") == []
    tone = np.sin(np.arange(8000) / 5).astype(np.float32)
    audio = np.concatenate([tone, np.zeros(24000, np.float32), tone])
    assert before_break(audio).size == 8000


def test_inner_pauses_find_a_gap_inside_the_speech() -> None:
    tone = np.sin(np.arange(16000) / 5).astype(np.float32)
    audio = np.concatenate([tone, np.zeros(800, np.float32), tone])
    assert inner_pauses(audio) == [16000]


def test_scores_follow_their_definitions() -> None:
    speech = np.zeros(10, np.float32)
    cases = [Case("a", speech, True, np.inf), Case("b", speech, False, 0.4),
             Case("c", speech, False, 0.9)]  # fmt: skip
    outcomes = [silence_rule(c, 0.5) for c in cases]
    assert [o.took for o in outcomes] == [True, False, True]
    precision, recall, f1, latencies = score(cases, outcomes)
    assert (precision, recall, latencies) == (0.5, 1.0, [0.5])
    assert abs(f1 - 2 / 3) < 1e-9
    assert score(cases, [Outcome(False, 0.0)] * 3)[:3] == (0.0, 0.0, 0.0)


def test_the_bench_table_has_a_row_per_policy(fixtures_dir: Path) -> None:
    cases = make_cases(None, sentences=("Tell me a short story about a dragon who is afraid.",))
    table = bench_turns(None, cases=cases)
    policies = [row[table.columns.index("policy")] for row in table.rows]
    assert policies[:4] == ["silence 200 ms", "silence 500 ms", "silence 800 ms", "silence 1000 ms"]
    assert policies[4].startswith("Smart Turn v3.2, threshold 0.5")
    assert policies[5].startswith("Smart Turn v3.2 (the engine's")
    assert policies[6].startswith("coin") and len(policies) == 7
