"""Benchmark plumbing: tables render, rows land in the right section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.models import (
    Table,
    append_rows,
    bench_encoder,
    bench_token2wav,
    bench_voice_lm,
)
from app.cli import main


def test_rows_are_appended_under_their_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nIntro.\n\n## Other\n\n| a |\n|---|\n| 1 |\n")
    table = Table("## Encoder", ("x", "y"), [("1", "2")])
    append_rows(table, path)
    append_rows(Table("## Encoder", ("x", "y"), [("3", "4")]), path)
    append_rows(Table("## Other", ("a",), [("9",)]), path)
    assert path.read_text() == (
        "# Benchmarks\n\nIntro.\n\n## Other\n\n| a |\n|---|\n| 1 |\n| 9 |\n\n"
        "## Encoder\n\n| x | y |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"
    )


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


def test_bench_command_prints_and_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_file = tmp_path / "B.md"
    argv = ["bench", "encoder", "--preset", "tiny", "--seconds", "1", "--repeats", "1"]
    assert main([*argv, "--output", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "encoder+CTC ms" in printed and f"recorded in {out_file}" in printed
    assert "## Voice encoder (SenseVoiceSmall)" in out_file.read_text()


def test_voice_lm_bench_reports_time_per_speech_token() -> None:
    table = bench_voice_lm(preset="tiny", n_tokens=5, repeats=1)
    record = dict(zip(table.columns, table.rows[0], strict=True))
    assert record["params"] == "2.2M"  # the fixture geometry, lm_head tied to embed_tokens
    per_token = float(record["d_lm ms/token"])
    assert per_token > 0
    # d_lm has 2 decimals, "15 tokens ms" 1: they agree to 15 x 0.005 + 0.05 = 0.125 ms
    assert float(record["15 tokens ms"]) == pytest.approx(15 * per_token, abs=0.125)


def test_token2wav_bench_reports_chunk_and_vocoder_figures() -> None:
    table = bench_token2wav(preset="tiny", repeats=1, prompt_tokens=5)
    record = dict(zip(table.columns, table.rows[0], strict=True))
    flow_ms, hift_ms = float(record["flow ms/chunk"]), float(record["HiFT ms/chunk"])
    assert flow_ms > 0 and hift_ms > 0
    assert float(record["d_syn x 15 ms"]) == pytest.approx(flow_ms + hift_ms, abs=1.0)
    assert float(record["HiFT RTF (2 s)"]) > 0
