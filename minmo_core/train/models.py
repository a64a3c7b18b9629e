"""The models a training stage works on: the public base models (voice encoder, chat LLM,
voice LM) loaded unchanged from their folders, and MinMo's adapters, fresh or from an earlier
stage. ``prepare`` freezes everything, then un-freezes what the stage trains.

Fresh adapters are sized from the models they join: the input projector maps the encoder's
width to the LLM's with the LLM's head count and an FFN of min(4 x width, 4096) (the paper's
4096 at Qwen2.5-7B's 3584); the output projector maps 2 x the LLM's width to the voice LM's;
the duplex predictor reads the LLM's width through a layer of min(width, 1024) (the paper's
1024). Master weights are float32; the trainer autocasts to bfloat16 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from minmo_core.config import (
    DuplexPredictorConfig,
    InputProjectorConfig,
    LLMConfig,
    OutputProjectorConfig,
)
from minmo_core.errors import ConfigError
from minmo_core.llm.adapters import MinMoAdapters, load_adapters
from minmo_core.llm.chat import ChatLLM
from minmo_core.llm.duplex import FullDuplexPredictor
from minmo_core.llm.projectors import InputProjector, OutputProjector
from minmo_core.train.config import ModelPaths, StageConfig
from minmo_core.understanding.sensevoice import SenseVoice
from minmo_core.voice.speech_tokens import SpeechTokenGenerator
from minmo_core.voice.voice_lm import greedy_sampler, load_voice_lm

LANGUAGE = "auto"  # the engine's default query to SenseVoice
USE_ITN = True  # the engine hears with inverse text normalisation on


@dataclass
class TrainingModels:
    sensevoice: SenseVoice  # its encoder is trained in full-align
    llm: ChatLLM  # frozen but for its LoRA (sft)
    voice: SpeechTokenGenerator | None  # the voice LM and its tokenizer, for t2s and s2s
    adapters: MinMoAdapters

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def modules(self) -> dict[str, nn.Module]:
        """Every part by the name ``StageConfig.trains`` uses."""
        found: dict[str, nn.Module] = {
            "encoder": self.sensevoice.encoder,
            "input_projector": self.adapters.input_projector,
            "output_projector": self.adapters.output_projector,
        }
        if self.adapters.duplex is not None:
            found["duplex"] = self.adapters.duplex
        if self.voice is not None:
            found["voice_lm"] = self.voice.lm
        if self.llm.adapter is not None:
            found["lora"] = self.llm.model
        return found

    def trainable(self, parts: tuple[str, ...]) -> dict[str, nn.Parameter]:
        """The parameters of ``parts`` by a stable name (``part.parameter``), for the optimizer
        and the checkpoints; LoRA contributes only its own matrices."""
        modules = self.modules()
        named: dict[str, nn.Parameter] = {}
        for part in parts:
            if part not in modules:
                raise ConfigError(f"this stage trains {part!r}, which these models lack")
            for name, param in modules[part].named_parameters():
                if part == "lora" and "lora_" not in name:
                    continue
                named[f"{part}.{name}"] = param
        return named


def fresh_adapters(llm: ChatLLM, sensevoice: SenseVoice, voice_width: int) -> MinMoAdapters:
    """Untrained adapters sized for these models (the caller seeds torch first)."""
    width = llm.hidden_size
    heads = llm.model.config.num_attention_heads
    duplex_width = min(width, 1024)
    duplex_heads = heads if duplex_width == width else 16
    return MinMoAdapters(
        InputProjector(
            InputProjectorConfig(
                d_in=sensevoice.encoder.cfg.d_model,
                d_model=width,
                n_heads=heads,
                d_ffn=min(4 * width, 4096),
            )
        ),
        OutputProjector(OutputProjectorConfig(d_in=2 * width, d_out=voice_width)),
        FullDuplexPredictor(
            DuplexPredictorConfig(
                d_in=width,
                d_model=duplex_width,
                n_heads=duplex_heads,
                d_ffn=min(4 * duplex_width, 4096),
            )
        ),
    )


def load_models(paths: ModelPaths, stage: StageConfig, seed: int | None = None) -> TrainingModels:
    """The base models from their folders and the adapters to train, all float32."""
    from minmo_core.common.devices import resolve_device

    device = resolve_device(paths.device)
    sensevoice = SenseVoice.from_folder(
        paths.sensevoice, str(device), torch.float32, allow_unpinned=paths.allow_unpinned
    )
    config = LLMConfig()
    if stage.system_prompt is not None:
        config = replace(config, system_prompt=stage.system_prompt)
    llm = ChatLLM(paths.llm, config, device=str(device), dtype=torch.float32)
    voice = None
    if paths.cosyvoice is not None:  # training reads the voice LM only, never the flow
        lm, tokenizer = load_voice_lm(paths.cosyvoice, device, torch.float32, paths.allow_unpinned)
        if lm.cfg.cosyvoice != 2:
            raise ConfigError(
                f"{paths.cosyvoice} is a CosyVoice {lm.cfg.cosyvoice} release: MinMo's voice "
                "side is trained against CosyVoice 2's voice LM (models.cosyvoice)"
            )
        voice = SpeechTokenGenerator(lm, tokenizer, greedy_sampler)
    elif stage.stage in ("t2s", "s2s"):
        raise ConfigError(f"the {stage.stage} stage needs the voice (models.cosyvoice)")
    voice_width = voice.lm.sos.shape[-1] if voice is not None else 896
    if paths.adapters is not None:
        adapters = load_adapters(paths.adapters)
        if adapters.duplex is None or adapters.output_projector is None:
            with torch.random.fork_rng(devices=[]):  # the parts no stage has trained yet
                torch.manual_seed(stage.seed if seed is None else seed)
                fresh = fresh_adapters(llm, sensevoice, voice_width)
            adapters.duplex = adapters.duplex or fresh.duplex
            adapters.output_projector = adapters.output_projector or fresh.output_projector
        voice_lm = voice.lm if voice is not None else None
        adapters.load_tuned_weights(sensevoice.encoder, voice_lm)
        if adapters.lora is not None:
            llm.load_lora(adapters.lora)
        adapters.check_fits(llm.hidden_size, sensevoice.encoder.cfg.d_model, voice_width)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stage.seed if seed is None else seed)
            adapters = fresh_adapters(llm, sensevoice, voice_width)
    adapters.to(device, torch.float32)
    return TrainingModels(sensevoice, llm, voice, adapters)


def prepare(models: TrainingModels, stage: StageConfig) -> dict[str, nn.Parameter]:
    """Freeze everything, attach LoRA if the stage trains it, un-freeze the stage's parts;
    returns the trainable parameters by name."""
    if "lora" in stage.parts and models.llm.adapter is None:
        # seeded: every process of a torchrun (and a rerun) starts from the same LoRA
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stage.seed)
            models.llm.attach_lora(stage.lora_rank, stage.lora_alpha, stage.lora_targets)
    frozen = [*models.modules().values(), models.llm.model]  # the LLM: all but its LoRA
    for module in frozen:
        module.requires_grad_(False)
        module.eval()
    params = models.trainable(stage.parts)
    for param in params.values():
        param.requires_grad_(True)
    modules = models.modules()
    for part in stage.parts:
        modules[part].train()
    return params


def lora_folder(models: TrainingModels, folder: Path) -> Path | None:
    """Write the LLM's LoRA (peft's layout) into ``folder``; None when it has none."""
    if models.llm.adapter is None:
        return None
    models.llm.save_lora(folder)
    return folder


__all__ = ["TrainingModels", "fresh_adapters", "load_models", "lora_folder", "prepare"]
