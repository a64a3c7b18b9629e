"""The flow's token encoder: CosyVoice 2's UpsampleConformerEncoder (inference only).

Embedded speech tokens (25 Hz) go through a linear embedding, a 3-token look-ahead
convolution and a stack of conformer layers (relative-position self-attention and a SiLU
feed-forward, no convolution module), are upsampled 2x to mel frames (50 Hz), embedded again
and pass a second conformer stack. Parameter names follow the released ``flow.pt`` under
``encoder.``:

    embed.out.{0,1}                     Linear + LayerNorm
    pre_lookahead_layer.conv{1,2}       look-ahead conv (k = 4), then causal conv (k = 3)
    encoders.N.self_attn.linear_{q,k,v,out,pos}, .pos_bias_{u,v}
    encoders.N.feed_forward.w_{1,2}, .norm_mha, .norm_ff
    up_layer.conv                       nearest 2x, then causal conv (k = 5)
    up_embed.out.{0,1}, up_encoders.N.*, after_norm

Streaming: attention sees its own chunk and every chunk before it (static chunks of 25 tokens
before the upsampling, 50 frames after), so a frame never depends on tokens more than the
look-ahead past the end of its chunk. No dropout: these modules are for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minmo_core.voice.prefix import Prefix, chunk_mask


def relative_positions(
    size: int, dim: int, device: torch.device, queries: int | None = None
) -> torch.Tensor:
    """ESPnet's relative sinusoidal encodings for distances size-1 down to -(queries-1).

    ``queries`` (default ``size``) are the last of ``size`` positions: a region after a
    kept prefix. Returns shape (1, size + queries - 1, dim); row r encodes the distance
    size - 1 - r. Computed on every call (no table buffer to keep initialised).
    """
    queries = size if queries is None else queries
    distance = torch.arange(size - 1, -queries, -1, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / dim)
    )  # (dim / 2,)
    pe = torch.empty(size + queries - 1, dim, device=device)
    pe[:, 0::2] = torch.sin(distance * freq)
    pe[:, 1::2] = torch.cos(distance * freq)
    return pe[None]


class LinearEmbed(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(dim) (ESPnet's relative-position input layer)."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(dim_in, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : (B, T, dim_in) -> (B, T, dim)"""
        return self.out(x) * self.scale


class PreLookahead(nn.Module):
    """Each token looks ``lookahead`` tokens ahead, then 2 back; added to its input.

    Past the end of the input the look-ahead reads ``context`` (the next tokens, already
    embedded, which produce no output themselves) or zeros.
    """

    def __init__(self, dim: int, lookahead: int, channels: int | None = None) -> None:
        super().__init__()
        self.lookahead = lookahead
        channels = channels or dim  # CosyVoice 3 widens inside: 80 -> 1024 -> 80
        self.conv1 = nn.Conv1d(dim, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, dim, kernel_size=3)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, prefix: Prefix | None = None
    ) -> torch.Tensor:
        """x : (B, T, D); context : (B, Tc <= lookahead, D) or None -> (B, T, D)

        With a ``prefix``, the two tokens before ``x`` (kept from earlier passes) feed the
        causal half, as they would in one pass over the whole sequence.
        """
        T = x.size(1)
        if prefix is not None:
            x = prefix.history(self, x, 2, dim=1)  # (B, Th + T, D), Th <= 2 kept tokens
        h = x.transpose(1, 2)  # (B, D, Th + T)
        if context is not None:
            h = torch.cat([h, context.transpose(1, 2)], dim=2)  # (B, D, Th + T + Tc)
        h = F.pad(h, (0, self.lookahead + x.size(1) - h.size(2)))  # (B, D, Th + T + lookahead)
        h = F.leaky_relu(self.conv1(h))  # (B, D, Th + T)
        h = self.conv2(F.pad(h, (2 + T - x.size(1), 0)))[:, :, -T:]  # (B, D, T), causal
        return x[:, -T:] + h.transpose(1, 2)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``stride``, then a causal convolution."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(dim, dim, kernel_size=2 * stride + 1)

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        """x : (B, D, T) -> (B, D, stride * T); ``prefix`` at the upsampled rate"""
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        T, k = x.size(2), 2 * self.stride
        if prefix is not None:
            x = prefix.history(self, x, k, dim=2)  # (B, D, <= k + T)
        return self.conv(F.pad(x, (k + T - x.size(2), 0)))


class RelPositionAttention(nn.Module):
    """Transformer-XL style self-attention with ESPnet's relative positions.

    score(i, j) = (q_i + u) . k_j + (q_i + v) . W_pos pe(i - j), over sqrt(head_dim).
    """

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_heads, self.head_dim)))
        self.pos_bias_v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_heads, self.head_dim)))

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
        prefix: Prefix | None = None,
    ) -> torch.Tensor:
        """x : (B, T, D), the region; pos : (1, S + 2T - 1, D) for distances S + T - 1 down
        to -(T - 1); mask : (T, S + T) bool or None -> (B, T, D). S = ``prefix.start``
        keys and values come from the prefix (S = 0 without one)."""
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        q = self.linear_q(x).view(B, T, H, Dh)
        k = self.linear_k(x).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
        v = self.linear_v(x).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
        if prefix is not None:
            k = prefix.extend(self, "k", k, dim=2)  # (B, H, S + T, Dh)
            v = prefix.extend(self, "v", v, dim=2)  # (B, H, S + T, Dh)
        S = k.size(2) - T
        p = self.linear_pos(pos).view(1, -1, H, Dh).transpose(1, 2)  # (1, H, S + 2T - 1, Dh)
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, Dh)
        q_v = (q + self.pos_bias_v).transpose(1, 2)  # (B, H, T, Dh)
        by_distance = q_v @ p.transpose(-2, -1)  # (B, H, T, S + 2T - 1): S + T - 1 - r
        queries = torch.arange(T, device=x.device)
        keys = torch.arange(S + T, device=x.device)
        column = (T - 1) - queries[:, None] + keys[None, :]  # (T, S + T): distance i - j
        bias = by_distance.gather(-1, column.expand(B, H, T, S + T)) / math.sqrt(Dh)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))  # (B, H, T, S + T)
        out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias)  # (B, H, T, Dh)
        return self.linear_out(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm self-attention + feed-forward (the release has no convolution module)."""

    def __init__(self, dim: int, n_heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(dim, n_heads)
        self.feed_forward = FeedForward(dim, ffn)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
        prefix: Prefix | None = None,
    ) -> torch.Tensor:
        """x : (B, T, D) -> (B, T, D)"""
        x = x + self.self_attn(self.norm_mha(x), pos, mask, prefix)
        return x + self.feed_forward(self.norm_ff(x))


class FlowEncoder(nn.Module):
    """Embedded tokens (B, T, D) -> mel-rate hidden states (B, stride * T, D)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn: int,
        n_blocks: int,
        n_up_blocks: int,
        lookahead: int,
        stride: int,
        chunk_tokens: int,
    ) -> None:
        super().__init__()
        self.chunk_tokens = chunk_tokens  # streaming chunk before upsampling (25: one second)
        self.embed = LinearEmbed(dim, dim)
        self.pre_lookahead_layer = PreLookahead(dim, lookahead)
        self.encoders = nn.ModuleList(ConformerLayer(dim, n_heads, ffn) for _ in range(n_blocks))
        self.up_layer = Upsample(dim, stride)
        self.up_embed = LinearEmbed(dim, dim)
        self.up_encoders = nn.ModuleList(
            ConformerLayer(dim, n_heads, ffn) for _ in range(n_up_blocks)
        )
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        streaming: bool = False,
        prefix: tuple[Prefix, Prefix] | None = None,
    ) -> torch.Tensor:
        """Encode one unpadded sequence, or its region after a kept prefix.

        x : torch.Tensor, shape = (B, T, D)
            embedded tokens (with ``prefix``: the region's)
        context : torch.Tensor, shape = (B, Tc, D), or None
            embedded look-ahead tokens after ``x`` (a stream's unfinished tail)
        streaming : bool
            chunked attention (causal at chunk granularity) instead of full attention
        prefix : (Prefix, Prefix), or None
            what earlier passes kept, at the token rate and at the mel-frame rate
            (chunk-aligned starts; streaming only)

        Returns (B, stride * T, D).
        """
        tokens, frames = prefix if prefix is not None else (None, None)
        x = self.embed(x)  # (B, T, D)
        if context is not None:
            context = self.embed(context)  # (B, Tc, D)
        x = self.pre_lookahead_layer(x, context, tokens)
        x = self._layers(self.encoders, x, self.chunk_tokens, streaming, tokens)
        x = self.up_layer(x.transpose(1, 2), frames).transpose(1, 2)  # (B, stride * T, D)
        x = self.up_embed(x)
        stride = self.up_layer.stride
        x = self._layers(self.up_encoders, x, stride * self.chunk_tokens, streaming, frames)
        return self.after_norm(x)

    @staticmethod
    def _layers(
        layers: nn.ModuleList,
        x: torch.Tensor,
        chunk: int,
        streaming: bool,
        prefix: Prefix | None,
    ) -> torch.Tensor:
        T = x.size(1)
        S = prefix.start if prefix is not None else 0
        if S and not streaming:
            raise ValueError("a region after a kept prefix needs chunked (streaming) attention")
        pos = relative_positions(S + T, x.size(2), x.device, T).to(x.dtype)  # (1, S + 2T - 1, D)
        mask = chunk_mask(T, chunk, x.device, S) if streaming else None  # (T, S + T)
        for layer in layers:
            x = layer(x, pos, mask, prefix)
        return x
