"""`minmo transcribe` end to end on a tiny SenseVoice folder in the official layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file

from app.cli import main
from minmo_core.errors import AudioError
from minmo_core.understanding.sensevoice import SenseVoice
from minmo_core.understanding.transcript import parse_rich_text


@pytest.fixture(scope="module")
def golden(fixtures_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(fixtures_dir / "sensevoice" / "io.safetensors"))


@pytest.fixture(scope="module")
def model(tiny_sensevoice_dir: Path) -> SenseVoice:
    return SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)


@pytest.fixture(scope="module")
def expected(model: SenseVoice, golden: dict) -> str:
    """What the official greedy CTC ids of the fixture waveform decode to."""
    return model.vocabulary.DecodeIds(golden["ctc_greedy_token_ids"].tolist())


@pytest.fixture
def wav(tmp_path: Path, golden: dict) -> Path:
    path = tmp_path / "fixture.wav"
    sf.write(path, golden["waveform"], 16000, subtype="FLOAT")
    return path


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parity
def test_folder_model_reproduces_the_official_decode(
    model: SenseVoice, golden: dict, expected: str
) -> None:
    result = model.transcribe(golden["waveform"])
    assert result == parse_rich_text(expected, 0.0, 1.5)


def test_cli_prints_the_transcript_and_its_tags(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, wav: Path, expected: str
) -> None:
    code, out, _ = run_cli(
        capsys,
        "transcribe",
        str(wav),
        "--sensevoice",
        str(tiny_sensevoice_dir),
        "--allow-unpinned",
        "--device",
        "cpu",
    )
    assert code == 0
    parsed = parse_rich_text(expected)
    lines = out.splitlines()
    assert lines[0] == parsed.text
    if parsed.emotion:
        assert f"emotion={parsed.emotion}" in lines[1]


def test_cli_json_has_structured_fields_not_raw_tags(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, wav: Path, expected: str
) -> None:
    code, out, _ = run_cli(
        capsys,
        "transcribe",
        str(wav),
        "--sensevoice",
        str(tiny_sensevoice_dir),
        "--allow-unpinned",
        "--json",
        "--language",
        "en",
        "--itn",
    )
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"text", "language", "emotion", "event", "itn", "start", "end"}
    assert "<|" not in data["text"]
    assert data["end"] == pytest.approx(1.5)


def test_long_audio_is_transcribed_segment_by_segment(
    model: SenseVoice, tmp_path: Path, golden: dict
) -> None:
    clip = golden["waveform"]
    gap = np.zeros(8000, np.float32)
    audio = np.concatenate([np.concatenate([clip, gap])] * 40)  # 80 s
    path = tmp_path / "long.flac"
    sf.write(path, audio, 16000)
    seen = []
    result = model.transcribe_file(path, on_segment=seen.append)
    assert len(seen) == 3  # 80 s in pieces of at most 30 s
    assert all(p.end - p.start <= 30.0 for p in seen)
    assert seen[0].start == 0.0 and result.end == pytest.approx(80.0)
    assert result.text == " ".join(p.text for p in seen if p.text)


def test_too_short_audio_is_named(model: SenseVoice) -> None:
    with pytest.raises(AudioError, match=r"too short \(50 ms\)"):
        model.transcribe(np.full(800, 0.1, np.float32))


def expect_error(capsys: pytest.CaptureFixture, pattern: str, *args: str) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("minmo: error: ")
    assert pattern in lines[0], lines[0]


def test_missing_model_folder_is_named(
    capsys: pytest.CaptureFixture, tmp_path: Path, wav: Path
) -> None:
    expect_error(
        capsys,
        f"SenseVoiceSmall model folder {tmp_path / 'none'} does not exist",
        "transcribe",
        str(wav),
        "--sensevoice",
        str(tmp_path / "none"),
    )


def test_unset_default_folder_says_how_to_point_at_one(
    capsys: pytest.CaptureFixture, tmp_path: Path, wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINMO_SENSEVOICE_DIR", str(tmp_path / "unset"))
    expect_error(
        capsys, "pass --sensevoice DIR or set MINMO_SENSEVOICE_DIR", "transcribe", str(wav)
    )


def test_wrong_model_folder_is_named(
    capsys: pytest.CaptureFixture, tmp_path: Path, wav: Path
) -> None:
    (tmp_path / "config.yaml").write_text("model: something-else\n")
    expect_error(capsys, "has no model.pt", "transcribe", str(wav), "--sensevoice", str(tmp_path))


def test_unpinned_weights_are_refused_unless_allowed(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, wav: Path
) -> None:
    expect_error(
        capsys,
        "the pinned SenseVoiceSmall release has 936291369",
        "transcribe",
        str(wav),
        "--sensevoice",
        str(tiny_sensevoice_dir),
    )


def test_truncated_checkpoint_is_named(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, tmp_path: Path, wav: Path
) -> None:
    broken = shutil.copytree(tiny_sensevoice_dir, tmp_path / "broken")
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) * 2 // 3])
    expect_error(
        capsys,
        "model.pt is truncated or corrupt",
        "transcribe",
        str(wav),
        "--sensevoice",
        str(broken),
        "--allow-unpinned",
    )


def test_a_file_that_is_not_audio_is_named(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "report.wav"
    path.write_bytes(b"%PDF-1.4 not audio at all" * 10)
    expect_error(
        capsys,
        "report.wav is not a readable audio file",
        "transcribe",
        str(path),
        "--sensevoice",
        str(tiny_sensevoice_dir),
        "--allow-unpinned",
    )


def test_silence_is_named(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000 * 3, np.int16), 16000)
    expect_error(
        capsys,
        "quiet.wav: the audio contains only silence (no sound at all)",
        "transcribe",
        str(path),
        "--sensevoice",
        str(tiny_sensevoice_dir),
        "--allow-unpinned",
    )
