"""The training stages on tiny models: what each trains and leaves alone, the adapters it
writes (loaded by the engine's aligned mode for a spoken turn), resuming a killed run to the
same weights, and two processes (torchrun, gloo) taking the same steps as one."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from minmo_core.common.audio import read_audio
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.adapters import load_adapters
from minmo_core.train.config import ModelPaths, StageConfig, TrainingRun, read_run
from minmo_core.train.data import global_batch, rank_share
from minmo_core.train.stages import make_trainer, run_stage
from minmo_core.train.trainer import Trainer, learning_rate

REPO = Path(__file__).resolve().parents[1]
WORDS = ("one two", "three", "four five six", "seven", "eight nine", "ten")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """Six one-second clips of a real recording with made-up transcripts (recognition)."""
    folder = tmp_path_factory.mktemp("corpus")
    audio = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)
    (folder / "clips").mkdir()
    lines = []
    for i, words in enumerate(WORDS):
        sf.write(folder / f"clips/{i}.wav", audio[i * 8000 : i * 8000 + 16000], 16000)
        lines.append(
            json.dumps({"audio": f"clips/{i}.wav", "duration": 1.0, "transcript": words,
                        "language": "en", "task": "asr",
                        "instruction": "Repeat exactly what was said.", "response": words})
        )  # fmt: skip
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def make_run(stage: str, corpus: Path, qwen_dir, tiny_sensevoice_dir, out: Path, **kw):
    adapters = kw.pop("adapters", None)
    config = StageConfig(
        stage, str(corpus), kw.pop("eval", None), steps=kw.pop("steps", 6), batch_size=4,
        micro_batch=2, lr=kw.pop("lr", 3e-3), warmup_steps=2, save_every=2, **kw,
    )  # fmt: skip
    models = ModelPaths(
        str(qwen_dir), str(tiny_sensevoice_dir), adapters=adapters, allow_unpinned=True,
        device="cpu",
    )  # fmt: skip
    return TrainingRun(config, models, str(out))


def quiet(*_):
    pass


def trainer_for(run: TrainingRun) -> Trainer:
    return make_trainer(run, log=quiet)


def test_data_order_is_a_function_of_the_step_and_splits_over_processes() -> None:
    first = global_batch(10, 4, seed=3, step=0)
    assert first == global_batch(10, 4, seed=3, step=0)
    assert first != global_batch(10, 4, seed=4, step=0)
    # steps 0..4 cover two whole epochs: every example twice, each epoch a permutation
    seen = [i for step in range(5) for i in global_batch(10, 4, 3, step)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]
    # two processes' shares of a global batch are disjoint and make the whole batch
    batch = global_batch(10, 8, 0, 1)
    shares = [rank_share(batch, 2, rank, 2) for rank in range(2)]
    flat = sorted(i for share in shares for micro in share for i in micro)
    assert flat == sorted(batch) and len(shares[0]) == len(shares[1]) == 2


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    rates = [learning_rate(s, 1.0, 4, 20) for s in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(rates[3:]))
    assert learning_rate(20, 1.0, 4, 20) == pytest.approx(0.1)


def test_stage_config_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown stage 'align'"):
        StageConfig("align", "m.jsonl")
    with pytest.raises(ConfigError, match="unknown part 'decoder'"):
        StageConfig("sft", "m.jsonl", trains=("decoder",))
    with pytest.raises(ConfigError, match="not a multiple of micro_batch 3"):
        StageConfig("sft", "m.jsonl", batch_size=16, micro_batch=3)
    with pytest.raises(ConfigError, match="over 3 processes"):
        StageConfig("sft", "m.jsonl", batch_size=8, micro_batch=2).accumulation(3)
    toml = tmp_path / "stage.toml"
    toml.write_text('out = "run"\n[stage]\nstage = "duplex"\ntrain = "d.jsonl"\nbogus = 1\n')
    with pytest.raises(ConfigError, match=r"stage\.toml \[stage\]: unknown key 'bogus'"):
        read_run(toml)
    toml.write_text(
        'out = "run"\n[stage]\nstage = "pre-align"\ntrain = "a.jsonl"\nsteps = 3\n'
        '[models]\nllm = "llm"\nsensevoice = "sv"\n'
    )
    run = read_run(toml, steps=7)
    assert run.stage.steps == 7 and run.stage.parts == ("input_projector",)
    assert run.stage.train == str(tmp_path / "a.jsonl") and run.out == str(tmp_path / "run")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[stage]\nstage = "sft"\ntrain = "a.jsonl"\n',
         r'\[models\]: missing llm, sensevoice \(add llm = "..." and sensevoice = "..."\)'),
        ('[stage]\nstage = "sft"\n[models]\nllm = "l"\nsensevoice = "s"\n',
         r'\[stage\]: missing train \(add train = "..."\)'),
        ('[stage]\nstage = "sft"\ntrain = "a"\nsteps = "ten"\n[models]\nllm = "l"\n'
         'sensevoice = "s"\n', r"\[stage\]: steps must be a whole number, not 'ten'"),
        ('[stage]\nstage = "sft"\ntrain = "a"\nsteps = true\n[models]\nllm = "l"\n'
         'sensevoice = "s"\n', r"\[stage\]: steps must be a whole number, not True"),
        ('[stage]\nstage = "sft"\ntrain = "a"\nfsdp = "yes"\n[models]\nllm = "l"\n'
         'sensevoice = "s"\n', r"\[stage\]: fsdp must be true or false, not 'yes'"),
        ('[stage]\nstage = "sft"\ntrain = "a"\n[models]\nllm = 3\nsensevoice = "s"\n',
         r"\[models\]: llm must be a string, not 3"),
    ],
)  # fmt: skip
def test_a_config_missing_a_key_or_with_a_wrong_type_names_it(tmp_path, text, message) -> None:
    toml = tmp_path / "stage.toml"
    toml.write_text('out = "run"\n' + text)
    with pytest.raises(ConfigError, match=message):
        read_run(toml)


def test_pre_align_trains_only_the_input_projector_and_writes_only_it(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    run = make_run("pre-align", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "run")
    trainer = trainer_for(run)
    models = trainer.models
    before = {k: v.detach().clone() for k, v in models.sensevoice.encoder.state_dict().items()}
    llm_before = {k: v.detach().clone() for k, v in models.llm.model.state_dict().items()}
    proj_before = [p.detach().clone() for p in models.adapters.input_projector.parameters()]
    result = trainer.fit()
    assert result.step == 6 and len(result.losses) == 6
    moved = [
        not torch.equal(a, b)
        for a, b in zip(proj_before, models.adapters.input_projector.parameters(), strict=True)
    ]
    assert all(moved)
    for k, v in models.sensevoice.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in models.llm.model.state_dict().items():
        assert torch.equal(v, llm_before[k]), k
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 7))


def test_stages_chain_and_the_adapters_run_a_spoken_turn_in_aligned_mode(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, sensevoice, voice, clip, tmp_path: Path
) -> None:
    from minmo_core.engine.events import AssistantAudio, EngineError, FinalTranscript, TurnEnded
    from minmo_core.engine.turns import SilencePolicy
    from tests.test_aligned import aligned_engine
    from tests.test_engine import TIMEOUT
    from tests.test_engine_speech import Mic

    pre = run_stage(make_run("pre-align", corpus, qwen_dir, tiny_sensevoice_dir,
                             tmp_path / "pre"), parallel=None)  # fmt: skip
    first = load_adapters(pre.adapters)
    assert first.output_projector is None and first.duplex is None and first.lora is None
    assert first.training["trained"] == ["input_projector"]
    assert set(first.training["base_models"]) == {"llm", "sensevoice"}
    assert "model.safetensors" in first.training["base_models"]["llm"]
    # full-align from there: the encoder moves and travels with the adapters
    full = run_stage(make_run("full-align", corpus, qwen_dir, tiny_sensevoice_dir,
                              tmp_path / "full", adapters=str(pre.adapters)))  # fmt: skip
    # sft from there: LoRA on the LLM (trained from B = 0: the LoRA's output moves)
    sft = run_stage(make_run("sft", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "sft",
                             adapters=str(full.adapters), steps=8, lr=2e-2))  # fmt: skip
    assert sft.losses[-1] < sft.losses[0]
    lora = load_file(str(sft.adapters / "lora" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in lora.items())
    last = load_adapters(sft.adapters)
    assert last.training["trained"] == ["encoder", "input_projector", "lora"]
    assert [s["stage"] for s in last.training["stages"]] == ["pre-align", "full-align", "sft"]
    assert last.voice_encoder is not None and (sft.adapters / "lora").is_dir()
    trained_encoder = load_file(str(sft.adapters / "voice_encoder.safetensors"))
    assert not torch.equal(
        trained_encoder["encoder.encoders0.0.self_attn.linear_q_k_v.weight"],
        sensevoice.encoder.state_dict()["encoder.encoders0.0.self_attn.linear_q_k_v.weight"],
    )
    # the engine loads them: the encoder's trained weights, the LoRA, a spoken turn
    engine = aligned_engine(qwen_dir, voice, sensevoice, sft.adapters, SilencePolicy(0.5),
                            llm={"max_new_tokens": 4})  # fmt: skip
    try:
        assert engine.mode == "aligned" and engine.llm.adapter is not None
        for key, value in engine.sensevoice.encoder.state_dict().items():
            assert torch.equal(value, trained_encoder[key]), key
        mic = Mic(engine)
        mic.audio(clip[:16000])
        mic.silence(0.6)
        assert engine.wait_idle(TIMEOUT)
    finally:
        engine.shutdown()
    rec = engine.recorder
    assert not rec.of(EngineError), rec.of(EngineError)
    assert rec.of(FinalTranscript) and rec.of(TurnEnded)
    assert rec.of(AssistantAudio)  # without an output projector the reply's text speaks


def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    whole = trainer_for(make_run("full-align", corpus, qwen_dir, tiny_sensevoice_dir,
                                 tmp_path / "whole", steps=5))  # fmt: skip
    whole_result = whole.fit()
    run = make_run("full-align", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "killed",
                   steps=5)  # fmt: skip
    killed = trainer_for(run)
    assert killed.fit(stop_after=3).step == 3  # "killed" after step 3; the last save was 2
    again = trainer_for(run)  # a new process: fresh models, resumes at step 2
    result = again.fit()
    assert again.step == 5 and len(result.losses) == 3
    assert result.losses == whole_result.losses[2:]
    for name, param in whole.params.items():
        assert torch.equal(param, again.params[name]), name
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]  # fmt: skip
    assert steps == sorted(steps) and steps[:5] == [1, 2, 3, 4, 5]
    # a different run in the same folder is refused rather than mixed in
    other = replace(run, stage=replace(run.stage, lr=1e-3, steps=8))
    with pytest.raises(ConfigError, match=r"different run \(lr differ"):
        trainer_for(other).fit()


def test_bfloat16_autocast_trains_on_the_cpu(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    run = make_run("sft", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "bf16", steps=2,
                   precision="bfloat16")  # fmt: skip
    trainer = trainer_for(run)
    result = trainer.fit()
    assert all(np.isfinite(result.losses))
    assert all(p.dtype == torch.float32 for p in trainer.params.values())  # master weights


def test_tensorboard_scalars_or_a_named_missing_package(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    """tensorboard = true writes the log's scalars as TensorBoard events; without the
    package the run stops at the first log line with the install command."""
    import importlib.util

    run = make_run("pre-align", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "tb",
                   steps=2, tensorboard=True)  # fmt: skip
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            trainer_for(run).fit()
        return
    trainer_for(run).fit()
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("stage", "fsdp"), [("full-align", False), ("sft", True)], ids=["ddp", "fsdp-lora"]
)
def test_two_processes_take_the_same_steps_as_one(
    stage: str, fsdp: bool, corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    """torchrun with 2 CPU processes (gloo) and the same global batch: the same loss curve
    and weights as 1 process, within float tolerance (the gradient sums differ in order).
    With ``fsdp`` the LLM's decoder layers are sharded over the two (the LoRA trained in
    them stays whole): the same again."""
    config = tmp_path / "stage.toml"
    config.write_text(
        f'out = "{tmp_path / "two"}"\n[stage]\nstage = "{stage}"\ntrain = "{corpus}"\n'
        "steps = 4\nbatch_size = 4\nmicro_batch = 1\nlr = 3e-3\nwarmup_steps = 2\n"
        f"fsdp = {str(fsdp).lower()}\n"
        f'[models]\nllm = "{qwen_dir}"\nsensevoice = "{tiny_sensevoice_dir}"\n'
        'allow_unpinned = true\ndevice = "cpu"\n'
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(_free_port()), "-m", "app.cli", "train", "run", str(config)),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("LLM layers sharded over 2 processes" in done.stderr) == fsdp
    one = run_stage(replace(read_run(config), out=str(tmp_path / "one")))
    two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    two_losses = [r["loss"] for r in two if "loss" in r]
    np.testing.assert_allclose(two_losses, one.losses, rtol=1e-5)
    files = sorted(p.relative_to(tmp_path / "one") for p in
                   (tmp_path / "one" / "adapters").rglob("*.safetensors"))  # fmt: skip
    assert any("lora" in str(f) for f in files) == (stage == "sft")
    for file in files:
        a, b = load_file(str(tmp_path / "one" / file)), load_file(str(tmp_path / "two" / file))
        for key in a:  # Adam: 0.2 % of a step
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-5)


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from minmo_core.train import synth

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng renders the episodes: sudo apt-get install espeak-ng")
    folder = tmp_path_factory.mktemp("episodes")
    train_voices, held_voices = synth.voice_pool(0)
    synth.write_dialogues(folder, "train", 8, train_voices, seed=1)
    synth.write_dialogues(folder, "heldout", 8, held_voices, seed=2)
    return folder


def test_the_duplex_stage_trains_only_the_predictor_and_scores_held_out_episodes(
    episodes_dir: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    from minmo_core.train import duplex

    run = make_run("duplex", episodes_dir / "train.jsonl", qwen_dir, tiny_sensevoice_dir,
                   tmp_path / "duplex", eval=str(episodes_dir / "heldout.jsonl"),
                   steps=4, lr=1e-3)  # fmt: skip
    trainer = trainer_for(run)
    models, task = trainer.models, trainer.task
    # every decision point reads the hidden states of the audio up to it, as live
    point = task.train.points[0]
    segment = task.train.segments[point.segment]
    clip = task.train.audio[segment.example][: int(point.t * 16000)]
    with torch.no_grad():
        from minmo_core.engine.turns import duplex_hidden

        live = duplex_hidden(models.sensevoice, models.llm, models.adapters, clip)
    torch.testing.assert_close(task.train.hidden[0].float(), live.float(), atol=2e-3, rtol=1e-2)
    labels = {p.label for p in task.train.points}
    assert labels == {0, 1, 2}  # listen, speak and stop all occur
    projector = [p.detach().clone() for p in models.adapters.input_projector.parameters()]
    predictor = [p.detach().clone() for p in models.adapters.duplex.parameters()]
    result = trainer.fit()
    for a, b in zip(projector, models.adapters.input_projector.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(predictor, models.adapters.duplex.parameters(), strict=True)
    )
    assert {"speak_f1", "stop_f1", "positive_f1"} <= set(result.metrics)
    assert load_adapters(result.adapters).duplex is not None
    # the rules on the same held-out points: the silence rule takes every finished turn in
    # time (1.5 s or more of silence follows), the barge-in rule stops every interruption
    held = task.heldout
    window_s = run.stage.duplex_window * duplex.frame_seconds(models)
    silence = duplex.rule_decisions(held, lambda p, quiet: quiet >= 0.5)
    scores = duplex.score(held, silence.__getitem__, window_s)
    assert scores["speak"].recall == 1.0 and scores["stop"].recall == 1.0
    assert scores["speak"].fp > 0  # hesitations longer than 0.5 s fool it


def test_a_damaged_checkpoint_is_named_not_loaded(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tmp_path: Path
) -> None:
    run = make_run("pre-align", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "run", steps=4)
    trainer_for(run).fit(stop_after=2)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000002"
    for name, message in (("optimizer.pt", r"optimizer\.pt is damaged"),
                          ("trainable.safetensors", r"trainable\.safetensors")):  # fmt: skip
        file = checkpoint / name
        good = file.read_bytes()
        file.write_bytes(good[: len(good) // 2])
        with pytest.raises(CheckpointError, match=message):
            trainer_for(run).fit()
        file.write_bytes(good)
    assert trainer_for(run).fit().step == 4  # mended, it resumes


def test_the_t2s_layout_is_the_one_generation_feeds(voice) -> None:
    """Teacher-forcing the semantic path's own greedy output through the recorded layout
    gives, in one forward pass, the logits generation saw at every step."""
    from minmo_core.train.t2s import forced_layout
    from minmo_core.voice.speech_tokens import LMPrompt, interleaved_tokens
    from minmo_core.voice.voice_lm import greedy_sampler

    lm = voice.tokens.lm
    torch.manual_seed(0)
    width = lm.sos.shape[-1]
    vectors = [torch.randn(1, width) for _ in range(7)]  # 7 text positions: a block and a half
    query = torch.randn(width)
    seen: list[torch.Tensor] = []

    def sampler(logits, decoded):
        seen.append(logits.clone())
        return greedy_sampler(logits, decoded)

    with torch.no_grad():
        spoken = list(interleaved_tokens(lm, iter(vectors), LMPrompt(query=query), sampler))
        inputs, positions, labels = forced_layout(lm, vectors, query, spoken)
        hidden = lm.body(inputs_embeds=inputs[None]).last_hidden_state[0]
        logits = lm.llm_decoder(hidden[positions]).float()
    assert len(spoken) > 15 and labels[: len(spoken)] == spoken
    assert len(positions) == len(seen)
    for row, saw in zip(logits, seen, strict=True):
        allowed = torch.isfinite(saw)
        torch.testing.assert_close(row[allowed], saw[allowed], atol=1e-4, rtol=1e-4)


def test_the_t2s_stage_trains_the_output_projector_against_the_composed_path(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tiny_release_dir, tmp_path: Path
) -> None:
    run = make_run("t2s", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "t2s",
                   eval=str(corpus), steps=8, lr=1e-2)  # fmt: skip
    run = replace(run, models=replace(run.models, cosyvoice=str(tiny_release_dir)))
    trainer = trainer_for(run)
    models = trainer.models
    lm_before = {k: v.detach().clone() for k, v in models.voice.lm.state_dict().items()}
    result = trainer.fit()
    assert result.losses[-1] < result.losses[0]
    # (a random voice LM mostly repeats itself: accuracy is a real measure only with a
    # trained one, so here it is only reported)
    assert 0.0 <= result.metrics["token_accuracy"] <= 1.0
    for key, value in models.voice.lm.state_dict().items():
        assert torch.equal(value, lm_before[key]), key
    adapters = load_adapters(result.adapters)
    assert adapters.output_projector is not None
    assert adapters.training["trained"] == ["output_projector"]


def test_the_s2s_stage_trains_the_output_projector_and_voice_lm_from_speech(
    corpus: Path, qwen_dir, tiny_sensevoice_dir, tiny_release_dir, tmp_path: Path
) -> None:
    """Spoken question -> spoken answer: the semantic path read from the LLM's states over
    the speech learns the composed path's tokens; by default the voice LM is fine-tuned with
    the output projector and nothing upstream moves. Training the input projector too adds
    the response's text loss (every scored position counted)."""
    from minmo_core.train.s2s import SpeechToSpeechTask
    from minmo_core.train.s2t import count_targets

    run = make_run("s2s", corpus, qwen_dir, tiny_sensevoice_dir, tmp_path / "s2s",
                   eval=str(corpus), steps=8, lr=3e-3)  # fmt: skip
    run = replace(run, models=replace(run.models, cosyvoice=str(tiny_release_dir)))
    trainer = trainer_for(run)
    models = trainer.models
    task = trainer.task
    assert isinstance(task, SpeechToSpeechTask) and not task.with_text
    lm_before = {k: v.detach().clone() for k, v in models.voice.lm.state_dict().items()}
    projector_before = {
        k: v.detach().clone() for k, v in models.adapters.input_projector.state_dict().items()
    }
    with torch.no_grad():
        before = float(task.loss_sum(task.examples))
    result = trainer.fit()
    with torch.no_grad():
        assert float(task.loss_sum(task.examples)) < 0.8 * before  # over all its examples
    assert 0.0 <= result.metrics["token_accuracy"] <= 1.0
    lm_after = models.voice.lm.state_dict()
    assert any(not torch.equal(lm_after[k], v) for k, v in lm_before.items())  # fine-tuned
    for key, value in models.adapters.input_projector.state_dict().items():
        assert torch.equal(value, projector_before[key]), key
    adapters = load_adapters(result.adapters)
    assert adapters.output_projector is not None and adapters.voice_lm is not None
    assert adapters.training["trained"] == ["output_projector", "voice_lm"]
    # the tied text head is stored once and restored on loading
    from minmo_core.voice.voice_lm import load_voice_lm

    fresh, _ = load_voice_lm(tiny_release_dir, "cpu", torch.float32, allow_unpinned=True)
    adapters.load_tuned_weights(None, fresh)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, lm_after[key]), key

    # with an upstream part the text loss joins, and the count covers its tokens
    joint = replace(run, stage=replace(run.stage, trains=("input_projector", "output_projector")),
                    out=str(tmp_path / "joint"))  # fmt: skip
    task2 = trainer_for(joint).task
    assert task2.with_text
    example = task2.examples[0]
    n_text = count_targets(task2.models.llm, example)  # the response's tokens and the end
    assert task2.count(example) == task.count(task.examples[0]) + n_text
