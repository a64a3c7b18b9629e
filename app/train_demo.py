"""``minmo train demo``: the training pipeline proven at small scale on a CPU.

Every number comes from held-out data that training never saw: utterances and dialogue
episodes spoken by espeak-ng voices (accent-variant pairs) kept out of training.

* Models. The frozen LLM is the real SmolLM2-135M-Instruct (``app.real_models``); the voice
  encoder is a small SenseVoice-shaped encoder (``DEMO_ENCODER``) with fresh random weights
  and CMVN statistics measured on the training clips, written in SenseVoiceSmall's own folder
  layout so every stage loads it like the real one.
* Speech to text: pre-align, full-align and sft in turn, each starting from the last one's
  adapters. Reported per stage: recognition WER and answer accuracy on held-out voices, before
  (the adapters it starts from; fresh ones for pre-align) and after.
* Duplex: the predictor on the LLM's hidden states through the trained input projector;
  turn-taking F1 at K = 10 frames on held-out episodes, untrained and trained, beside the
  silence rule and Smart Turn on the same decision points.
* Finally the trained adapters load into the engine's aligned mode and answer a held-out
  spoken question.

The table goes to stdout and into docs/TRAINING.md between its demo markers.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from minmo_core.errors import MissingDependencyError

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
    steps: dict[str, int]  # optimizer steps per stage
    batch_size: int = 16


FULL = DemoSize(1200, 100, 320, 80,
                {"pre-align": 300, "full-align": 150, "sft": 150, "duplex": 300})  # fmt: skip
QUICK = DemoSize(24, 8, 8, 8, {"pre-align": 2, "full-align": 2, "sft": 2, "duplex": 2}, 4)
DEMO_ENCODER = {  # SenseVoiceEncoderSmall's layout at a CPU-friendly size
    "output_size": 128, "attention_heads": 4, "linear_units": 512, "num_blocks": 4,
    "tp_blocks": 2, "kernel_size": 11, "sanm_shfit": 0,
}  # fmt: skip
LEARNING_RATES = {"pre-align": 1e-3, "full-align": 5e-4, "sft": 5e-4, "duplex": 1e-3}


@dataclass
class Row:
    stage: str
    metric: str
    before: float | None
    after: float
    note: str = ""


def write_demo_encoder(folder: Path, clips: list[np.ndarray], seed: int = 0) -> Path:
    """A fresh SenseVoice-shaped encoder folder (config.yaml, am.mvn, model.pt, BPE model)."""
    import yaml

    from app.bench.stack import train_vocabulary
    from minmo_core.config import FrontendConfig
    from minmo_core.understanding.frontend import CMVN, Frontend
    from minmo_core.understanding.sensevoice import BPE_MODEL, read_folder_config
    from minmo_core.understanding.voice_encoder import VoiceEncoder

    folder.mkdir(parents=True, exist_ok=True)
    fe = FrontendConfig()
    config = {
        "model": "SenseVoiceSmall", "input_size": fe.lfr_dim, "vocab_size": 256,
        "encoder": "SenseVoiceEncoderSmall", "encoder_conf": DEMO_ENCODER,
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": fe.sample_rate, "window": fe.window, "n_mels": fe.n_mels,
                          "frame_length": 25, "frame_shift": 10, "lfr_m": fe.lfr_m,
                          "lfr_n": fe.lfr_n, "dither": 0.0},
    }  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    raw = Frontend(fe, CMVN.identity(fe.lfr_dim))
    feats = np.concatenate([raw(clip) for clip in clips])  # (N, 560)
    shift = -feats.mean(0)
    scale = 1.0 / np.maximum(feats.std(0), 1e-3)
    (folder / "am.mvn").write_text(_kaldi_cmvn(shift, scale))
    (folder / BPE_MODEL).write_bytes(train_vocabulary(256))
    encoder_cfg, _ = read_folder_config(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VoiceEncoder(encoder_cfg)
    torch.save(encoder.state_dict(), folder / "model.pt")
    return folder


def _kaldi_cmvn(shift: np.ndarray, scale: np.ndarray) -> str:
    def vector(v: np.ndarray) -> str:
        return "[ " + " ".join(f"{x:.6g}" for x in v) + " ]"

    n = shift.size
    return (
        f"<Nnet>\n<Splice> {n} {n}\n[ 0 ]\n<AddShift> {n} {n}\n<LearnRateCoef> 0 "
        f"{vector(shift)}\n<Rescale> {n} {n}\n<LearnRateCoef> 0 {vector(scale)}\n</Nnet>\n"
    )


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
    from app.real_models import FETCH, smollm2_folder
    from minmo_core.common.audio import read_audio
    from minmo_core.train import duplex
    from minmo_core.train.config import ModelPaths, StageConfig, TrainingRun
    from minmo_core.train.manifest import read_manifest
    from minmo_core.train.stages import make_trainer

    llm = smollm2_folder()
    if llm is None:
        raise MissingDependencyError(f"the demo's LLM is SmolLM2-135M-Instruct: run `{FETCH}`")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say("writing the synthetic data (espeak-ng)")
    data = make_data(out / "data", size)
    clips = [read_audio(e.audio, 16000) for e in read_manifest(data["train"])]
    encoder = write_demo_encoder(out / "encoder", clips)
    rows: list[Row] = []
    adapters = None
    for stage in ("pre-align", "full-align", "sft"):
        config = StageConfig(
            stage, str(data["train"]), str(data["heldout"]), steps=size.steps[stage],
            batch_size=size.batch_size, micro_batch=size.batch_size, lr=LEARNING_RATES[stage],
            warmup_steps=max(1, size.steps[stage] // 10), save_every=50,
            system_prompt=SYSTEM_PROMPT,
        )  # fmt: skip
        paths = ModelPaths(str(llm), str(encoder), adapters=adapters, allow_unpinned=True)
        trainer = make_trainer(TrainingRun(config, paths, str(out / stage)))
        say(f"{stage}: held-out metrics before training")
        before = trainer.evaluate()
        tick = time.perf_counter()
        result = trainer.fit()
        minutes = (time.perf_counter() - tick) / 60
        for metric in ("wer", "qa_accuracy"):
            rows.append(Row(stage, metric, before.get(metric), result.metrics[metric],
                            f"{result.step} steps, {minutes:.1f} min"))  # fmt: skip
        adapters = str(result.adapters)
    # the duplex predictor, over the trained speech path
    config = StageConfig(
        "duplex", str(data["dialogues"]), str(data["heldout_dialogues"]),
        steps=size.steps["duplex"], batch_size=size.batch_size, micro_batch=size.batch_size,
        lr=LEARNING_RATES["duplex"], warmup_steps=max(1, size.steps["duplex"] // 10),
        save_every=50, system_prompt=SYSTEM_PROMPT,
    )  # fmt: skip
    paths = ModelPaths(str(llm), str(encoder), adapters=adapters, allow_unpinned=True)
    trainer = make_trainer(TrainingRun(config, paths, str(out / "duplex")))
    before = trainer.evaluate()
    tick = time.perf_counter()
    result = trainer.fit()
    minutes = (time.perf_counter() - tick) / 60
    held = trainer.task.heldout
    note = f"{result.step} steps, {minutes:.1f} min"
    rows.append(Row("duplex", "positive F1@10 (predictor)", before["positive_f1"],
                    result.metrics["positive_f1"], note))  # fmt: skip
    for name in ("speak", "stop"):
        rows.append(Row("duplex", f"{name} F1@10 (predictor)", before[f"{name}_f1"],
                        result.metrics[f"{name}_f1"]))  # fmt: skip
    window_s = config.duplex_window * duplex.frame_seconds(trainer.models)
    rules = _rule_scores(held, window_s)
    for name, scores in rules.items():
        note = f"speak {scores['speak'].f1:.2f}, stop {scores['stop'].f1:.2f}"
        rows.append(Row("duplex", f"positive F1@10 ({name})", None, scores["positive"].f1, note))
    reply = _spoken_turn(llm, encoder, Path(result.adapters), data["heldout"])
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


def _spoken_turn(llm: Path, encoder: Path, adapters: Path, heldout: Path) -> str:
    """The engine in aligned mode with the trained adapters answers a held-out question."""
    from minmo_core.common.audio import read_audio
    from minmo_core.config import LLMConfig
    from minmo_core.engine.engine import ConversationEngine, EngineSettings
    from minmo_core.engine.events import AssistantTextDelta, FinalTranscript
    from minmo_core.engine.turns import SilencePolicy
    from minmo_core.llm.adapters import load_adapters
    from minmo_core.llm.chat import ChatLLM
    from minmo_core.train.manifest import read_manifest
    from minmo_core.understanding.sensevoice import SenseVoice

    example = next(e for e in read_manifest(heldout) if e.task == "qa")
    events = []
    config = replace(LLMConfig(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=24,
                     system_prompt=SYSTEM_PROMPT)  # fmt: skip
    chat = ChatLLM(llm, config, device="cpu")
    ears = SenseVoice.from_folder(encoder, "cpu", allow_unpinned=True)
    engine = ConversationEngine(chat, None, events.append, EngineSettings(seed=0), ears,
                                SilencePolicy(0.5), load_adapters(adapters)).start()  # fmt: skip
    try:
        engine.send_audio(read_audio(example.audio, 16000))
        engine.wait_idle(300)
    finally:
        engine.shutdown()
    heard = any(isinstance(e, FinalTranscript) for e in events)
    reply = "".join(e.text for e in events if isinstance(e, AssistantTextDelta)).strip()
    return f'"{example.transcript}" (answer "{example.response}") -> "{reply}"' + (
        "" if heard else " (no transcript event)"
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
        "| stage | metric (held-out) | before | after | note |",
        "|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {r.stage} | {r.metric} | {cell(r.before)} | {cell(r.after)} | {r.note} |" for r in rows
    ]
    lines += ["", f"Spoken turn in aligned mode with the trained adapters: {reply}"]
    return "\n".join(lines)


def write_table(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8")
    start, end = (text.index(m) for m in MARKERS)
    doc.write_text(text[: start + len(MARKERS[0])] + "\n" + table + "\n" + text[end:])


__all__ = ["FULL", "QUICK", "DemoSize", "Row", "make_data", "run_demo", "write_demo_encoder"]
