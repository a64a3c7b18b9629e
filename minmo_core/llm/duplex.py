"""MinMo's full-duplex predictor: should the assistant keep listening, take the turn, or stop
speaking?

It reads the LLM's last hidden states over the user's incoming speech (the positions the
input projector fed in), through one causal pre-norm transformer layer and a linear-softmax
head over three actions. Causal attention makes the decision at a position depend only on
what came before it, so judging a stream as it grows gives exactly what judging the whole
sequence at once gives (``decide`` on a prefix = ``forward`` at that position).

At the defaults (3584-wide Qwen2.5-7B states through a 1024-wide layer, FFN 4096) it holds
about 16M parameters; the paper gives 18M and no widths.
"""

from __future__ import annotations

from enum import IntEnum

import torch
from torch import Tensor, nn

from minmo_core.config import DuplexPredictorConfig
from minmo_core.llm.projectors import TransformerLayer, lengths_to_mask


class DuplexAction(IntEnum):
    KEEP_LISTENING = 0
    TAKE_TURN = 1
    STOP_SPEAKING = 2


class FullDuplexPredictor(nn.Module):
    def __init__(self, cfg: DuplexPredictorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(cfg.d_in, cfg.d_model)
        self.layer = TransformerLayer(cfg.d_model, cfg.n_heads, cfg.d_ffn, 0.0, causal=True)
        self.ln_post = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_actions)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
        """
        hidden : torch.Tensor, shape = (batch_size, n_ctx, d_in), the LLM's last hidden
            states, right-padded
        lengths : torch.Tensor, shape = (batch_size,), optional; all positions are valid
            when it is not given
        returns : torch.Tensor, shape = (batch_size, n_ctx, n_actions), float32
            probabilities of the actions at every position (padded positions are garbage)
        """
        return self.logits(hidden, lengths).softmax(dim=-1)  # (B, T, n_actions)

    def logits(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The head's scores before the softmax (what training's cross-entropy reads), same
        shapes as ``forward``; float32."""
        B, T, _ = hidden.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=hidden.device)
        x = self.proj_in(hidden.to(self.proj_in.weight.dtype))  # (B, T, d_model)
        x = self.ln_post(self.layer(x, lengths_to_mask(lengths, T)))  # (B, T, d_model)
        return self.head(x).float()  # (B, T, n_actions)

    @torch.inference_mode()
    def decide(self, hidden: Tensor) -> tuple[DuplexAction, Tensor]:
        """The action after the last of ``hidden`` (T, d_in), and its probabilities (n_actions,)."""
        probs = self(hidden[None])[0, -1]  # (n_actions,)
        return DuplexAction(int(probs.argmax())), probs


__all__ = ["DuplexAction", "FullDuplexPredictor"]
