"""The conversation from the command line: ``minmo chat --audio in.wav -o reply.wav`` for one
spoken turn, ``minmo converse --text`` for a typed conversation with memory."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf

from app.bench.chat_model import write_tiny_qwen
from app.cli import main


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen(tmp_path_factory.mktemp("qwen"))


def stack(qwen: Path, release: Path, sensevoice: Path) -> list[str]:
    return ["--llm", str(qwen), "--cosyvoice", str(release), "--sensevoice", str(sensevoice),
            "--allow-unpinned", "--device", "cpu", "--temperature", "0", "--seed", "0",
            "--max-new-tokens", "6"]  # fmt: skip


def test_a_spoken_turn_from_a_file_is_answered_into_a_file(
    qwen: Path,
    tiny_release_dir: Path,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    question = fixtures_dir / "audio" / "sensevoice_sample.wav"
    out = tmp_path / "reply.wav"
    argv = ["chat", "--audio", str(question), "-o", str(out)]
    assert main([*argv, *stack(qwen, tiny_release_dir, tiny_sensevoice_dir)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip()  # the reply's text
    assert "you said: " in printed.err and "first audio" in printed.err
    audio, rate = sf.read(out)
    assert rate == 24000 and audio.size > 0
    assert not out.with_name("reply.wav.partial").exists()


def test_a_recording_longer_than_a_turn_is_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    long = tmp_path / "long.wav"
    sf.write(long, [0.0] * (16000 * 31), 16000)
    assert main(["chat", "--audio", str(long), "--llm", "/nonexistent"]) == 2
    assert "is 31 s long; a spoken turn is at most 30 s" in capsys.readouterr().err


def test_text_and_audio_together_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["chat", "hello", "--audio", "x.wav"]) == 2
    assert "either a typed message or --audio" in capsys.readouterr().err


def test_a_typed_conversation_keeps_its_memory_and_saves_each_reply(
    qwen: Path,
    tiny_release_dir: Path,
    tiny_sensevoice_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello!\n/reset\nHow are you?\n/quit\n"))
    argv = ["converse", "--text", "--save-dir", str(tmp_path)]
    assert main([*argv, *stack(qwen, tiny_release_dir, tiny_sensevoice_dir)]) == 0
    printed = capsys.readouterr()
    assert len([line for line in printed.out.splitlines() if line.strip()]) == 2  # two replies
    assert printed.err.count("turn ") == 2 and "(conversation reset)" in printed.err
    assert sorted(p.name for p in tmp_path.glob("turn-*.wav")) == ["turn-1.wav", "turn-2.wav"]


def test_talking_without_a_microphone_is_named_in_one_line(
    qwen: Path,
    tiny_release_dir: Path,
    tiny_sensevoice_dir: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.audio.fake_device import FakeDevice, FakeSoundDevice

    speakers_only = FakeSoundDevice([FakeDevice("Speakers", max_output_channels=2)])
    monkeypatch.setattr("app.audio.stream.sounddevice_backend", lambda: speakers_only)
    code = main(["converse", *stack(qwen, tiny_release_dir, tiny_sensevoice_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "input" in err.lower(), err
    assert not [t for t in threading.enumerate() if t.name == "minmo-engine"]  # none left


def test_typed_only_options_are_refused_when_listening(capsys: pytest.CaptureFixture) -> None:
    assert main(["converse", "--no-voice"]) == 2
    assert "go with --text" in capsys.readouterr().err


def test_with_the_minmo_adapters_a_spoken_turn_runs_in_aligned_mode(
    qwen: Path,
    tiny_release_dir: Path,
    tiny_sensevoice_dir: Path,
    adapters_dir: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    question = fixtures_dir / "audio" / "sensevoice_sample.wav"
    out = tmp_path / "reply.wav"
    argv = ["chat", "--audio", str(question), "-o", str(out), "--adapters", str(adapters_dir)]
    assert main([*argv, *stack(qwen, tiny_release_dir, tiny_sensevoice_dir)]) == 0
    err = capsys.readouterr().err
    assert "(aligned; transcribed in" in err  # a recording: no policy took the turn
    assert sf.read(out)[0].size > 0
    # adapters need the local LLM; a folder without them is named
    assert main(["chat", "hi", "--adapters", str(adapters_dir), "--llm-url", "http://x"]) == 2
    assert "needs the local LLM, not --llm-url" in capsys.readouterr().err
    assert main(["chat", "hi", "--adapters", str(tmp_path), "--llm", str(qwen)]) == 2
    assert "has no adapters.json" in capsys.readouterr().err
