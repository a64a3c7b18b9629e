"""A Fun-CosyVoice3-0.5B-2512 folder in the official layout (the CosyVoice 3 fixtures'
weights, a tiny tokenizer): recognised from its yaml, loaded unchanged, speaking."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minmo_core.common.release_config import release_generation
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.voice.styles import Dialect, Emotion, VoiceStyle, Volume
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
    styles = (
        None,
        VoiceStyle(emotion=Emotion.HAPPY),
        VoiceStyle(dialect=Dialect.HENAN, volume=Volume.LOUD),
    )
    for style in styles:  # an English wording with a dialect: CosyVoice 3 has its own sentences
        chunks = list(synth.speak("hello.", style=style, wording="en"))
        audio = torch.cat(chunks)
        assert audio.dtype == torch.float32 and audio.numel() > 0 and torch.isfinite(audio).all()
        assert audio.numel() % 960 == 0  # 2 mel frames x 480 samples per speech token


def test_the_rl_tuned_lm_is_chosen_by_file(v3_dir: Path) -> None:
    lm, _ = load_voice_lm(v3_dir, allow_unpinned=True, llm_file="llm.rl.pt")
    assert lm.cfg.cosyvoice == 3
    with pytest.raises(CheckpointError, match=r"has no voice LM 'llm\.bad\.pt'"):
        load_voice_lm(v3_dir, allow_unpinned=True, llm_file="llm.bad.pt")


def test_the_stack_loads_the_voice_lm_the_settings_name(
    v3_dir: Path, qwen_dir: Path, tiny_release_dir: Path, tmp_path: Path
) -> None:
    """StackSpec.voice_lm (Settings → Models → Voice LM, --voice-lm) picks CosyVoice 3's
    RL-tuned llm.rl.pt; CosyVoice 2, which has one LM, keeps llm.pt; a missing llm.rl.pt
    says how to fetch it; a name that is neither is refused."""
    from minmo_core.common.checkpoints import load_state_dict
    from minmo_core.engine.stack import StackSpec, load_stack

    folder = tmp_path / "v3"
    shutil.copytree(v3_dir, folder)
    state = load_state_dict(folder / "llm.pt")
    state = {k: v * 2 if k == "llm_decoder.weight" else v for k, v in state.items()}
    torch.save(state, folder / "llm.rl.pt")  # a twin told apart by its decoder

    def decoder(spec: StackSpec) -> torch.Tensor:
        stack = load_stack(spec, voice=True, ears=False)
        return stack.voice.tokens.lm.llm_decoder.weight.detach().float()

    base = StackSpec(device="cpu", llm_dir=qwen_dir, cosyvoice=folder, allow_unpinned=True)
    standard = decoder(base)
    rl = decoder(replace(base, voice_lm="rl"))
    torch.testing.assert_close(rl, 2 * standard)
    two = replace(base, cosyvoice=tiny_release_dir, voice_lm="rl")  # CosyVoice 2: its one LM
    assert load_stack(two, voice=True, ears=False).voice.cosyvoice == 2
    (folder / "llm.rl.pt").unlink()
    with pytest.raises(CheckpointError, match=r"has no llm\.rl\.pt .*--also llm\.rl\.pt"):
        load_stack(replace(base, voice_lm="rl"), voice=True, ears=False)
    with pytest.raises(ConfigError, match="unknown voice LM 'best'"):
        StackSpec(voice_lm="best")


def test_a_cloned_cosyvoice_2_voice_is_refused_by_name(synth) -> None:
    from tests.test_voice_prompt import make_voice

    with pytest.raises(ConfigError, match="cloned for CosyVoice 2"):
        next(synth.speak("hello.", voice=make_voice()))


def test_voices_are_cloned_with_the_v3_tokenizer_and_mel_and_speak(
    synth, v3_dir: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    from minmo_core.common.audio import read_audio
    from minmo_core.voice.mel import prompt_mel
    from minmo_core.voice.voice_clone import VoiceCloner

    cloner = VoiceCloner.from_folder(v3_dir, allow_unpinned=True)
    assert cloner.cosyvoice == 3
    clip = fixtures_dir / "audio" / "cosyvoice_zero_shot_prompt.wav"
    voice = cloner.clone(clip, "希望你以后能够做的比我还好呦。", "Gran")
    assert voice.cosyvoice == 3
    audio24k = torch.from_numpy(read_audio(clip, 24000))
    n = voice.prompt_mel.shape[0]
    assert torch.equal(voice.prompt_mel, prompt_mel(audio24k, fmax=None)[:n])
    assert not torch.allclose(voice.prompt_mel, prompt_mel(audio24k)[:n])  # not CosyVoice 2's
    for style in (None, VoiceStyle(emotion=Emotion.SAD)):  # zero-shot, then instruct + timbre
        audio = torch.cat(list(synth.speak("hello.", style=style, voice=voice)))
        assert audio.numel() > 0 and torch.isfinite(audio).all()
    # the v3 folder clones with its own tokenizer file: without it, it says which is missing
    bare = tmp_path / "v3"
    shutil.copytree(v3_dir, bare)
    (bare / "speech_tokenizer_v3.onnx").unlink()
    shutil.copy(v3_dir / "campplus.onnx", bare / "speech_tokenizer_v2.onnx")
    with pytest.raises(CheckpointError, match=r"has no speech_tokenizer_v3\.onnx"):
        VoiceCloner.from_folder(bare, allow_unpinned=True)


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


def test_a_spoken_turn_from_the_command_line_speaks_through_cosyvoice_3(
    tiny_release_v3_dir: Path,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    import soundfile as sf

    from app.bench.chat_model import write_tiny_qwen
    from app.cli import main
    from tests.test_cli_conversation import stack

    qwen = write_tiny_qwen(tmp_path / "qwen")
    question = fixtures_dir / "audio" / "sensevoice_sample.wav"
    out = tmp_path / "reply.wav"
    argv = ["chat", "--audio", str(question), "-o", str(out)]
    assert main([*argv, *stack(qwen, tiny_release_v3_dir, tiny_sensevoice_dir)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() and "you said: " in printed.err
    audio, rate = sf.read(out)
    assert rate == 24000 and audio.size > 0


def test_switching_the_voice_release_between_turns_keeps_the_conversation(
    qwen_dir: Path, voice, synth: SpeechSynthesizer
) -> None:
    """A turn spoken by CosyVoice 3, then the window reloads with CosyVoice 2 (as it does
    when the pack changes: the conversation carries over) and the next turn speaks."""
    import dataclasses

    from minmo_core.engine.engine import ConversationEngine, EngineSettings
    from minmo_core.engine.events import AssistantAudio, TurnEnded
    from minmo_core.llm.chat import ChatLLM
    from tests.test_engine import GREEDY, TIMEOUT, Recorder

    lm = synth.tokens.lm
    lm.cfg = dataclasses.replace(lm.cfg, max_token_text_ratio=5.0)  # short replies
    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    spoken = []
    turns: list = []
    for release in (synth, voice):
        recorder = Recorder()
        engine = ConversationEngine(llm, release, recorder, EngineSettings(seed=0))
        engine.turns.extend(turns)
        engine.start()
        try:
            turn = engine.send_text("Hello there!")
            assert engine.wait_idle(TIMEOUT)
            (ended,) = recorder.of(TurnEnded, turn)
            assert ended.reply_text.strip() and not ended.interrupted
            spoken.append(sum(a.audio.size for a in recorder.of(AssistantAudio, turn)))
            turns = list(engine.turns)
        finally:
            engine.shutdown()
    assert all(n > 0 for n in spoken)
    assert len(turns) == 2  # the second engine answered with the first turn in memory


def test_aligned_mode_is_refused_with_cosyvoice_3(
    qwen_dir: Path, synth: SpeechSynthesizer, sensevoice, adapters_dir: Path
) -> None:
    from minmo_core.engine.engine import ConversationEngine
    from minmo_core.llm.adapters import load_adapters
    from minmo_core.llm.chat import ChatLLM
    from tests.test_engine import GREEDY, Recorder

    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    with pytest.raises(ConfigError, match="aligned mode speaks through CosyVoice 2"):
        ConversationEngine(
            llm, synth, Recorder(), sensevoice=sensevoice, adapters=load_adapters(adapters_dir)
        )


def test_training_refuses_a_cosyvoice_3_voice(
    qwen_dir: Path, tiny_sensevoice_dir: Path, v3_dir: Path, tmp_path: Path
) -> None:
    """MinMo's voice side (output projector, LoRA of the voice LM) trains against
    CosyVoice 2's voice LM: a CosyVoice 3 folder is named and refused."""
    from minmo_core.train.config import ModelPaths, StageConfig
    from minmo_core.train.models import load_models

    paths = ModelPaths(str(qwen_dir), str(tiny_sensevoice_dir), str(v3_dir),
                       allow_unpinned=True, device="cpu")  # fmt: skip
    stage = StageConfig(stage="t2s", train=str(tmp_path / "train.jsonl"))
    with pytest.raises(ConfigError, match="is a CosyVoice 3 release: MinMo's voice side"):
        load_models(paths, stage)
