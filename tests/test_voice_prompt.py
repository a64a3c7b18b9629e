"""Voice profiles (validation, safetensors files) and what the voice-token LM is prompted with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minmo_core.errors import ConfigError
from minmo_core.voice.styles import END_OF_PROMPT, Dialect, Emotion, SpeakingRate, VoiceStyle
from minmo_core.voice.voice_prompt import (
    PROFILE_FORMAT,
    InstructPrompt,
    VoiceProfile,
    ZeroShotPrompt,
    lm_prompt,
)

T = 12  # speech tokens in the test voice: 0.48 s at 25 Hz


def make_voice(**overrides: object) -> VoiceProfile:
    g = torch.Generator().manual_seed(0)
    fields: dict[str, object] = {
        "name": "测试 voice",
        "transcript": "希望你以后能够做的比我还好呦。",
        "speech_tokens": torch.randint(0, 6561, (T,), generator=g),
        "prompt_mel": torch.randn(2 * T, 80, generator=g),
        "speaker_embedding": torch.randn(192, generator=g),
    }
    fields.update(overrides)
    return VoiceProfile(**fields)  # type: ignore[arg-type]


def test_a_valid_voice_builds_with_or_without_flow_tensors() -> None:
    voice = make_voice()
    assert voice.sample_rate == 24000
    bare = make_voice(prompt_mel=None, speaker_embedding=None)
    assert bare.prompt_mel is None and bare.speaker_embedding is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "  "}, "non-empty name"),
        ({"transcript": ""}, "needs the transcript"),
        ({"speech_tokens": [1, 2, 3]}, r"speech_tokens must be a non-empty \(T,\) tensor"),
        ({"speech_tokens": torch.zeros(0, dtype=torch.int64)}, "non-empty"),
        ({"speech_tokens": torch.zeros(1, T, dtype=torch.int64)}, r"\(T,\) tensor"),
        ({"speech_tokens": torch.zeros(T, dtype=torch.int32)}, "must be torch.int64"),
        ({"speech_tokens": torch.full((T,), 6561)}, r"\[0, 6561\), found \[6561, 6561\]"),
        ({"speech_tokens": torch.full((T,), -1)}, r"found \[-1, -1\]"),
        ({"prompt_mel": torch.zeros(2 * T + 1, 80)}, r"prompt_mel must have shape \(24, 80\)"),
        ({"prompt_mel": torch.zeros(2 * T, 81)}, r"prompt_mel must have shape \(24, 80\)"),
        ({"prompt_mel": torch.zeros(2 * T, 80, dtype=torch.float64)}, "must be torch.float32"),
        ({"prompt_mel": torch.full((2 * T, 80), float("nan"))}, "NaN or infinite"),
        ({"speaker_embedding": torch.zeros(191)}, r"speaker_embedding must have shape \(192,\)"),
        ({"speaker_embedding": torch.zeros(192).half()}, "must be torch.float32"),
        ({"speaker_embedding": torch.tensor([float("inf")] * 192)}, "NaN or infinite"),
        ({"sample_rate": 16000}, "sample_rate must be 24000"),
    ],
)
def test_invalid_voices_are_refused_with_a_reason(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_voice(**overrides)


@pytest.mark.parametrize("flow_tensors", [True, False])
def test_save_then_load_is_bit_exact(tmp_path: Path, flow_tensors: bool) -> None:
    voice = make_voice() if flow_tensors else make_voice(prompt_mel=None, speaker_embedding=None)
    path = tmp_path / "voice.safetensors"
    voice.save(path)
    back = VoiceProfile.load(path)
    assert (back.name, back.transcript, back.sample_rate) == (
        voice.name,
        voice.transcript,
        voice.sample_rate,
    )
    for key in ("speech_tokens", "prompt_mel", "speaker_embedding"):
        ours, theirs = getattr(voice, key), getattr(back, key)
        if ours is None:
            assert theirs is None
        else:
            assert theirs.dtype == ours.dtype
            assert torch.equal(theirs, ours)


def test_a_saved_voice_is_one_plain_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.safetensors"
    make_voice().save(path)
    assert list(tmp_path.iterdir()) == [path]
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == PROFILE_FORMAT
        assert sorted(f.keys()) == ["prompt_mel", "speaker_embedding", "speech_tokens"]


def _write(path: Path, tensors: dict[str, torch.Tensor], **metadata: str) -> Path:
    save_file(tensors, str(path), metadata=metadata or None)
    return path


def _good_metadata() -> dict[str, str]:
    return {
        "format": PROFILE_FORMAT,
        "format_version": "1",
        "name": "v",
        "transcript": "你好",
        "sample_rate": "24000",
    }


def _tokens() -> dict[str, torch.Tensor]:
    return {"speech_tokens": torch.arange(T, dtype=torch.int64)}


def test_a_hand_written_file_with_every_field_loads(tmp_path: Path) -> None:
    voice = VoiceProfile.load(_write(tmp_path / "v.safetensors", _tokens(), **_good_metadata()))
    assert voice.speech_tokens.tolist() == list(range(T))
    assert voice.cosyvoice == 2  # format version 1 knew only CosyVoice 2


@pytest.mark.parametrize("cosyvoice", [2, 3])
def test_a_profile_keeps_the_release_it_was_cloned_for(tmp_path: Path, cosyvoice: int) -> None:
    make_voice(cosyvoice=cosyvoice).save(tmp_path / "w.safetensors")
    loaded = VoiceProfile.load(tmp_path / "w.safetensors")
    assert loaded.cosyvoice == cosyvoice
    other = 5 - cosyvoice
    with pytest.raises(ConfigError, match=f"cloned for CosyVoice {cosyvoice} .* CosyVoice {other}"):
        lm_prompt(ZeroShotPrompt(loaded), cosyvoice=other)
    text, tokens = lm_prompt(ZeroShotPrompt(loaded), cosyvoice=cosyvoice)
    assert tokens == loaded.speech_tokens.tolist() and text.endswith(loaded.transcript)
    with pytest.raises(ConfigError, match="CosyVoice 2 or 3"):
        make_voice(cosyvoice=4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": "3"}, "format version 3; this program reads versions 1, 2"),
        ({"format_version": "2"}, "does not say which CosyVoice"),  # 2 names its release
        ({"format_version": "2", "cosyvoice": "4"}, "does not say which CosyVoice"),
        ({"format": "some-other-thing"}, "is not a MinMo voice profile"),
        ({"transcript": None}, "lacks transcript"),
        ({"name": None, "sample_rate": None}, "lacks name, sample_rate"),
        ({"sample_rate": "24k"}, "malformed sample_rate"),
        ({"sample_rate": "16000"}, "sample_rate must be 24000"),
    ],
)
def test_files_with_wrong_metadata_are_refused(
    tmp_path: Path, change: dict[str, str | None], message: str
) -> None:
    metadata = {k: v for k, v in (_good_metadata() | change).items() if v is not None}
    path = _write(tmp_path / "v.safetensors", _tokens(), **metadata)
    with pytest.raises(ConfigError, match=message) as info:
        VoiceProfile.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"prompt_mel": torch.zeros(2 * T, 80)}, "lacks speech_tokens"),
        ({**_tokens(), "extra": torch.zeros(1)}, "unknown tensors: extra"),
        ({"speech_tokens": torch.arange(T, dtype=torch.int32)}, "must be torch.int64"),
        ({"speech_tokens": torch.full((T,), 7000)}, r"must lie in \[0, 6561\)"),
        ({**_tokens(), "prompt_mel": torch.zeros(2 * T - 2, 80)}, "prompt_mel must have shape"),
    ],
)
def test_files_with_wrong_tensors_are_refused(
    tmp_path: Path, tensors: dict[str, torch.Tensor], message: str
) -> None:
    path = _write(tmp_path / "v.safetensors", tensors, **_good_metadata())
    with pytest.raises(ConfigError, match=message):
        VoiceProfile.load(path)


def test_a_file_without_metadata_is_not_a_voice_profile(tmp_path: Path) -> None:
    path = _write(tmp_path / "weights.safetensors", _tokens())
    with pytest.raises(ConfigError, match="is not a MinMo voice profile"):
        VoiceProfile.load(path)


def test_damaged_and_missing_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "voice.safetensors"
    make_voice().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ConfigError, match="is not a voice profile"):
        VoiceProfile.load(path)
    path.write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(ConfigError, match="is not a voice profile"):
        VoiceProfile.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        VoiceProfile.load(tmp_path / "missing.safetensors")


def test_no_prompt_gives_the_lm_nothing() -> None:
    assert lm_prompt(None) == ("", [])


def test_zero_shot_gives_the_lm_the_transcript_and_the_tokens() -> None:
    voice = make_voice()
    text, tokens = lm_prompt(ZeroShotPrompt(voice))
    assert text == voice.transcript
    assert tokens == voice.speech_tokens.tolist()
    assert all(type(t) is int for t in tokens)


def test_instruct_gives_the_lm_only_the_instruction() -> None:
    voice = make_voice()
    style = VoiceStyle(emotion=Emotion.HAPPY, dialect=Dialect.CANTONESE)
    prompt = InstructPrompt(style, voice)
    text, tokens = lm_prompt(prompt)
    assert tokens == []
    assert text.endswith(END_OF_PROMPT)
    assert "粤语" in text and "高兴" in text
    assert voice.transcript not in text
    assert prompt.voice is voice  # kept for the flow


def test_instruct_prompt_in_english_wording() -> None:
    style = VoiceStyle(rate=SpeakingRate.VERY_FAST)
    text, tokens = lm_prompt(InstructPrompt(style, language="en"))
    assert (text, tokens) == ("Speak at a very fast pace." + END_OF_PROMPT, [])


def test_instruct_prompt_applies_the_style_rules() -> None:
    english_dialect = InstructPrompt(VoiceStyle(dialect=Dialect.TIANJIN), language="en")
    with pytest.raises(ConfigError, match="needs a Chinese instruction"):
        lm_prompt(english_dialect, cosyvoice=2)  # CosyVoice 2 learned dialects in Chinese
    text, _ = lm_prompt(english_dialect, cosyvoice=3)  # CosyVoice 3 has its own sentences
    assert text == "You are a helpful assistant. 请用天津话表达。" + END_OF_PROMPT
    with pytest.raises(ConfigError, match="unknown instruction language"):
        InstructPrompt(VoiceStyle(emotion=Emotion.SAD), language="de")  # type: ignore[arg-type]


@pytest.mark.parametrize("style", [VoiceStyle(), VoiceStyle(rate=SpeakingRate.NORMAL)])
def test_an_instruct_prompt_needs_an_instruction(style: VoiceStyle) -> None:
    with pytest.raises(ConfigError, match="asks for nothing"):
        InstructPrompt(style, make_voice())


def test_prompts_refuse_the_wrong_parts() -> None:
    with pytest.raises(ConfigError, match="needs a VoiceProfile"):
        ZeroShotPrompt("voice.safetensors")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a VoiceStyle"):
        InstructPrompt("happy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="voice must be a VoiceProfile"):
        InstructPrompt(VoiceStyle(emotion=Emotion.SAD), "voice.safetensors")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a voice prompt"):
        lm_prompt("用四川话说这句话")  # type: ignore[arg-type]
