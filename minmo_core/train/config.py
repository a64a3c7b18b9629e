"""A training stage as data: what is trained, on what, how fast, and where it is written.

MinMo trains its adapters in four alignment stages (paper, section 3.3); we add the three
sub-stages of speech-to-text alignment as stages of their own:

    pre-align   input projector only (encoder and LLM frozen): speech states into the LLM
    full-align  voice encoder + input projector
    sft         LoRA on the LLM (speech QA, instructions), projectors frozen
    t2s         output projector (+ the voice LM, optional): semantic vectors drive the voice LM
    s2s         output projector + voice LM on spoken question -> spoken answer (the paper)
    duplex      the full-duplex predictor over the LLM's hidden states

A stage is read from a TOML file (``[stage]`` for the fields of ``StageConfig``, ``[models]``
for the folders of ``ModelPaths``) or built in code; ``trains`` left empty takes the stage's
default parts (``STAGE_PARTS``). Sizes never appear here: they come from the model folders.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from minmo_core.errors import ConfigError

PARTS = ("encoder", "input_projector", "lora", "output_projector", "voice_lm", "duplex")
STAGE_PARTS = {
    "pre-align": ("input_projector",),
    "full-align": ("encoder", "input_projector"),
    "sft": ("lora",),
    "t2s": ("output_projector",),
    "s2s": ("output_projector", "voice_lm"),
    "duplex": ("duplex",),
}
STAGES = tuple(STAGE_PARTS)
S2T_STAGES = ("pre-align", "full-align", "sft")  # the LLM's text is the target
PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bf16 autocast on CUDA, float32 on a CPU


@dataclass(frozen=True)
class ModelPaths:
    """The base models a stage trains against (folders), and where its adapters start."""

    llm: str  # a Hugging Face chat-LLM folder (Qwen2.5-Instruct; SmolLM2 in the demo)
    sensevoice: str  # the SenseVoiceSmall folder (the voice encoder)
    cosyvoice: str | None = None  # the CosyVoice 2 folder (t2s and s2s need its voice LM)
    adapters: str | None = None  # an earlier stage's adapters folder; None: fresh adapters
    allow_unpinned: bool = False  # base folders not checked against the release pins
    device: str = "auto"


@dataclass(frozen=True)
class StageConfig:
    stage: str  # one of STAGES
    train: str  # the training manifest (JSONL, minmo_core.train.manifest)
    eval: str | None = None  # a held-out manifest, evaluated every eval_every steps
    trains: tuple[str, ...] = ()  # parts to train; () = STAGE_PARTS[stage]
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # examples per optimizer step, over all processes
    micro_batch: int = 4  # examples per forward pass in one process (accumulated)
    lr: float = 1e-4  # peak learning rate (AdamW), after linear warm-up, then cosine to 10 %
    encoder_lr: float | None = None  # the voice encoder's rate (full-align); None: lr
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0  # the gradients' global norm is clipped to this (0: off)
    seed: int = 0  # data order, fresh weights and dropout all follow it
    save_every: int = 100  # steps between checkpoints (resume points); the last always saves
    eval_every: int = 0  # steps between held-out evaluations (0: only at the end)
    keep_checkpoints: int = 2  # the newest resume points kept on disk
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    precision: str = "auto"  # one of PRECISIONS
    tensorboard: bool = False  # also write TensorBoard scalars beside log.jsonl
    fsdp: bool = False  # under torchrun: shard the LLM's frozen decoder layers (FSDP2)
    system_prompt: str | None = None  # None: the LLM config's default system prompt
    duplex_window: int = 10  # K: LLM frames after an event in which the decision counts
    duplex_hop_s: float = 0.24  # decision points this far apart inside a labelled window

    def __post_init__(self) -> None:
        if self.stage not in STAGE_PARTS:
            raise ConfigError(f"unknown stage {self.stage!r}: use one of {', '.join(STAGES)}")
        unknown = [part for part in self.trains if part not in PARTS]
        if unknown:
            raise ConfigError(f"unknown part {unknown[0]!r} to train: use {', '.join(PARTS)}")
        for name in ("steps", "batch_size", "micro_batch", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batch:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch {self.micro_batch}"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.duplex_window < 1 or not self.duplex_hop_s > 0:
            raise ConfigError("duplex_window and duplex_hop_s must be positive")

    @property
    def parts(self) -> tuple[str, ...]:
        """What this stage trains."""
        return self.trains or STAGE_PARTS[self.stage]

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per process per optimizer step."""
        per_step = self.micro_batch * world_size
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} does not split into micro-batches of "
                f"{self.micro_batch} over {world_size} processes"
            )
        return self.batch_size // per_step


@dataclass(frozen=True)
class TrainingRun:
    """One stage, its models, and the folder it writes (checkpoints, log, adapters)."""

    stage: StageConfig
    models: ModelPaths
    out: str
    extra: dict = field(default_factory=dict)  # free-form notes kept with the checkpoint

    def to_dict(self) -> dict:
        return {"stage": asdict(self.stage), "models": asdict(self.models), "out": self.out}


def _build(kind, raw: object, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    names = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(names)})")
    missing = [n for n, f in names.items() if n not in raw and _required(f)]
    if missing:
        keys = " and ".join(f'{n} = "..."' for n in missing)
        raise ConfigError(f"{where}: missing {', '.join(missing)} (add {keys})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    for name, value in values.items():
        wanted = _SIMPLE_TYPES.get(str(names[name].type))
        if wanted is not None and not _is(value, wanted):
            raise ConfigError(
                f"{where}: {name} must be {_TYPE_WORDS[str(names[name].type)]}, not {value!r}"
            )
    try:
        return kind(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


# the fields' annotations this file uses (strings, by the __future__ import), and the types
# a TOML value must have for them
_SIMPLE_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
                 "str | None": (str, type(None))}  # fmt: skip
_TYPE_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number",
               "str": "a string", "str | None": "a string"}  # fmt: skip


def _is(value: object, wanted: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in wanted:
        return False  # TOML's true is not a number
    return isinstance(value, wanted)


def _required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def read_run(path: Path | str, **overrides) -> TrainingRun:
    """A run from a TOML file; relative paths in it are relative to the file's folder.

    ``overrides`` replace ``[stage]`` fields (the command line's --steps and the like)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the training config {path}: {err}") from err
    here = path.parent

    def resolve(value: str | None) -> str | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else here / p)

    stage = _build(StageConfig, data.get("stage", {}), f"{path} [stage]")
    stage = replace(stage, train=resolve(stage.train), eval=resolve(stage.eval), **overrides)
    models = _build(ModelPaths, data.get("models", {}), f"{path} [models]")
    models = replace(
        models,
        llm=resolve(models.llm),
        sensevoice=resolve(models.sensevoice),
        cosyvoice=resolve(models.cosyvoice),
        adapters=resolve(models.adapters),
    )
    out = data.get("out")
    if not isinstance(out, str):
        raise ConfigError(f'{path}: give the output folder as out = "..."')
    return TrainingRun(stage, models, resolve(out))


def run_from_dict(data: dict) -> TrainingRun:
    """The inverse of ``TrainingRun.to_dict`` (the copy kept in a checkpoint)."""
    stage = _build(StageConfig, data.get("stage"), "stage")
    models = _build(ModelPaths, data.get("models"), "models")
    return TrainingRun(stage, models, str(data.get("out")))


__all__ = [
    "PARTS",
    "PRECISIONS",
    "S2T_STAGES",
    "STAGES",
    "STAGE_PARTS",
    "ModelPaths",
    "StageConfig",
    "TrainingRun",
    "read_run",
    "run_from_dict",
]
