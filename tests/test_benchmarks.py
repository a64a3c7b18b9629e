"""Benchmark plumbing: tables render, rows land in the right section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench import models, record
from app.bench.models import bench_encoder, bench_token2wav, bench_voice_lm
from app.bench.record import Table, record_rows
from app.cli import main


def test_rows_land_under_their_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nIntro.\n\n## Other\n\n| a |\n|---|\n| 1 |\n")
    table = Table("## Encoder", ("x", "y"), [("1", "2")], key=("x",))
    record_rows(table, path)
    record_rows(Table("## Encoder", ("x", "y"), [("3", "4")], key=("x",)), path)
    record_rows(Table("## Other", ("a",), [("9",)], key=("a",)), path)
    assert path.read_text() == (
        "# Benchmarks\n\nIntro.\n\n## Other\n\n| a |\n|---|\n| 1 |\n| 9 |\n\n"
        "## Encoder\n\n| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"
    )


def test_a_rerun_replaces_the_row_of_the_same_date_machine_and_preset(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    columns = ("date", "machine", "preset", "ms")
    record_rows(Table("## T", columns, [("d1", "m", "real", "5"), ("d1", "m", "tiny", "1")]), path)
    record_rows(Table("## T", columns, [("d1", "m", "real", "4")]), path)
    record_rows(Table("## T", columns, [("d2", "m", "real", "3")]), path)
    body = [line for line in path.read_text().splitlines() if line.startswith(("| d1", "| d2"))]
    assert body == ["| d1 | m | tiny | 1 |", "| d1 | m | real | 4 |", "| d2 | m | real | 3 |"]


def test_new_columns_start_a_new_table_under_the_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    record_rows(Table("## T", ("date", "machine", "preset"), [("d", "m", "real")]), path)
    record_rows(Table("## T", ("date", "machine", "preset", "x"), [("d", "m", "real", "1")]), path)
    text = path.read_text()
    assert "| date | machine | preset |\n|---|---|---|\n| d | m | real |" in text
    assert "| date | machine | preset | x |\n|---|---|---|---|\n| d | m | real | 1 |" in text


def test_table_renders_aligned_columns() -> None:
    text = Table("## T", ("name", "ms"), [("encoder", "1.5"), ("fe", "10.25")]).render()
    assert text.splitlines() == [
        "name     ms   ",
        "--------------",
        "encoder  1.5  ",
        "fe       10.25",
    ]


def test_encoder_bench_reports_a_complete_row() -> None:
    table = bench_encoder(preset="tiny", seconds=2.0, repeats=1)
    (row,) = table.rows
    record = dict(zip(table.columns, row, strict=True))
    assert record["preset"] == "tiny"
    assert record["params"] == "0.3M"
    assert float(record["total s"]) > 0
    # "total s" has 3 decimals, RTF 4: they agree to the rounding of "total s"
    assert float(record["RTF"]) == pytest.approx(float(record["total s"]) / 2.0, abs=3e-4)


TINY_ENCODER = ["bench", "encoder", "--preset", "tiny", "--seconds", "1", "--repeats", "1"]


def test_bench_command_prints_and_records_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out_file = tmp_path / "B.md"
    assert main([*TINY_ENCODER, "--record", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "encoder+CTC ms" in printed and f"recorded in {out_file}" in printed
    assert "## Voice encoder (SenseVoiceSmall)" in out_file.read_text()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in checkout, so no test writes into the real docs/BENCHMARKS.md."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "docs").mkdir()
    md = tmp_path / "docs" / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    monkeypatch.setattr(record, "CHECKOUT", tmp_path)
    monkeypatch.setattr(record, "BENCHMARKS_MD", md)
    return md


def test_tiny_rows_are_not_recorded_unless_asked(
    checkout: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(TINY_ENCODER) == 0
    assert "not recorded (tiny preset" in capsys.readouterr().out
    assert checkout.read_text() == "# Benchmarks\n"
    assert main([*TINY_ENCODER, "--record"]) == 0
    assert f"recorded in {checkout}" in capsys.readouterr().out
    assert "| tiny |" in checkout.read_text()


def test_an_installed_copy_prints_rows_but_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(record, "CHECKOUT", site)
    monkeypatch.setattr(record, "BENCHMARKS_MD", site / "docs" / "BENCHMARKS.md")
    assert main([*TINY_ENCODER, "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "encoder+CTC ms" in out and "not recorded (an installed copy" in out
    assert not (site / "docs").exists()
    assert main([*TINY_ENCODER, "--record"]) == 2
    assert "give --record PATH" in capsys.readouterr().err


def test_the_real_checkout_is_recognised() -> None:
    assert record.running_from_checkout()
    assert record.BENCHMARKS_MD.read_text().startswith("# Benchmarks")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "encoder", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (["bench", "voice-lm", "--tokens", "0"], "argument --tokens: must be at least 1, got 0"),
        (["bench", "encoder", "--seconds", "0"], "argument --seconds: must be at least 1, got 0"),
        (["bench", "encoder", "--seconds", "nan"], "argument --seconds: must be a finite number"),
        (["bench", "token2wav", "--threads", "-3"], "argument --threads: must be at least 1"),
        (["bench", "audio", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["bench", "audio", "--single", "2"], "argument --single: must be at least 10, got 2"),
        (["bench", "audio", "--double", "1"], "argument --double: must be at least 10, got 1"),
        (["bench", "audio", "--near", "0.5"], "argument --near: must be at least 5, got 0.5"),
        (["bench", "audio", "--aec", "speex,aec4"], "argument --aec: aec4: choose from speex, w"),
        (["bench", "audio", "--aec", ","], "argument --aec: nothing: choose from speex, webrtc"),
        (["bench", "encoder", "--device", "gpu"], "argument --device: use auto, cpu, cuda"),
    ],
)
def test_bench_argument_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_the_benchmark_warms_up_until_the_time_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    durations = iter([0.9, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    clock = {"now": 0.0}
    calls = []

    def fake_call() -> None:
        calls.append(1)
        clock["now"] += next(durations)

    monkeypatch.setattr(models.time, "perf_counter", lambda: clock["now"])
    times = models.time_call(fake_call, torch.device("cpu"), repeats=2)
    assert len(calls) == 4 + 2  # 0.9 (cold), 0.3, 0.1, 0.1 (settled), then two timed calls
    assert times == pytest.approx([0.1, 0.1])


def test_voice_lm_bench_reports_time_per_speech_token_for_both_releases() -> None:
    table = bench_voice_lm(preset="tiny", n_tokens=5, repeats=1)
    records = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert [r["release"] for r in records] == ["cosyvoice2", "cosyvoice3"]
    assert records[0]["params"] == "2.2M"  # the fixture geometry, lm_head tied to embed_tokens
    assert records[1]["params"] == "2.5M"  # CosyVoice 3: 296 head rows, no llm_embedding
    for row in records:
        per_token = float(row["d_lm ms/token"])
        assert per_token > 0
        # d_lm has 2 decimals, "15 tokens ms" 1: they agree to 15 x 0.005 + 0.05 = 0.125 ms
        assert float(row["15 tokens ms"]) == pytest.approx(15 * per_token, abs=0.125)


def test_token2wav_bench_reports_chunk_and_vocoder_figures_for_both_releases() -> None:
    table = bench_token2wav(preset="tiny", repeats=1, prompt_tokens=5)
    records = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert [r["release"] for r in records] == ["cosyvoice2", "cosyvoice3"]
    for row in records:
        flow_ms, hift_ms = float(row["flow ms/chunk"]), float(row["HiFT ms/chunk"])
        assert flow_ms > 0 and hift_ms > 0
        assert float(row["d_syn x 15 ms"]) == pytest.approx(flow_ms + hift_ms, abs=1.0)
        assert float(row["HiFT RTF (2 s)"]) > 0
    one = bench_token2wav(preset="tiny", repeats=1, prompt_tokens=5, backends=("cosyvoice3",))
    assert [row[3] for row in one.rows] == ["cosyvoice3"]


def test_e2e_bench_reports_each_stage_with_speculation_off_and_on(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    assert main(["bench", "e2e", "--preset", "tiny", "--turns", "1", "--policy-wait", "300",
                 "--record", str(target)]) == 0  # fmt: skip
    text = target.read_text()
    assert "## Spoken turn, end to end (engine)" in text
    lines = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(lines) == 2
    header = next(line for line in text.splitlines() if line.startswith("| date"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for line, speculation in zip(lines, ("off", "on"), strict=True):
        row = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        assert row["speculation"] == speculation and row["preset"] == "tiny"
        stages = [float(row[c]) for c in ("transcript ms", "first text ms",
                                           "first speech token ms", "first audio ms")]  # fmt: skip
        assert stages == sorted(stages)  # each stage follows the one before
        assert float(row["policy wait ms"]) >= 300  # the silence rule waited
        assert stages[0] >= 280  # nothing was let out before the decision (frames: 10 ms)
        d = [float(row[c]) for c in ("d_llm ms", "d_lm ms", "d_syn ms")]
        assert all(x > 0 for x in d)
        # the d columns are rounded to 0.1 ms: 35 x 0.05, plus the sum's own 0.5
        assert float(row["5 d_llm + 15 d_lm + 15 d_syn ms"]) == pytest.approx(
            5 * d[0] + 15 * d[1] + 15 * d[2], abs=2.25
        )


def test_gui_bench_drives_a_spoken_conversation_with_barge_ins(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    assert main(["bench", "gui", "--turns", "2", "--record", str(target)]) == 0
    text = target.read_text()
    assert "## Window responsiveness (GUI event loop)" in text
    header = next(line for line in text.splitlines() if line.startswith("| date"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    (line,) = [line for line in text.splitlines() if line.startswith("| 20")]
    row = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
    assert int(row["replies"]) >= 2 and int(row["barge-ins"]) >= 1  # the loop really ran
    stalls = [float(row[c]) for c in ("median stall ms", "p99 stall ms", "longest stall ms")]
    assert stalls == sorted(stalls) and row["display"] == "offscreen"
    assert row["floor (longest)"].startswith("≤ 50")


def test_stream_bench_times_each_chunk_of_a_long_reply(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    assert main(["bench", "stream", "--preset", "tiny", "--chunks", "6", "--record",
                 str(target)]) == 0  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main(["bench", "stream", "--backend", "cosyvoice4"])
    assert refused.value.code == 2
    text = target.read_text()
    assert "## Streaming cost per chunk (voice LM + flow + HiFT)" in text
    header = next(line for line in text.splitlines() if line.startswith("| date"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    lines = [line for line in text.splitlines() if line.startswith("| 20")]
    rows = [
        dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines
    ]
    assert [(r["release"], r["scheme"], r["chunk tokens"]) for r in rows] == [
        ("cosyvoice2", "re-encode (release)", "fixed 15"),
        ("cosyvoice2", "re-encode, restarts", "fixed 15"),
        ("cosyvoice2", "incremental", "fixed 15"),
        ("cosyvoice2", "re-encode (release)", "15, 25, then 50"),
        ("cosyvoice2", "incremental", "15, 25, then 50"),
        ("cosyvoice3", "re-encode, restarts; vocoder windowed", "fixed 15"),
        ("cosyvoice3", "incremental; vocoder windowed", "fixed 15"),
        ("cosyvoice3", "re-encode, restarts; vocoder windowed", "15, 25, then 50"),
        ("cosyvoice3", "incremental; vocoder windowed", "15, 25, then 50"),
    ]
    assert rows[5]["chunks"] == rows[6]["chunks"] == "6"  # (how far CosyVoice 3's chunks grow
    # depends on the CPU)
    fixed, growing = rows[2], rows[4]
    assert fixed["chunks"] == "6" and growing["chunks"] == "3"  # 90 tokens: 15 + 25 + 50
    assert fixed["chunk 10 ms"] == "—" and growing["chunk 5 ms"] == "—"
    assert fixed["chunk 40 / chunk 2"] == "—"  # not that many chunks
    assert rows[0]["release / this (×)"] == "1.00"
    firsts = [float(fixed[f"chunk {n} ms"]) for n in (1, 2, 5)]
    assert all(t > 0 for t in firsts) and float(fixed["reply s"]) == pytest.approx(3.6)
    assert float(fixed["slowest chunk ms"]) >= max(firsts)
    assert float(fixed["total compute s"]) >= sum(firsts) / 1000
