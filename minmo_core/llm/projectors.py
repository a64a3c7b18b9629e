"""MinMo's adapters between the voice encoder, the LLM and the voice-token LM.

``InputProjector`` turns voice-encoder states into LLM-width embeddings at half the frame
rate (a strided 1-D conv, then a small pre-norm transformer). ``OutputProjector`` maps
``semantic_query(user_embed, hidden)`` — the current user-input embedding beside the LLM's
last hidden state — into the voice-token LM's width.

Lengths at the input projector's stride-2, kernel-3, padding-1 conv:
``out_len = (len + 2 * 1 - 3) // 2 + 1 = (len + 1) // 2 = ceil(len / 2)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minmo_core.config import InputProjectorConfig, OutputProjectorConfig
from minmo_core.errors import ConfigError


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Right-padded lengths to a validity mask.

    lengths : torch.Tensor, shape = (batch_size,), integer
    returns : torch.Tensor, shape = (batch_size, max_len), bool, True at valid frames
    """
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]  # (B, T)


class SelfAttention(nn.Module):
    """Multi-head self-attention whose padded keys take no part."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, valid: Tensor, causal: bool = False) -> Tensor:
        """
        x : torch.Tensor, shape = (batch_size, n_ctx, d_model)
        valid : torch.Tensor, shape = (batch_size, n_ctx), bool, True at keys to attend to
        causal : each position attends only to itself and earlier ones
        returns : torch.Tensor, shape = (batch_size, n_ctx, d_model)
        """
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        # an item with no valid frame attends to all (fully masked rows are NaN on some
        # torch versions and backends); its outputs are zeroed in InputProjector.forward
        keys = valid | ~valid.any(dim=-1, keepdim=True)  # (B, T)
        mask = keys[:, None, None, :]  # (B, 1, 1, T)
        if causal:  # the first key is always valid for a right-padded row: no empty rows
            mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,  # (B, 1, 1 or T, T)
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out(y)  # (B, T, C)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attn(ln(x)), then x + ffn(ln(x)); ``causal`` masks the future."""

    def __init__(
        self, d_model: int, n_heads: int, d_ffn: int, dropout: float, causal: bool = False
    ) -> None:
        super().__init__()
        self.causal = causal
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ffn), nn.GELU(), nn.Linear(d_ffn, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """
        x : torch.Tensor, shape = (batch_size, n_ctx, d_model)
        valid : torch.Tensor, shape = (batch_size, n_ctx), bool, True at valid frames
        returns : torch.Tensor, shape = (batch_size, n_ctx, d_model)
        """
        x = x + self.drop(self.attn(self.attn_ln(x), valid, self.causal))  # (B, T, C)
        return x + self.drop(self.mlp(self.mlp_ln(x)))  # (B, T, C)


class InputProjector(nn.Module):
    """Voice-encoder states -> LLM input embeddings at half the frame rate.

    At the defaults (512 -> 3584, 2 layers, FFN 4096) it holds 167.1M parameters
    (paper: 170M). Padded frames never influence valid outputs: they are zeroed before
    the conv (so a batch item sees exactly the zero padding it would see alone), masked as
    attention keys, and zeroed in the output.
    """

    def __init__(self, cfg: InputProjectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.padding = (cfg.kernel_size - 1) // 2  # 1 at kernel 3
        self.conv = nn.Conv1d(
            cfg.d_in, cfg.d_model, cfg.kernel_size, stride=cfg.stride, padding=self.padding
        )
        self.layers = nn.ModuleList(
            TransformerLayer(cfg.d_model, cfg.n_heads, cfg.d_ffn, cfg.dropout)
            for _ in range(cfg.n_layers)
        )
        self.ln_post = nn.LayerNorm(cfg.d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """The conv's output length per item: ceil(len / 2) at kernel 3, stride 2, padding 1.

        lengths : torch.Tensor, shape = (batch_size,), integer
        returns : torch.Tensor, shape = (batch_size,), int64
        """
        k, s, p = self.cfg.kernel_size, self.cfg.stride, self.padding
        return ((lengths.long() + 2 * p - k).div(s, rounding_mode="floor") + 1).clamp(min=0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """
        x : torch.Tensor, shape = (batch_size, n_frames, d_in)
            voice-encoder states, right-padded
        lengths : torch.Tensor, shape = (batch_size,), optional
            valid frames per item; all frames are valid when neither this nor padding_mask
            is given
        padding_mask : torch.Tensor, shape = (batch_size, n_frames), bool, optional
            True at padded frames; the padding must be at the right end
        returns : (torch.Tensor, shape = (batch_size, ceil(n_frames / 2), d_model),
                   torch.Tensor, shape = (batch_size,), int64)
            embeddings with padded positions zeroed, and the valid positions per item
        """
        B, T, _ = x.shape
        if lengths is not None and padding_mask is not None:
            raise ValueError("give lengths or padding_mask, not both")
        if padding_mask is not None:
            lengths = (~padding_mask).sum(dim=-1)  # (B,)
            if not torch.equal(lengths_to_mask(lengths, T), ~padding_mask):
                raise ValueError("padding_mask must mark a right-padded suffix of each row")
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)  # (B,)

        x = x * lengths_to_mask(lengths, T)[..., None]  # (B, T, d_in)
        x = F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, T', C)
        out_lengths = self.output_lengths(lengths)  # (B,)
        valid = lengths_to_mask(out_lengths, x.shape[1])  # (B, T')
        for layer in self.layers:
            x = layer(x, valid)  # (B, T', C)
        x = self.ln_post(x) * valid[..., None]  # (B, T', C)
        return x, out_lengths


def semantic_query(user_embed: Tensor, hidden: Tensor) -> Tensor:
    """MinMo's output-projector input: [current user-input embedding ; LLM last hidden].

    user_embed : torch.Tensor, shape = (batch_size, d_llm)
    hidden : torch.Tensor, shape = (batch_size, d_llm)
    returns : torch.Tensor, shape = (batch_size, 2 * d_llm), user_embed first
    """
    if user_embed.shape != hidden.shape:
        raise ValueError(f"shapes differ: {tuple(user_embed.shape)} vs {tuple(hidden.shape)}")
    return torch.cat([user_embed, hidden], dim=-1)  # (B, 2D)


class OutputProjector(nn.Module):
    """One linear map from ``semantic_query`` (2 x 3584) to the voice-token LM's width (896).

    6,423,424 parameters at the defaults (paper: 6M).
    """

    def __init__(self, cfg: OutputProjectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.d_in, cfg.d_out)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """
        x : torch.Tensor, shape = (..., d_in)
        returns : torch.Tensor, shape = (..., d_out)
        """
        return self.proj(x)  # (..., d_out)


__all__ = [
    "InputProjector",
    "OutputProjector",
    "SelfAttention",
    "TransformerLayer",
    "lengths_to_mask",
    "semantic_query",
]
