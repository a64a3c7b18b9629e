"""Each stage as a ``StageTask`` for the trainer, the adapters folder a stage writes, and
``run_stage``: one call from a ``TrainingRun`` to trained adapters.

The adapters folder holds only what training made: the input projector (always: aligned mode
starts there), the output projector and duplex predictor once a stage has trained them, the
LoRA, and the voice encoder's or voice LM's weights when a stage fine-tuned them. Its
``training`` record lists the stages run so far, each with its configuration, and the
sha256 of every base-model file the adapters were trained against.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from minmo_core.common.releases import cached_sha256
from minmo_core.errors import ConfigError
from minmo_core.llm.adapters import MinMoAdapters, save_adapters
from minmo_core.train import duplex, s2t
from minmo_core.train.config import S2T_STAGES, TrainingRun
from minmo_core.train.manifest import Example, read_manifest
from minmo_core.train.metrics import answer_accuracy, word_error_rate
from minmo_core.train.models import TrainingModels, load_models, lora_folder
from minmo_core.train.s2s import SpeechToSpeechTask
from minmo_core.train.t2s import TextToSpeechTask
from minmo_core.train.trainer import Distributed, Result, Trainer

BASE_FILES = ("*.safetensors", "*.pt", "*.onnx", "config.json", "config.yaml", "*.model")


class SpeechToTextTask:
    """pre-align, full-align and sft: the response's tokens given the speech."""

    def __init__(self, run: TrainingRun, models: TrainingModels) -> None:
        self.models = models
        self.examples = _examples(run.stage.train, ("asr", "qa", "instruction", "s2s"))
        self.heldout = _examples(run.stage.eval, ("asr", "qa", "instruction", "s2s"))
        self.grad_encoder = "encoder" in run.stage.parts
        self._counts: dict[int, int] = {}

    def count(self, example: Example) -> int:
        key = id(example)
        if key not in self._counts:
            self._counts[key] = s2t.count_targets(self.models.llm, example)
        return self._counts[key]

    def loss_sum(self, items: Sequence[Example]) -> torch.Tensor:
        return s2t.loss_sum(self.models, items, self.grad_encoder)

    def evaluate(self) -> dict[str, float]:
        if not self.heldout:
            return {}
        return evaluate_speech_to_text(self.models, self.heldout)


def evaluate_speech_to_text(models: TrainingModels, examples: Sequence[Example]) -> dict:
    """Held-out recognition WER (asr) and answer accuracy (qa), from greedy replies."""
    replies = [s2t.respond(models, e) for e in examples]
    metrics: dict[str, float] = {}
    asr = [(e.response or e.transcript, r) for e, r in zip(examples, replies, strict=True)
           if e.task == "asr"]  # fmt: skip
    if asr:
        metrics["wer"] = word_error_rate(*zip(*asr, strict=True))
    qa = [(e.response, r) for e, r in zip(examples, replies, strict=True) if e.task == "qa"]
    if qa:
        metrics["qa_accuracy"] = answer_accuracy(*zip(*qa, strict=True))
    return metrics


class DuplexTask:
    """The full-duplex predictor over labelled episodes' decision points."""

    def __init__(self, run: TrainingRun, models: TrainingModels) -> None:
        stage = run.stage
        self.models = models
        self.window = stage.duplex_window
        train = _examples(stage.train, ("duplex",))
        self.train = duplex.cut_episodes(models, train, self.window, stage.duplex_hop_s, True)
        self.examples = list(range(len(self.train)))
        heldout = _examples(stage.eval, ("duplex",))
        self.heldout = (
            duplex.cut_episodes(models, heldout, self.window, stage.duplex_hop_s, False)
            if heldout
            else None
        )

    def count(self, item: int) -> int:
        return 1

    def loss_sum(self, items: Sequence[int]) -> torch.Tensor:
        return duplex.loss_sum(self.models, self.train, items)

    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        window_s = self.window * duplex.frame_seconds(self.models)
        decisions = duplex.predictor_decisions(self.models, self.heldout)
        scores = duplex.score(self.heldout, decisions.__getitem__, window_s)
        return {f"{name}_f1": s.f1 for name, s in scores.items()} | {
            "positive_precision": scores["positive"].precision,
            "positive_recall": scores["positive"].recall,
        }


def _examples(path: str | None, tasks: tuple[str, ...]) -> list[Example]:
    if path is None:
        return []
    examples = [e for e in read_manifest(path) if e.task in tasks]
    if not examples:
        raise ConfigError(f"{path} holds no examples of the tasks {', '.join(tasks)}")
    return examples


def build_task(run: TrainingRun, models: TrainingModels):
    stage = run.stage.stage
    if stage in S2T_STAGES:
        return SpeechToTextTask(run, models)
    if stage == "duplex":
        return DuplexTask(run, models)
    replies = ("asr", "qa", "instruction", "s2s")
    train = [e for e in _examples(run.stage.train, replies) if e.response]
    heldout = [e for e in _examples(run.stage.eval, replies) if e.response]
    if stage == "t2s":
        return TextToSpeechTask(train, heldout, models)
    if stage == "s2s":
        return SpeechToSpeechTask(train, heldout, models, run.stage.parts)
    raise ConfigError(f"unknown stage {stage!r}")


def base_model_files(run: TrainingRun) -> dict[str, dict[str, str]]:
    """sha256 of each base model's weight and config files, by model."""
    models = run.models
    found = {}
    for name, folder in (("llm", models.llm), ("sensevoice", models.sensevoice),
                         ("cosyvoice", models.cosyvoice)):  # fmt: skip
        if folder is None:
            continue
        files = sorted({p for pattern in BASE_FILES for p in Path(folder).glob(pattern)})
        found[name] = {p.name: cached_sha256(p) for p in files}
    return found


def export(run: TrainingRun, trained_before: Sequence[str], models: TrainingModels, folder: Path):
    """Write the adapters folder: what this stage and the ones before it trained."""
    trained = set(trained_before) | set(run.stage.parts)
    adapters = models.adapters
    lora = lora_folder(models, folder / "lora") if "lora" in trained else None
    history = list((adapters.training or {}).get("stages", []))
    history.append({"stage": run.stage.stage, "config": run.to_dict()["stage"]})
    training = {
        "trained": sorted(trained),
        "stages": history,
        "base_models": base_model_files(run),
    }
    encoder = models.sensevoice.encoder.state_dict() if "encoder" in trained else None
    voice_lm = models.voice.lm.state_dict() if "voice_lm" in trained else None
    out = MinMoAdapters(
        adapters.input_projector,
        adapters.output_projector if "output_projector" in trained else None,
        adapters.duplex if "duplex" in trained else None,
        lora,
        encoder,
        voice_lm,
        training,
    )
    return save_adapters(out, folder)


def make_trainer(run: TrainingRun, parallel: Distributed | None = None, log=None) -> Trainer:
    """The stage's models, task and trainer, which writes the adapters at the end."""
    models = load_models(run.models, run.stage)
    trained_before = (models.adapters.training or {}).get("trained", [])
    write = functools.partial(export, run, trained_before)
    return Trainer(run, models, build_task(run, models), write, parallel, log)


def run_stage(
    run: TrainingRun, stop_after: int | None = None, parallel: Distributed | None = None
) -> Result:
    """Load the models, train the stage (resuming if its folder holds a checkpoint), and
    write the adapters."""
    return make_trainer(run, parallel or Distributed.from_env()).fit(stop_after)


__all__ = [
    "DuplexTask",
    "SpeechToTextTask",
    "base_model_files",
    "build_task",
    "evaluate_speech_to_text",
    "export",
    "make_trainer",
    "run_stage",
]
