"""The FSDP option: the LLM's frozen weights split over the processes of a ``torchrun``.

With ``fsdp = true`` each process keeps 1/N of every decoder layer's frozen weights and
gathers a layer's whole weights only while it runs (forward, and again in backward), so the
LLM's memory per GPU falls to about 1/N of its layers plus the embeddings. This uses PyTorch's
FSDP2 (``fully_shard``) on each decoder layer (the classes the model names in
``_no_split_modules``), with the parameters being trained (the LoRA matrices) left out of the
sharding (``ignored_params``): they stay whole on every process, so the trainer's gradient
all-reduce, checkpoints and adapters export treat them as without FSDP. The embeddings and the
text head stay whole too: the stages call them outside the model's forward (to splice speech
into the prompt, and to score only the target positions).

Every process must then run every forward of the LLM together, evaluation included (the
trainer runs it on all processes and keeps the main one's numbers).
"""

from __future__ import annotations

import torch
from torch import nn

from minmo_core.errors import ConfigError


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer's layers, by the class names the Hugging Face model declares."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"fsdp: no decoder layers found in the {type(model).__name__} LLM")
    return layers


def shard_llm(model: nn.Module, device: torch.device, world: int) -> int:
    """Shard each decoder layer's frozen weights over ``world`` processes (the process group
    is up); returns how many layers were sharded."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    layers = decoder_layers(model)
    for layer in layers:
        trained = {p for p in layer.parameters() if p.requires_grad}
        fully_shard(layer, mesh=mesh, ignored_params=trained or None)
    return len(layers)


__all__ = ["decoder_layers", "shard_llm"]
