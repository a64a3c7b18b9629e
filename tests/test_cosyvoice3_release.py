"""A Fun-CosyVoice3-0.5B-2512 folder in the official layout (the CosyVoice 3 fixtures'
weights, a tiny tokenizer): recognised from its yaml, loaded unchanged, speaking."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from minmo_core.common.release_config import release_generation
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.voice.styles import Emotion, VoiceStyle
from minmo_core.voice.token2wav_causal import CausalToken2Wav
from minmo_core.voice.tts import SpeechSynthesizer
from minmo_core.voice.voice_lm import load_voice_lm, special_tokens
from tests.tiny_cosyvoice import write_tiny_release, write_tiny_release_v3


@pytest.fixture(scope="module")
def v3_dir(tmp_path_factory, fixtures_dir: Path) -> Path:
    return write_tiny_release_v3(tmp_path_factory.mktemp("cosyvoice3"), fixtures_dir)


@pytest.fixture(scope="module")
def synth(v3_dir: Path) -> SpeechSynthesizer:
    return SpeechSynthesizer.from_folder(v3_dir, allow_unpinned=True, greedy=True, seed=0)


def test_the_folder_is_recognised_from_its_yaml_and_loads_every_part(synth, v3_dir) -> None:
    assert release_generation(v3_dir) == 3
    assert synth.cosyvoice == 3 and isinstance(synth.t2w, CausalToken2Wav)
    lm = synth.tokens.lm
    assert lm.cfg.speech_token_size == 96 and lm.cfg.n_outputs == 296  # from llm.pt's head
    assert synth.t2w.flow.cfg.static_chunk_size == 50  # "<chunk_size> * <token_mel_ratio>"
    assert synth.t2w.vocoder.cfg.f0_look_right == 3  # from hift.pt's first F0 conv
    tokenizer = synth.tokens.tokenizer
    assert lm.cfg.endofprompt_text_id == tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    assert tokenizer.convert_tokens_to_ids("[ǜ]") > tokenizer.convert_tokens_to_ids("[AA]")
    assert len(special_tokens(3)) == len(special_tokens(2)) + 1 + 84 + 176


def test_it_speaks_plain_and_styled_text(synth) -> None:
    for style in (None, VoiceStyle(emotion=Emotion.HAPPY)):
        chunks = list(synth.speak("hello.", style=style, wording="en"))
        audio = torch.cat(chunks)
        assert audio.dtype == torch.float32 and audio.numel() > 0 and torch.isfinite(audio).all()
        assert audio.numel() % 960 == 0  # 2 mel frames x 480 samples per speech token


def test_the_rl_tuned_lm_is_chosen_by_file(v3_dir: Path) -> None:
    lm, _ = load_voice_lm(v3_dir, allow_unpinned=True, llm_file="llm.rl.pt")
    assert lm.cfg.cosyvoice == 3
    with pytest.raises(CheckpointError, match=r"has no voice LM 'llm\.bad\.pt'"):
        load_voice_lm(v3_dir, allow_unpinned=True, llm_file="llm.bad.pt")


def test_a_cloned_cosyvoice_2_voice_is_refused_by_name(synth) -> None:
    from tests.test_voice_prompt import make_voice

    with pytest.raises(ConfigError, match="cloned for CosyVoice 2"):
        next(synth.speak("hello.", voice=make_voice()))


def test_mixed_files_and_two_yamls_are_refused(tmp_path: Path, v3_dir: Path, fixtures_dir):
    v2 = write_tiny_release(tmp_path / "v2", fixtures_dir)
    assert release_generation(v2) == 2
    mixed = tmp_path / "mixed"
    shutil.copytree(v3_dir, mixed)
    shutil.copy(v2 / "llm.pt", mixed / "llm.pt")
    with pytest.raises(CheckpointError, match=r"is a CosyVoice 2 voice LM, but .* CosyVoice 3"):
        load_voice_lm(mixed, allow_unpinned=True)
    shutil.copy(v2 / "cosyvoice2.yaml", mixed / "cosyvoice2.yaml")
    with pytest.raises(CheckpointError, match=r"holds both cosyvoice2\.yaml and cosyvoice3\.yaml"):
        release_generation(mixed)
