"""``minmo train demo``: the training pipeline proven at small scale on a CPU.

Every number comes from held-out data that training never saw: utterances and dialogue
episodes spoken by espeak-ng voices (accent-variant pairs) kept out of training.

* Models. The frozen LLM is the real SmolLM2-135M-Instruct (``app.real_models``). The speech
  models are stand-ins (``app.demo_models``), written in the real ones' folder layouts so
  every stage loads them like the real ones: a small SenseVoice-shaped encoder CTC-pretrained
  on the training clips, and a small voice LM pretrained to speak each reply's espeak-ng
  phonemes as its speech tokens. Neither saw a held-out voice.
* Speech to text: pre-align, full-align and sft in turn, each starting from the last one's
  adapters. Reported per stage: recognition WER and answer accuracy on held-out voices, before
  (the adapters it starts from; fresh ones for pre-align) and after.
* Duplex: the predictor on the LLM's hidden states through the trained input projector;
  turn-taking F1 at K = 10 frames on held-out episodes, untrained and trained, beside the
  silence rule and Smart Turn on the same decision points.
* t2s: the output projector learns the composed path's speech tokens (the voice LM reading
  the reply's text) from the LLM's semantic vectors; teacher-forced token accuracy on the
  held-out utterances' replies, before and after.
* Finally the trained adapters load into the engine's aligned mode, which hears a held-out
  spoken question and answers it aloud through the output projector.

The table goes to stdout and into docs/TRAINING.md between its demo markers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from minmo_core.errors import MissingDependencyError
from minmo_core.train.manifest import Example

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "TRAINING.md"
MARKERS = ("<!-- demo-table:start -->", "<!-- demo-table:end -->")
SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in a few words."


@dataclass(frozen=True)
class DemoSize:
    utterances: int  # training utterances
    heldout: int  # held-out utterances
    episodes: int  # training dialogue episodes
    heldout_episodes: int
    steps: dict[str, int]  # optimizer steps per stage, and of the stand-ins' pretraining
    batch_size: int = 16


FULL = DemoSize(1200, 100, 320, 80,
                {"encoder": 500, "voice": 300, "pre-align": 200, "full-align": 150, "sft": 150,
                 "duplex": 600, "t2s": 300})  # fmt: skip
QUICK = DemoSize(24, 8, 8, 8, {"encoder": 150, "voice": 2, "pre-align": 2, "full-align": 2,
                               "sft": 2, "duplex": 2, "t2s": 2}, 4)  # fmt: skip
# the demo's sft also trains the input projector (the paper says only that the LLM is updated
# through LoRA): with a small speech path still mis-hearing words, a frozen projector would
# leave the LoRA little to learn from held-out answers
TRAINS = {"sft": ("input_projector", "lora")}
LEARNING_RATES = {"pre-align": 1e-3, "full-align": 5e-4, "sft": 5e-4, "duplex": 1e-3,
                  "t2s": 2e-3}  # fmt: skip


@dataclass
class Row:
    stage: str
    metric: str
    before: float | None
    after: float
    note: str = ""
    untrained: float | None = None  # the metric before any stage trained anything


def make_data(folder: Path, size: DemoSize, seed: int = 0) -> dict[str, Path]:
    from minmo_core.train import synth

    train_voices, held_voices = synth.voice_pool(seed)
    rng = np.random.default_rng(seed)
    held_rng = np.random.default_rng(seed + 1000)
    return {
        "train": synth.write_utterances(folder, "train", synth.command_items(rng, size.utterances),
                                        train_voices, seed + 1),
        "heldout": synth.write_utterances(folder, "heldout",
                                          synth.command_items(held_rng, size.heldout),
                                          held_voices, seed + 2),
        "dialogues": synth.write_dialogues(folder, "dialogues", size.episodes, train_voices,
                                           seed + 3),
        "heldout_dialogues": synth.write_dialogues(folder, "heldout_dialogues",
                                                   size.heldout_episodes, held_voices, seed + 4),
    }  # fmt: skip


def run_demo(out: Path, size: DemoSize = FULL, say: Callable[[str], None] = print) -> list[Row]:
    from app.demo_models import write_demo_encoder, write_demo_voice
    from app.real_models import FETCH, smollm2_folder
    from minmo_core.common.audio import read_audio
    from minmo_core.train import duplex, s2t
    from minmo_core.train.config import ModelPaths, StageConfig, TrainingRun
    from minmo_core.train.manifest import read_manifest
    from minmo_core.train.metrics import answer_accuracy
    from minmo_core.train.stages import make_trainer

    llm = smollm2_folder()
    if llm is None:
        raise MissingDependencyError(f"the demo's LLM is SmolLM2-135M-Instruct: run `{FETCH}`")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say("writing the synthetic data (espeak-ng)")
    data = make_data(out / "data", size)
    train = list(read_manifest(data["train"]))
    say("pretraining the stand-in voice encoder (CTC)")
    clips = [read_audio(e.audio, 16000) for e in train]
    encoder = write_demo_encoder(out / "encoder", clips, [e.transcript for e in train],
                                 size.steps["encoder"], say=say)  # fmt: skip
    rows: list[Row] = []
    adapters = None

    def stage_run(stage: str, train: Path, heldout: Path, cosyvoice: Path | None = None):
        config = StageConfig(
            stage, str(train), str(heldout), steps=size.steps[stage],
            batch_size=size.batch_size, micro_batch=size.batch_size, lr=LEARNING_RATES[stage],
            warmup_steps=max(1, size.steps[stage] // 10), save_every=50,
            system_prompt=SYSTEM_PROMPT, trains=TRAINS.get(stage, ()),
        )  # fmt: skip
        paths = ModelPaths(str(llm), str(encoder), None if cosyvoice is None else str(cosyvoice),
                           adapters, allow_unpinned=True)  # fmt: skip
        trainer = make_trainer(TrainingRun(config, paths, str(out / stage)))
        say(f"{stage}: held-out metrics before training")
        before = trainer.evaluate()
        tick = time.perf_counter()
        result = trainer.fit()
        note = f"{result.step} steps, {(time.perf_counter() - tick) / 60:.1f} min"
        return trainer, before, result, note

    untrained: dict[str, float] = {}
    questions = [e for e in read_manifest(data["heldout"]) if e.task == "qa"]
    for stage in ("pre-align", "full-align", "sft"):
        trainer, before, result, note = stage_run(stage, data["train"], data["heldout"])
        untrained = untrained or before
        for metric in ("wer", "qa_accuracy"):
            rows.append(Row(stage, metric, before.get(metric), result.metrics[metric], note,
                            untrained.get(metric)))  # fmt: skip
        adapters = str(result.adapters)
    # where the answers go wrong: the same questions by kind, heard and read
    for part in trainer.stage.parts:
        trainer.models.modules()[part].eval()
    heard = _by_kind(questions, [s2t.respond(trainer.models, e) for e in questions])
    rows[-1].note += "; " + _kinds_note(heard)
    del trainer
    say("the LLM reading the held-out questions' transcripts (no speech)")
    read = _read_replies(llm, questions)
    rows.append(Row("reference", "qa_accuracy (the LLM reads the transcript)", None,
                    answer_accuracy([e.response for e in questions], read),
                    _kinds_note(_by_kind(questions, read))))  # fmt: skip
    # the spoken turn asks a question the LLM answers right when it reads it, so that a wrong
    # reply is the speech path's
    right = [e for e, r in zip(questions, read, strict=True) if answer_accuracy([e.response], [r])]
    # the duplex predictor, over the trained speech path
    trainer, before, result, note = stage_run("duplex", data["dialogues"],
                                              data["heldout_dialogues"])  # fmt: skip
    held = trainer.task.heldout
    rows.append(Row("duplex", "positive F1@10 (predictor)", before["positive_f1"],
                    result.metrics["positive_f1"], note, before["positive_f1"]))  # fmt: skip
    for name in ("speak", "stop"):
        rows.append(Row("duplex", f"{name} F1@10 (predictor)", before[f"{name}_f1"],
                        result.metrics[f"{name}_f1"], "", before[f"{name}_f1"]))  # fmt: skip
    window_s = trainer.run.stage.duplex_window * duplex.frame_seconds(trainer.models)
    rules = _rule_scores(held, window_s)
    for name, scores in rules.items():
        note = f"speak {scores['speak'].f1:.2f}, stop {scores['stop'].f1:.2f}"
        rows.append(Row("duplex", f"positive F1@10 ({name})", None, scores["positive"].f1, note))
    adapters = str(result.adapters)
    # the output projector, against the composed path of a voice LM that speaks its text
    say("pretraining the stand-in voice LM (espeak-ng phonemes as speech tokens)")
    replies = [e.response for e in train if e.response]
    voice = write_demo_voice(out / "voice", llm, replies, size.steps["voice"], say=say)
    _, before, result, note = stage_run("t2s", data["train"], data["heldout"], voice)
    rows.append(Row("t2s", "speech-token accuracy vs composed", before["token_accuracy"],
                    result.metrics["token_accuracy"], note, before["token_accuracy"]))  # fmt: skip
    reply = _spoken_turn(llm, encoder, voice, Path(result.adapters),
                         (right or questions)[0], bool(right))  # fmt: skip
    total = (time.perf_counter() - started) / 60
    table = render_table(rows, reply, total, size)
    say(table)
    (out / "demo.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    if size is FULL:
        write_table(DOC, table)
    return rows


def _rule_scores(held, window_s: float) -> dict:
    from minmo_core.engine.turns import SmartTurnModel
    from minmo_core.train import duplex

    found = {}
    for ms in (500, 800):
        decisions = duplex.rule_decisions(held, lambda p, s, t=ms / 1000: s >= t)
        found[f"silence {ms} ms"] = duplex.score(held, decisions.__getitem__, window_s)
    decisions = duplex.smart_turn_rule(held, 16000, SmartTurnModel())
    found["Smart Turn v3.2"] = duplex.score(held, decisions.__getitem__, window_s)
    return found


def _kind(example: Example) -> str:
    """The demo's two kinds of question: sums and differences, or one-word facts."""
    return "sums" if re.search(r"\b(plus|minus)\b", example.transcript) else "facts"


def _by_kind(questions: list[Example], replies: list[str]) -> dict[str, float]:
    from minmo_core.train.metrics import answer_accuracy

    found = {}
    for kind in ("facts", "sums"):
        pairs = [(e.response, r) for e, r in zip(questions, replies, strict=True)
                 if _kind(e) == kind]  # fmt: skip
        if pairs:
            found[kind] = answer_accuracy(*zip(*pairs, strict=True))
    return found


def _kinds_note(accuracy: dict[str, float]) -> str:
    return ", ".join(f"{kind} {value:.2f}" for kind, value in accuracy.items())


def _read_replies(llm: Path, questions: list[Example]) -> list[str]:
    """The frozen LLM's greedy replies to the questions' transcripts, as text: what it can
    answer when nothing is misheard (the ceiling of the speech path without new knowledge)."""
    from minmo_core.config import LLMConfig
    from minmo_core.llm.chat import ChatLLM

    config = replace(LLMConfig(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=32,
                     system_prompt=SYSTEM_PROMPT)  # fmt: skip
    chat = ChatLLM(llm, config, device="cpu")
    replies = []
    for example in questions:
        chat.reset_cache()
        replies.append("".join(e.text for e in chat.stream(example.transcript, seed=0)).strip())
    return replies


def _spoken_turn(
    llm: Path, encoder: Path, voice: Path, adapters: Path, example: Example, known: bool
) -> str:
    """The engine in aligned mode with the trained adapters hears a held-out question and
    answers it aloud: the LLM's states drive the voice LM through the output projector. The
    demo has no trained flow or vocoder (random stand-ins), so the audio's length shows that
    the semantic path spoke, not what it sounds like."""
    from app.bench.stack import random_token2wav
    from minmo_core.common.audio import read_audio
    from minmo_core.config import LLMConfig
    from minmo_core.engine.engine import ConversationEngine, EngineSettings
    from minmo_core.engine.events import AssistantAudio, AssistantTextDelta, FinalTranscript
    from minmo_core.engine.turns import SilencePolicy
    from minmo_core.llm.adapters import load_adapters
    from minmo_core.llm.chat import ChatLLM
    from minmo_core.understanding.sensevoice import SenseVoice
    from minmo_core.voice.speech_tokens import SpeechTokenGenerator
    from minmo_core.voice.tts import SAMPLE_RATE, SpeechSynthesizer
    from minmo_core.voice.voice_lm import greedy_sampler, load_voice_lm

    events = []
    config = replace(LLMConfig(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=24,
                     system_prompt=SYSTEM_PROMPT)  # fmt: skip
    chat = ChatLLM(llm, config, device="cpu")
    ears = SenseVoice.from_folder(encoder, "cpu", allow_unpinned=True)
    lm, tokenizer = load_voice_lm(voice, "cpu", allow_unpinned=True)
    cpu = torch.device("cpu")
    speech = SpeechSynthesizer(SpeechTokenGenerator(lm, tokenizer, greedy_sampler),
                               random_token2wav("tiny", cpu), seed=0)  # fmt: skip
    engine = ConversationEngine(chat, speech, events.append, EngineSettings(seed=0), ears,
                                SilencePolicy(0.5), load_adapters(adapters)).start()  # fmt: skip
    try:
        engine.send_audio(read_audio(example.audio, 16000))
        engine.wait_idle(300)
    finally:
        engine.shutdown()
    heard = " ".join(e.text for e in events if isinstance(e, FinalTranscript)).strip()
    reply = "".join(e.text for e in events if isinstance(e, AssistantTextDelta)).strip()
    seconds = sum(len(e.audio) for e in events if isinstance(e, AssistantAudio)) / SAMPLE_RATE
    aside = ", which the LLM gives when it reads the question" if known else ""
    return (
        f'"{example.transcript}" (expected answer "{example.response}"{aside}): the engine heard '
        f'"{heard}", replied "{reply}" and spoke {seconds:.1f} s of audio through the output '
        "projector"
    )


def render_table(rows: list[Row], reply: str, minutes: float, size: DemoSize) -> str:
    import platform

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"Run {dt.date.today().isoformat()} on {platform.machine()} CPU "
        f"({torch.get_num_threads()} threads), {minutes:.0f} min in all; "
        f"{size.utterances} training / {size.heldout} held-out utterances, "
        f"{size.episodes} / {size.heldout_episodes} dialogue episodes; held-out voices only.",
        "",
        "| stage | metric (held-out) | untrained | before | after | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.stage} | {r.metric} | {cell(r.untrained)} | {cell(r.before)} | {cell(r.after)} "
        f"| {r.note} |"
        for r in rows
    ]
    lines += ["", f"Spoken turn in aligned mode with the trained adapters: {reply}"]
    return "\n".join(lines)


def write_table(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8")
    start, end = (text.index(m) for m in MARKERS)
    doc.write_text(text[: start + len(MARKERS[0])] + "\n" + table + "\n" + text[end:])


__all__ = ["FULL", "QUICK", "DemoSize", "Row", "make_data", "run_demo"]
