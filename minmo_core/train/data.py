"""Data order and the speech path shared by every stage.

The order is a pure function of (seed, step): optimizer step ``s`` takes global positions
``s * batch_size ...`` of an endless stream that visits the examples in a fresh seeded
permutation each epoch. A resumed run therefore continues exactly where the killed one
stopped, and every process of a data-parallel run knows the whole global batch: it takes
its share (``rank_share``) and normalises its loss by the global batch's target count, so the
summed gradients equal one process's over the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from minmo_core.common.audio import read_audio
from minmo_core.train.manifest import Example
from minmo_core.train.models import LANGUAGE, USE_ITN, TrainingModels


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` examples used in ``epoch``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batch(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based), over all processes."""
    if n < 1:
        raise ValueError("no examples to train on")
    out, cache = [], {}
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch = position // n
        if epoch not in cache:
            cache[epoch] = epoch_order(n, seed, epoch)
        out.append(int(cache[epoch][position % n]))
    return out


def rank_share(batch: Sequence[int], micro_batch: int, rank: int, world: int) -> list[list[int]]:
    """This process's micro-batches of a global batch: micro-batch ``m`` goes to rank
    ``m % world``."""
    micro = [list(batch[i : i + micro_batch]) for i in range(0, len(batch), micro_batch)]
    return [m for i, m in enumerate(micro) if i % world == rank]


def load_clip(example: Example, models: TrainingModels) -> np.ndarray:
    """The example's audio at the voice encoder's rate, (N,) float32."""
    return read_audio(example.audio, models.sensevoice.sample_rate)


def speech_embeddings(
    models: TrainingModels, clips: Sequence[np.ndarray], grad_encoder: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips -> the input projector's LLM embeddings, as the engine computes them
    (``SenseVoice.hear`` then ``InputProjector``), batched.

    returns : (torch.Tensor, shape = (batch_size, n_positions, d_llm),
               torch.Tensor, shape = (batch_size,), int64 valid positions per item)
    """
    sv = models.sensevoice
    feats = [torch.from_numpy(sv.frontend(clip)) for clip in clips]
    lengths = torch.tensor([f.shape[0] for f in feats], device=models.device)
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(models.device)
    with torch.set_grad_enabled(grad_encoder and torch.is_grad_enabled()):
        states, state_lengths = sv.encoder.encode(padded, lengths, LANGUAGE, USE_ITN)
    projector = models.adapters.input_projector
    return projector(states.to(projector.conv.weight.dtype), state_lengths)


__all__ = ["epoch_order", "global_batch", "load_clip", "rank_share", "speech_embeddings"]
