"""MinMo's adapter weights: what turns the public models into MinMo's aligned mode.

MinMo's own weights were never released; our training pipeline writes these, and the
engine runs in aligned mode when they are present. One folder:

    adapters.json                  format, widths, each part's configuration, and (from the
                                   training pipeline) the stages and base models trained on
    input_projector.safetensors    voice-encoder states -> LLM embeddings
    output_projector.safetensors   optional: [user embedding ; LLM hidden] -> voice-LM vectors
                                   (without it the reply's text drives the voice, as composed)
    duplex_predictor.safetensors   optional: keep listening / take the turn / stop speaking
    voice_encoder.safetensors      optional: SenseVoice's weights after full-align
    voice_lm.safetensors           optional: the voice LM's weights after t2s fine-tuning
    lora/                          optional: the LLM's LoRA (peft's folder layout)

Sizes come from ``adapters.json`` and are checked against the tensors and against the LLM
and voice encoder they are loaded for, so adapters trained for Qwen2.5-7B are refused by a
1.5B LLM with a message saying so. Tensors load through safetensors only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.config import DuplexPredictorConfig, InputProjectorConfig, OutputProjectorConfig
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.duplex import FullDuplexPredictor
from minmo_core.llm.projectors import InputProjector, OutputProjector

FORMAT = "minmo-adapters"
VERSION = 1
MANIFEST = "adapters.json"
FILES = {
    "input_projector": "input_projector.safetensors",
    "output_projector": "output_projector.safetensors",
    "duplex": "duplex_predictor.safetensors",
}
STATES = {  # fine-tuned weights of the public models, loaded over the release's own
    "voice_encoder": "voice_encoder.safetensors",
    "voice_lm": "voice_lm.safetensors",
}


@dataclass
class MinMoAdapters:
    input_projector: InputProjector
    output_projector: OutputProjector | None  # None: the voice reads the reply's text
    duplex: FullDuplexPredictor | None = None
    lora: Path | None = None  # a peft folder for ChatLLM.load_lora
    voice_encoder: dict[str, torch.Tensor] | None = None  # SenseVoice state after full-align
    voice_lm: dict[str, torch.Tensor] | None = None  # voice-LM state after t2s fine-tuning
    training: dict | None = None  # what the training pipeline recorded (stages, base models)
    folder: Path | None = None  # where they were loaded from (named in errors)

    @property
    def llm_width(self) -> int:
        return self.input_projector.cfg.d_model

    @property
    def encoder_width(self) -> int:
        return self.input_projector.cfg.d_in

    def to(self, device: torch.device | str, dtype: torch.dtype) -> MinMoAdapters:
        for part in (self.input_projector, self.output_projector, self.duplex):
            if part is not None:
                part.to(device=device, dtype=dtype).eval()
        return self

    def load_tuned_weights(
        self, encoder: torch.nn.Module | None, voice_lm: torch.nn.Module | None
    ) -> None:
        """Put the fine-tuned voice encoder and voice LM weights (when the adapters hold
        them) into the given modules; a mismatch is named by its file."""
        tuned = (("voice_encoder", self.voice_encoder, encoder),
                 ("voice_lm", self.voice_lm, voice_lm))  # fmt: skip
        for name, state, module in tuned:
            if state is not None and module is not None:
                source = Path(self.folder or "the MinMo adapters") / STATES[name]
                load_into(module, _with_tied(module, state), source)

    def check_fits(self, llm_width: int, encoder_width: int, voice_width: int | None) -> None:
        """Refuse adapters trained for other models, naming the mismatch (``voice_width``
        None: no voice to check the output projector against)."""
        problems = []
        if self.llm_width != llm_width:
            problems.append(f"they are for a {self.llm_width}-wide LLM, this one is {llm_width}")
        if self.encoder_width != encoder_width:
            problems.append(
                f"they read {self.encoder_width}-wide voice-encoder states, the encoder gives "
                f"{encoder_width}"
            )
        out = self.output_projector.cfg if self.output_projector is not None else None
        if out is not None and out.d_in != 2 * llm_width:
            problems.append(f"the output projector reads {out.d_in} features, not 2 x {llm_width}")
        if out is not None and voice_width is not None and out.d_out != voice_width:
            problems.append(
                f"the output projector writes {out.d_out}, the voice LM reads {voice_width}"
            )
        if self.duplex is not None and self.duplex.cfg.d_in != llm_width:
            problems.append(f"the duplex predictor reads {self.duplex.cfg.d_in}-wide states")
        if problems:
            raise CheckpointError(
                "the MinMo adapters do not fit these models: " + "; ".join(problems)
            )


def save_adapters(adapters: MinMoAdapters, folder: Path | str) -> Path:
    """Write ``adapters`` as a folder ``load_adapters`` reads (the training pipeline's output)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {"format": FORMAT, "version": VERSION}
    parts = {
        "input_projector": adapters.input_projector,
        "output_projector": adapters.output_projector,
        "duplex": adapters.duplex,
    }
    for name, module in parts.items():
        if module is None:
            manifest[name] = None
            continue
        manifest[name] = asdict(module.cfg)
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(folder / FILES[name]))
    for name, state in (("voice_encoder", adapters.voice_encoder), ("voice_lm", adapters.voice_lm)):
        manifest[name] = None
        if state is not None:
            save_file(_untied(state), str(folder / STATES[name]))
            manifest[name] = STATES[name]
    manifest["lora"] = None
    if adapters.lora is not None:
        manifest["lora"] = str(Path(adapters.lora).resolve().relative_to(folder.resolve()))
    if adapters.training is not None:
        manifest["training"] = adapters.training
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for safetensors: a tied weight (the voice LM's text head is its embedding)
    is kept once, under its first name; ``_with_tied`` restores the others on loading."""
    kept: dict[tuple, str] = {}
    out = {}
    for key, tensor in state.items():
        alias = _storage_key(tensor)
        if alias not in kept:
            kept[alias] = key
            out[key] = tensor.detach().contiguous().cpu()
    return out


def _with_tied(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """``state`` with the names ``_untied`` dropped filled in from the tensors they share
    (as ``module`` ties them)."""
    own = module.state_dict()
    by_storage = {_storage_key(v): k for k, v in own.items() if k in state}
    filled = dict(state)
    for key, tensor in own.items():
        if key not in filled and _storage_key(tensor) in by_storage:
            filled[key] = state[by_storage[_storage_key(tensor)]]
    return filled


def load_adapters(folder: Path | str) -> MinMoAdapters:
    """Read an adapters folder (float32 on the CPU; ``MinMoAdapters.to`` moves it)."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a MinMo adapters folder: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} does not describe MinMo adapters (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is adapters format version {manifest.get('version')}; this app reads {VERSION}"
        )
    inp = _part(folder, manifest, "input_projector", InputProjectorConfig, InputProjector)
    out = _part(folder, manifest, "output_projector", OutputProjectorConfig, OutputProjector)
    if inp is None:
        raise CheckpointError(f"{path}: aligned mode needs the input projector")
    duplex = _part(folder, manifest, "duplex", DuplexPredictorConfig, FullDuplexPredictor)
    states = {}
    for name, file in STATES.items():
        if manifest.get(name) is None:
            states[name] = None
            continue
        if manifest[name] != file:
            raise CheckpointError(f"{path}: {name} must be stored as {file}")
        states[name] = load_state_dict(folder / file)
    lora = manifest.get("lora")
    if lora is not None:
        lora = (folder / str(lora)).resolve()
        if not lora.is_relative_to(folder.resolve()) or not lora.is_dir():
            raise CheckpointError(
                f"{path}: the LoRA folder {manifest['lora']!r} is not a folder inside {folder}"
            )
    training = manifest.get("training")
    if training is not None and not isinstance(training, dict):
        raise CheckpointError(f'{path}: "training" must be an object')
    return MinMoAdapters(
        inp, out, duplex, lora, states["voice_encoder"], states["voice_lm"], training, folder
    )


def _part(folder: Path, manifest: dict, name: str, config_type, module_type):
    described = manifest.get(name)
    if described is None:
        return None
    names = {f.name for f in fields(config_type)}
    if not isinstance(described, dict) or set(described) - names:
        raise CheckpointError(f"{folder / MANIFEST}: {name} has an unknown configuration")
    try:
        cfg = config_type(**described)
        module = module_type(cfg)
    except (TypeError, ValueError, RuntimeError, ConfigError) as err:
        raise CheckpointError(
            f"{folder / MANIFEST}: {name}'s configuration is invalid ({err})"
        ) from err
    file = folder / FILES[name]
    load_into(module, load_state_dict(file), file)
    return module.eval()


__all__ = ["MinMoAdapters", "load_adapters", "save_adapters"]
