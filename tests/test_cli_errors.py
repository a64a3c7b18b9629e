"""Every way a user can get the command line wrong ends in one line naming the problem,
checked before any model loads where the check is cheap; --debug adds the traceback."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import build_parser, main
from minmo_core.voice.voice_lm import BLANK_EN

NOWHERE = "/nonexistent/minmo-models"  # a model folder that would fail if it were reached


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def expect(capsys: pytest.CaptureFixture, message: str, *argv: str, code: int = 2) -> str:
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert message in err, err
    return err


@pytest.fixture(scope="module")
def truncated_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 6) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    audio = (audio + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    whole = tmp_path_factory.mktemp("flac") / "whole.flac"
    sf.write(whole, audio, 16000)
    cut = whole.with_name("cut.flac")
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def test_a_truncated_flac_is_named_in_transcribe(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, truncated_flac: Path
) -> None:
    err = expect(
        capsys,
        f"{truncated_flac} is damaged or truncated: decoding failed after",
        "transcribe", str(truncated_flac), "--sensevoice", str(tiny_sensevoice_dir),
        "--allow-unpinned",
    )  # fmt: skip
    assert "flac decoder lost sync" in err and err.count(str(truncated_flac)) == 1


def test_a_truncated_flac_is_named_as_a_clone_clip(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, truncated_flac: Path, tmp_path: Path
) -> None:
    expect(
        capsys,
        f"{truncated_flac} is damaged or truncated",
        "tts", "hello.", "-o", str(tmp_path / "x.wav"), "--cosyvoice", str(tiny_release_dir),
        "--allow-unpinned", "--voice", str(truncated_flac), "--voice-text", "hello",
    )  # fmt: skip
    assert not (tmp_path / "x.wav").exists()


def test_a_file_that_is_not_audio_names_its_path_once(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    err = expect(capsys, "notes.wav is not a readable audio file", "transcribe", str(notes))
    assert err.count(str(notes)) == 1


def test_a_missing_input_file_is_named_before_any_model_loads(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    expect(
        capsys,
        f"audio file {tmp_path / 'gone.wav'} does not exist",
        "transcribe", str(tmp_path / "gone.wav"), "--sensevoice", NOWHERE,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (".", "it is a folder; give a file name"),
        ("missing/out.wav", "folder"),
        ("out.mp4", "unknown audio type '.mp4'; use one of .wav, .flac, .ogg"),
        ("out", "unknown audio type '(no suffix)'"),
    ],
)
def test_bad_tts_outputs_are_refused_before_any_model_loads(
    capsys: pytest.CaptureFixture, tmp_path: Path, output: str, message: str
) -> None:
    target = tmp_path / output
    expect(capsys, message, "tts", "hello", "-o", str(target), "--cosyvoice", NOWHERE)


def test_an_unwritable_tts_output_is_refused_before_any_model_loads(
    capsys: pytest.CaptureFixture,
) -> None:
    # /proc takes no new files, even for root
    expect(capsys, "cannot write /proc/minmo-out.wav", "tts", "hi", "-o", "/proc/minmo-out.wav",
           "--cosyvoice", NOWHERE)  # fmt: skip


def test_tts_writes_the_format_its_suffix_names(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path
) -> None:
    base = ["tts", "hello there.", "--cosyvoice", str(tiny_release_dir), "--allow-unpinned",
            "--greedy", "--seed", "0", "--device", "cpu"]  # fmt: skip
    suffixes = {".flac": "FLAC", ".ogg": "OGG"}
    if "MP3" in sf.available_formats():
        suffixes[".mp3"] = "MP3"
    for suffix, fmt in suffixes.items():
        out = tmp_path / f"speech{suffix}"
        code, _, err = run(capsys, *base, "-o", str(out))
        assert code == 0, err
        assert sf.info(str(out)).format == fmt


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tts", " ", "-o", "x.wav"], "nothing to say: the text is empty"),
        (["speech-tokens", ""], "nothing to say: the text is empty"),
        (["speech-tokens", "--stream", ""], "nothing to say: the text is empty"),
        (["chat", "  "], "nothing to send"),
        (["tts", "hi", "-o", "x.wav", "--voice-text", "hello"], "--voice-text describes a clip"),
        (["tts", "hi", "-o", "x.wav", "--save-voice", "v.safetensors"], "give a clip with --voice"),
        (["tts", "hi", "-o", "x.wav", "--voice", "missing.wav", "--voice-text", "x"],
         "voice missing.wav does not exist"),
        (["tts", "hi", "-o", "x.wav", "--emotion", "gleeful"], "unknown emotion 'gleeful'"),
        (["tts", "hi", "-o", "x.wav", "--dialect", "cantonese", "--wording", "en"],
         "needs a Chinese instruction"),
    ],
)  # fmt: skip
def test_cheap_mistakes_are_named_before_any_model_loads(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINMO_MODELS_DIR", NOWHERE)
    monkeypatch.delenv("MINMO_COSYVOICE_DIR", raising=False)
    monkeypatch.delenv("MINMO_LLM_DIR", raising=False)
    expect(capsys, message, *argv)


def test_voice_text_with_a_saved_voice_is_refused(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    saved = tmp_path / "me.safetensors"
    saved.write_bytes(b"x")
    expect(capsys, "carries its own transcript", "tts", "hi", "-o", str(tmp_path / "x.wav"),
           "--voice", str(saved), "--voice-text", "hello", "--cosyvoice", NOWHERE)  # fmt: skip


def test_a_cloned_voice_can_be_saved_and_reused(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    from minmo_core.voice.voice_prompt import VoiceProfile

    clip = fixtures_dir / "audio" / "en_clean.wav"
    if not clip.is_file():
        clip = next((fixtures_dir / "audio").glob("*.wav"))
    base = ["tts", "hello there.", "--cosyvoice", str(tiny_release_dir), "--allow-unpinned",
            "--greedy", "--seed", "0", "--device", "cpu"]  # fmt: skip
    saved = tmp_path / "me.safetensors"
    code, _, err = run(capsys, *base, "-o", str(tmp_path / "a.wav"), "--voice", str(clip),
                       "--voice-text", "hello you", "--save-voice", str(saved))  # fmt: skip
    assert code == 0, err
    profile = VoiceProfile.load(saved)
    assert profile.transcript == "hello you" and profile.speech_tokens.numel() > 0
    code, _, err = run(capsys, *base, "-o", str(tmp_path / "b.wav"), "--voice", str(saved))
    assert code == 0, err
    assert sf.read(tmp_path / "a.wav")[0].shape == sf.read(tmp_path / "b.wav")[0].shape


def test_play_without_an_output_device_is_named_before_any_model_loads(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sounddevice as sd

    def no_device(*args, **kwargs):
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sd, "check_output_settings", no_device)
    expect(
        capsys,
        "no usable audio output device for --play (Error querying device -1)",
        *("tts", "hi", "-o", str(tmp_path / "x.wav"), "--play", "--cosyvoice", NOWHERE),
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--temperature", "-1", "hi"], "argument --temperature: must be at least 0"),
        (["chat", "--max-new-tokens", "0", "hi"], "argument --max-new-tokens: must be at least 1"),
        (["transcribe", "a.wav", "--device", "gpu"], "argument --device: use auto, cpu, cuda"),
        (["tts", "hi"], "the following arguments are required: -o/--output"),
    ],
)
def test_argument_errors_are_one_line_with_a_pointer_to_help(
    capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    err = expect(capsys, message, *argv)
    assert f"(see minmo {argv[0]} --help)" in err


def test_a_voice_lm_folder_without_a_tokenizer_is_named(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cosyvoice"
    shutil.copytree(tiny_cosyvoice_dir, folder)
    (folder / BLANK_EN / "tokenizer.json").unlink()
    expect(capsys, f"{folder / BLANK_EN} has no tokenizer: the release's vocab.json and "
           "merges.txt are missing", "speech-tokens", "hello", "--cosyvoice", str(folder),
           "--allow-unpinned", "--device", "cpu")  # fmt: skip


def test_a_broken_tokenizer_file_is_named(
    capsys: pytest.CaptureFixture, tiny_cosyvoice_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cosyvoice"
    shutil.copytree(tiny_cosyvoice_dir, folder)
    (folder / BLANK_EN / "tokenizer.json").write_text("{ broken")
    expect(capsys, f"no usable tokenizer in {folder / BLANK_EN}", "speech-tokens", "hello",
           "--cosyvoice", str(folder), "--allow-unpinned", "--device", "cpu")  # fmt: skip


def test_unpinned_weights_name_the_flag_that_allows_them(
    capsys: pytest.CaptureFixture, tiny_release_dir: Path
) -> None:
    expect(capsys, "pass --allow-unpinned to load other weights", "speech-tokens", "hello",
           "--cosyvoice", str(tiny_release_dir), "--device", "cpu")  # fmt: skip


def test_sound_shorter_than_the_encoder_needs_is_called_short_not_silent(
    capsys: pytest.CaptureFixture, tiny_sensevoice_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, np.full(800, 0.2, np.float32), 16000)  # 50 ms of sound
    expect(capsys, "blip.wav: the audio is too short (50 ms of sound; at least 100 ms",
           "transcribe", str(path), "--sensevoice", str(tiny_sensevoice_dir),
           "--allow-unpinned")  # fmt: skip


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.cli import transcribe

    def broken(*args, **kwargs):
        raise RuntimeError("something deep\nbroke on line two")

    monkeypatch.setattr(transcribe, "run", broken)
    wav = tmp_path / "a.wav"
    argv = ["transcribe", str(wav)]
    err = expect(capsys, "unexpected RuntimeError: something deep (run again with --debug",
                 *argv, code=1)  # fmt: skip
    assert "Traceback" not in err
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        code, _, err = run(capsys, *debug)
        assert code == 1 and "Traceback (most recent call last)" in err
        assert err.splitlines()[-1].startswith("minmo: error: unexpected RuntimeError")
    monkeypatch.setenv("MINMO_DEBUG", "1")
    code, _, err = run(capsys, *argv)
    assert code == 1 and "Traceback" in err


def test_library_errors_become_one_line_messages() -> None:
    from app.cli import describe
    from minmo_core.errors import AudioError

    assert describe(AudioError("x.wav is silent")) == "x.wav is silent"
    assert describe(PermissionError(13, "Permission denied", "/data/a.wav")) == (
        "/data/a.wav: Permission denied"
    )
    assert describe(MemoryError()).startswith("out of memory")
    assert "GPU ran out of memory" in describe(RuntimeError("CUDA out of memory. Tried 2 GiB"))
    assert describe(sf.LibsndfileError(1, "Error : bad header")).startswith("audio file error")


def test_every_command_takes_the_same_device_option() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for name, sub in commands.choices.items():
        subs = [sub]
        if name == "bench":
            jobs = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
            subs = [
                p
                for job, p in jobs.choices.items()
                if job not in ("audio", "turns", "startup", "gui")
            ]
        for p in subs:
            device = [a for a in p._actions if "--device" in a.option_strings]
            if name in ("models", "train"):  # train: the device is in the stage config
                assert not device
                continue
            (action,) = device
            assert action.default == "auto" and action.type.__name__ == "device_name"
            seen += 1
    assert seen == 10  # transcribe, chat, converse, speech-tokens, tts, bench x5 (e2e, stream)


def test_tts_help_documents_the_style_options(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "tts", "--help")
    assert code == 0
    for option, value in (("--emotion", "happy"), ("--dialect", "cantonese"),
                          ("--rate", "very_fast"), ("--persona", "robot")):  # fmt: skip
        assert option in out and value in out
    assert "--save-voice" in out and ".flac" in out
