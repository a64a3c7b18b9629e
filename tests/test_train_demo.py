"""``minmo train demo --quick``: every implemented stage runs end to end on the real
SmolLM2-135M-Instruct and synthetic speech, the table holds each stage's held-out metrics
before and after, and the trained adapters answer a spoken turn in aligned mode. (The full
demo is a command, not a test: its numbers are in docs/TRAINING.md.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.train_demo import DOC, MARKERS, QUICK, run_demo, write_table

pytestmark = pytest.mark.real_model


def test_the_quick_demo_runs_every_stage_and_a_spoken_turn(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng renders the demo's speech: sudo apt-get install espeak-ng")
    said: list[str] = []
    before = DOC.read_text()
    rows = run_demo(tmp_path / "demo", QUICK, said.append)
    assert DOC.read_text() == before  # only the full demo writes the document
    stages = [(r.stage, r.metric) for r in rows]
    for stage in ("pre-align", "full-align", "sft"):
        assert (stage, "wer") in stages and (stage, "qa_accuracy") in stages
    assert ("duplex", "positive F1@10 (predictor)") in stages
    assert ("duplex", "positive F1@10 (Smart Turn v3.2)") in stages
    assert ("t2s", "speech-token accuracy vs composed") in stages
    assert ("reference", "qa_accuracy (the LLM reads the transcript)") in stages
    # every trained metric keeps its untrained baseline (the S2T ones: before pre-align)
    for row in rows:
        if row.stage in ("pre-align", "full-align", "sft"):
            first = next(r for r in rows if r.metric == row.metric)
            assert row.untrained == pytest.approx(first.before)
        if row.metric.endswith("(predictor)") or row.stage == "t2s":
            assert row.untrained == pytest.approx(row.before)
    # each S2T stage starts where the last one ended
    wer = [r for r in rows if r.metric == "wer"]
    assert wer[1].before == pytest.approx(wer[0].after)
    assert wer[2].before == pytest.approx(wer[1].after)
    table = said[-1]
    assert "| stage | metric (held-out) | untrained | before | after | note |" in table
    assert "| pre-align | wer |" in table
    assert "Spoken turn in aligned mode with the trained adapters: " in table
    assert 'replied ""' not in table  # the engine answered the spoken question
    assert " 0.0 s of audio" not in table  # aloud, through the output projector
    for stage in ("pre-align", "full-align", "sft", "duplex", "t2s"):
        assert (tmp_path / "demo" / stage / "adapters" / "adapters.json").is_file()


def test_the_demo_table_replaces_only_what_lies_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "TRAINING.md"
    doc.write_text(f"# Training\nbefore\n{MARKERS[0]}\nold\n{MARKERS[1]}\nafter\n")
    write_table(doc, "| new |")
    write_table(doc, "| newer |")
    assert doc.read_text() == f"# Training\nbefore\n{MARKERS[0]}\n| newer |\n{MARKERS[1]}\nafter\n"
