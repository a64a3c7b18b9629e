"""`minmo speech-tokens` end to end on a tiny CosyVoice2 folder in the official layout."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from app.cli import main
from minmo_core.voice.speech_tokens import SpeechTokenGenerator
from minmo_core.voice.styles import VoiceStyle, render_instruction
from minmo_core.voice.voice_lm import greedy_sampler, load_voice_lm
from minmo_core.voice.voice_prompt import VoiceProfile


@pytest.fixture(scope="module")
def generator(tiny_cosyvoice_dir: Path) -> SpeechTokenGenerator:
    lm, tokenizer = load_voice_lm(tiny_cosyvoice_dir, allow_unpinned=True)
    return SpeechTokenGenerator(lm, tokenizer, greedy_sampler)


def run(
    capsys: pytest.CaptureFixture, folder: Path, *args: str
) -> tuple[int, list[list[int]], str]:
    code = main(
        [
            "speech-tokens",
            "--cosyvoice",
            str(folder),
            "--allow-unpinned",
            "--greedy",
            "--device",
            "cpu",
            *args,
        ]
    )
    out, err = capsys.readouterr()
    return code, [[int(t) for t in line.split()] for line in out.splitlines()], err


def test_prints_the_generators_tokens_15_per_line(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path, generator: SpeechTokenGenerator
) -> None:
    code, lines, _ = run(capsys, tiny_cosyvoice_dir, "hello there.", "how are you?")
    assert code == 0
    assert all(len(line) == 15 for line in lines[:-1]) and 0 < len(lines[-1]) <= 15
    expected = list(generator.from_text("hello there. how are you?"))
    assert lines == expected


def test_styles_become_the_instruction_prompt(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path, generator: SpeechTokenGenerator
) -> None:
    code, lines, _ = run(
        capsys, tiny_cosyvoice_dir, "hello", "--emotion", "happy", "--rate", "fast"
    )
    assert code == 0
    instruction = render_instruction(VoiceStyle.parse(emotion="happy", rate="fast"))
    assert lines == list(generator.from_text("hello", generator.prompt(instruction)))
    assert lines != list(generator.from_text("hello"))


def test_stream_flag_feeds_text_token_by_token(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path, generator: SpeechTokenGenerator
) -> None:
    code, lines, _ = run(capsys, tiny_cosyvoice_dir, "--stream", "hello there, how are you")
    assert code == 0
    ids = generator.tokenizer("hello there, how are you", add_special_tokens=False)["input_ids"]
    chunks = (chunk for chunk in generator.from_token_ids(ids) if chunk)
    expected = list(itertools.islice(chunks, len(lines)))
    assert lines == expected


def test_a_saved_voice_is_cloned_zero_shot(
    capsys: pytest.CaptureFixture,
    tiny_cosyvoice_dir: Path,
    tmp_path: Path,
    generator: SpeechTokenGenerator,
) -> None:
    voice = VoiceProfile("demo", "hi you", torch.arange(30, dtype=torch.int64) % 96)
    voice.save(tmp_path / "demo.safetensors")
    code, lines, _ = run(
        capsys, tiny_cosyvoice_dir, "hello", "--voice", str(tmp_path / "demo.safetensors")
    )
    assert code == 0
    prompt = generator.prompt("hi you", voice.speech_tokens.tolist())
    assert lines == list(generator.from_text("hello", prompt))


def expect_error(capsys: pytest.CaptureFixture, folder: Path, pattern: str, *args: str) -> None:
    code, lines, err = run(capsys, folder, *args)
    assert code == 2 and lines == []
    assert len(err.strip().splitlines()) == 1
    assert pattern in err, err


def test_unknown_style_names_list_the_choices(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path
) -> None:
    expect_error(
        capsys,
        tiny_cosyvoice_dir,
        "unknown emotion 'giddy'; valid emotion values: happy",
        "hi",
        "--emotion",
        "giddy",
    )
    expect_error(
        capsys, tiny_cosyvoice_dir, "unknown dialect 'klingon'", "hi", "--dialect", "klingon"
    )


def test_contradictory_styles_are_refused(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path
) -> None:
    code, _, err = run(
        capsys, tiny_cosyvoice_dir, "hi", "--dialect", "sichuanese", "--wording", "en"
    )
    assert code == 2 and "dialect" in err


def test_empty_text_is_refused(capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path) -> None:
    expect_error(capsys, tiny_cosyvoice_dir, "nothing to say: the text is empty", " ")


def test_missing_folder_is_named(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    expect_error(capsys, tmp_path / "none", "CosyVoice2-0.5B model folder", "hi")
