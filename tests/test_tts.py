"""`minmo tts` end to end on a tiny CosyVoice2 folder holding every file of the release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from minmo_core.common.release_config import release_flow_config
from minmo_core.errors import CheckpointError
from tests.test_flow import release_config
from tests.test_speech_tokens_cli import run as run_speech_tokens

SPEECH = "hello there."


def tts(capsys: pytest.CaptureFixture, folder: Path, out: Path, *args: str) -> tuple[int, str]:
    code = main(
        [
            "tts",
            SPEECH,
            "-o",
            str(out),
            "--cosyvoice",
            str(folder),
            "--allow-unpinned",
            "--greedy",
            "--seed",
            "0",
            "--device",
            "cpu",
            *args,
        ]
    )
    return code, capsys.readouterr().err


def tokens_of(capsys: pytest.CaptureFixture, folder: Path, *args: str) -> int:
    code, lines, _ = run_speech_tokens(capsys, folder, SPEECH, *args)
    assert code == 0
    return sum(len(line) for line in lines)


def test_release_yaml_gives_the_flow_sizes(tiny_release_dir: Path, fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "cosyvoice2_flow" / "config.json").read_text())
    assert release_flow_config(tiny_release_dir, allow_unpinned=True) == release_config(raw)
    with pytest.raises(CheckpointError, match=r"cosyvoice2\.yaml of the pinned CosyVoice2-0\.5B"):
        release_flow_config(tiny_release_dir)  # the tiny yaml is not the release's


def test_speaks_into_a_24khz_wav_as_long_as_its_speech_tokens(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hello.wav"
    code, err = tts(capsys, tiny_release_dir, out)
    assert code == 0, err
    audio, rate = sf.read(out)
    assert rate == 24000
    n_tokens = tokens_of(capsys, tiny_release_dir)
    assert audio.size == n_tokens * 2 * 480  # 25 tokens/s -> 50 mel frames/s -> 480 samples
    assert np.abs(audio).max() <= 0.99 and np.abs(audio).max() > 0.01
    assert not (tmp_path / "hello.wav.partial").exists()
    # MinMo's fixed 15-token chunks (the default grows them while ahead of playback): the
    # same speech tokens, the same length, and close to the same sound
    fixed = tmp_path / "fixed.wav"
    code, err = tts(capsys, tiny_release_dir, fixed, "--chunks", "fixed")
    assert code == 0, err
    same, _ = sf.read(fixed)
    assert same.size == audio.size and np.corrcoef(same, audio)[0, 1] > 0.9


def test_a_style_changes_what_is_said(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path
) -> None:
    plain, styled = tmp_path / "plain.wav", tmp_path / "happy.wav"
    assert tts(capsys, tiny_release_dir, plain)[0] == 0
    assert tts(capsys, tiny_release_dir, styled, "--emotion", "happy")[0] == 0
    assert not np.array_equal(sf.read(plain)[0], sf.read(styled)[0])


def test_a_reference_clip_is_cloned_and_needs_its_transcript(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    clip = fixtures_dir / "audio" / "cosyvoice_zero_shot_prompt.wav"
    code, err = tts(capsys, tiny_release_dir, tmp_path / "x.wav", "--voice", str(clip))
    assert code == 2 and "--voice with a recording needs --voice-text" in err
    out = tmp_path / "cloned.wav"
    code, err = tts(capsys, tiny_release_dir, out, "--voice", str(clip), "--voice-text", "hi you")
    assert code == 0, err
    assert sf.read(out)[0].size > 0


def test_a_bad_reference_clip_is_named_and_no_file_is_written(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "short.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "never.wav"
    code, err = tts(capsys, tiny_release_dir, out, "--voice", str(clip), "--voice-text", "x")
    assert code == 2 and "the reference clip is 1.0 s; at least 3 s" in err
    assert not out.exists()


def test_play_without_an_output_device_is_named(
    capsys: pytest.CaptureFixture,
    tiny_release_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sounddevice as sd

    def no_device(*args, **kwargs):
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sd, "OutputStream", no_device)
    code, err = tts(capsys, tiny_release_dir, tmp_path / "p.wav", "--play")
    assert code == 2 and "no usable audio output device for --play" in err
    assert not (tmp_path / "p.wav").exists()


def test_a_long_text_renders_group_by_group_at_a_bounded_cost(voice) -> None:
    """Each sentence group starts a fresh flow stream: the flow never sees more than one
    group's speech tokens, however long the text, and every speech token is heard."""
    import torch

    from minmo_core.voice.flow import FlowStream

    text = "This is a sentence of some length, with a clause. " * 12
    seen, groups = [], []
    real_flow, real_groups = FlowStream.mel, voice.tokens.from_text_groups

    def flow_spy(self, tokens, *args, **kwargs):
        seen.append(tokens.shape[1])
        return real_flow(self, tokens, *args, **kwargs)

    def groups_spy(*args, **kwargs):
        for group in real_groups(*args, **kwargs):
            groups.append([])

            def recorded(chunks=group, into=groups[-1]):
                for chunk in chunks:
                    into.extend(chunk)
                    yield chunk

            yield recorded()

    FlowStream.mel, voice.tokens.from_text_groups = flow_spy, groups_spy
    try:
        audio = torch.cat(list(voice.speak(text, wording="en")))
    finally:
        FlowStream.mel = real_flow
        del voice.tokens.from_text_groups
    assert len(groups) >= 3
    assert max(seen) <= max(len(g) for g in groups)  # one group at most, never the whole
    assert audio.numel() == 960 * sum(len(g) for g in groups)
