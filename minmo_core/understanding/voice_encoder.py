"""VoiceEncoder: SenseVoiceSmall's SAN-M encoder, query embeddings and CTC head.

Parameter names follow the released ``model.pt`` exactly (``embed.weight``,
``encoder.encoders0.0.*``, ``encoder.encoders.N.*``, ``encoder.tp_encoders.N.*``,
``encoder.after_norm.*``, ``encoder.tp_norm.*``, ``ctc.ctc_lo.*``), so the official
state dict loads with ``strict=True``.

    feats (B, T, 560) ──► [language, event/emotion 1, event/emotion 2, text-norm] queries
                          prepended: (B, 4 + T, 560)
      x sqrt(512) + sinusoidal position (560 wide)
      encoders0: one SAN-M layer 560 -> 512 (no attention residual)
      encoders: 49 SAN-M layers ─► after_norm ─► tp_encoders: 20 layers ─► tp_norm
      ─► (B, 4 + T, 512) ──► ctc_lo ──► log-softmax (B, 4 + T, 25055)

A SAN-M layer is self-attention plus an FSMN memory: a depthwise convolution over
time (kernel 11) on the value projection, added to the attention output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minmo_core.config import VoiceEncoderConfig

N_QUERIES = 4  # frames prepended to the speech features; they decode to the rich tags

LANGUAGE_QUERY = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
EVENT_EMOTION_QUERIES = (1, 2)  # fixed rows: decode to the emotion and the audio event
TEXTNORM_QUERY = {"withitn": 14, "woitn": 15}


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as SenseVoice does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class SANMAttention(nn.Module):
    """Multi-head self-attention with an FSMN memory block on the values."""

    def __init__(self, d_in: int, d_model: int, n_heads: int, kernel_size: int, shift: int):
        super().__init__()
        self.n_heads = n_heads
        self.linear_q_k_v = nn.Linear(d_in, 3 * d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.fsmn_block = nn.Conv1d(
            d_model, d_model, kernel_size, padding=0, groups=d_model, bias=False
        )
        left = (kernel_size - 1) // 2 + shift
        self.padding = (left, kernel_size - 1 - left)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x : (B, T, d_in); mask : (B, T) bool, True on valid frames, or None -> (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)  # 3 x (B, T, D)

        memory = v if mask is None else v * mask[..., None]  # (B, T, D)
        conv = self.fsmn_block(F.pad(memory.transpose(1, 2), self.padding))  # (B, D, T)
        memory = conv.transpose(1, 2) + memory
        if mask is not None:
            memory = memory * mask[..., None]

        heads = (b, t, self.n_heads, -1)
        q, k, v = (z.view(heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D/H)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, D/H)
        att = att.transpose(1, 2).reshape(b, t, -1)  # (B, T, D)
        return self.linear_out(att) + memory


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ffn: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ffn)
        self.w_2 = nn.Linear(d_ffn, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.relu(self.w_1(x)))


class SANMLayer(nn.Module):
    """Pre-norm SAN-M block; without an attention residual when the width changes."""

    def __init__(self, d_in: int, cfg: VoiceEncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.residual = d_in == d
        self.norm1 = LayerNorm(d_in)
        self.self_attn = SANMAttention(d_in, d, cfg.n_heads, cfg.kernel_size, cfg.sanm_shift)
        self.norm2 = LayerNorm(d)
        self.feed_forward = FeedForward(d, cfg.d_ffn)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        att = self.self_attn(self.norm1(x), mask)
        x = x + att if self.residual else att
        return x + self.feed_forward(self.norm2(x))


def sinusoidal_positions(t: int, depth: int, dtype: torch.dtype, device: torch.device):
    """Position codes for positions 1..t: (1, t, depth) = [sin(p w_i) | cos(p w_i)].

    w_i = 10000^(-i / (depth/2 - 1)), i = 0 .. depth/2 - 1 (FunASR's SinusoidalPositionEncoder).
    """
    positions = torch.arange(1, t + 1, device=device, dtype=torch.float32)  # (t,)
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment)
    scaled = positions[:, None] * inv[None, :]  # (t, depth/2)
    return torch.cat([scaled.sin(), scaled.cos()], dim=-1)[None].to(dtype)  # (1, t, depth)


class SANMEncoder(nn.Module):
    """SenseVoiceEncoderSmall."""

    def __init__(self, cfg: VoiceEncoderConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.encoders0 = nn.ModuleList([SANMLayer(cfg.input_size, cfg)])
        self.encoders = nn.ModuleList(
            [SANMLayer(cfg.d_model, cfg) for _ in range(cfg.n_blocks - 1)]
        )
        self.after_norm = LayerNorm(cfg.d_model)
        self.tp_encoders = nn.ModuleList(
            [SANMLayer(cfg.d_model, cfg) for _ in range(cfg.tp_blocks)]
        )
        self.tp_norm = LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x : (B, T, input_size); lengths : (B,) -> (B, T, d_model)."""
        _, t, d = x.shape
        mask = None
        if bool((lengths < t).any()):
            mask = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        x = x * self.d_model**0.5 + sinusoidal_positions(t, d, x.dtype, x.device)
        for layer in self.encoders0:
            x = layer(x, mask)
        for layer in self.encoders:
            x = layer(x, mask)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, mask)
        return self.tp_norm(x)


class CTCHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : (B, T, d_model) -> CTC log-probabilities (B, T, vocab)."""
        return F.log_softmax(self.ctc_lo(x), dim=-1)


class VoiceEncoder(nn.Module):
    """SenseVoiceSmall: query embeddings + SAN-M encoder + CTC head."""

    def __init__(self, cfg: VoiceEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.n_queries, cfg.input_size)
        self.encoder = SANMEncoder(cfg)
        self.ctc = CTCHead(cfg.d_model, cfg.vocab_size)

    def query_ids(self, language: str = "auto", use_itn: bool = False) -> list[int]:
        """Rows of ``embed`` in time order: [language, 1, 2, text-norm]."""
        textnorm = TEXTNORM_QUERY["withitn" if use_itn else "woitn"]
        return [LANGUAGE_QUERY[language], *EVENT_EMOTION_QUERIES, textnorm]

    def encode(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        language: str = "auto",
        use_itn: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats : (B, T, 560) CMVN'd LFR features; lengths : (B,).

        Returns encoder states (B, 4 + T, d_model) whose first 4 frames are the query
        positions, and their lengths (B,) = lengths + 4.
        """
        ids = torch.tensor(self.query_ids(language, use_itn), device=feats.device)
        queries = self.embed(ids).to(feats.dtype).expand(feats.shape[0], -1, -1)  # (B, 4, 560)
        x = torch.cat([queries, feats], dim=1)  # (B, 4 + T, 560)
        lengths = lengths + N_QUERIES
        return self.encoder(x, lengths), lengths

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        language: str = "auto",
        use_itn: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (encoder states (B, 4+T, D), CTC log-probs (B, 4+T, V), lengths (B,))."""
        states, lengths = self.encode(feats, lengths, language, use_itn)
        return states, self.ctc(states), lengths


def ctc_greedy(log_probs: torch.Tensor, length: int, blank_id: int = 0) -> list[int]:
    """Best path of one utterance: argmax per frame, merge repeats, drop blanks.

    log_probs : (T, V); only the first ``length`` frames are read.
    """
    best = log_probs[:length].argmax(dim=-1)  # (T,)
    best = torch.unique_consecutive(best)
    return best[best != blank_id].tolist()
