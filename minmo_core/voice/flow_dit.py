"""DiTFlowDecoder: CosyVoice 3's speech-token -> mel model (CausalMaskedDiffWithDiT).

    speech tokens (25 Hz) of prompt + reply ─► input_embedding (80) ─► PreLookahead
        ─► x2 repeat ─► mu (80, T_mel) ─► FlowMatching with a DiT estimator
        (10 Euler steps, CFG 0.7, fixed noise) ─► mel (80, T_mel) ─► the reply's frames

Unlike CosyVoice 2 there is no conformer encoder: the tokens are embedded straight to 80
channels, pass one look-ahead layer (``pre_lookahead_layer``, 80 -> 1024 -> 80, 3 tokens
ahead) and are repeated to the mel rate. The estimator is a diffusion transformer
(``DiT``): [x | cond | mu | spks] projected to ``dim``, a causal convolutional position
embedding, ``depth`` blocks of self-attention and feed-forward modulated by the time step
(adaLN-Zero), rotary positions on the first ``dim_head`` channels of the queries and keys
(x-transformers' rotary embedding applied before the head split, so only head 0 turns),
block-causal 50-frame chunks when streaming, full attention otherwise.

Parameter names are those of the released ``flow.pt``: ``input_embedding``,
``spk_embed_affine_layer``, ``pre_lookahead_layer.conv{1,2}``, ``decoder.estimator.*``
(``time_embed.time_mlp``, ``input_embed.{proj,conv_pos_embed}``, ``rotary_embed.inv_freq``,
``transformer_blocks.N.{attn_norm,attn,ff}``, ``norm_out``, ``proj_out``).

Streaming is the release's (``inference``): every call runs over all tokens so far; with
``streaming`` the frames of complete chunks never change, and with ``finalize=False`` the
last 3 tokens are look-ahead only.

Streaming at a bounded cost (``stream``, a ``DiTFlowStream``): as CosyVoice 2's
``FlowStream``, every layer keeps what the complete chunks produced (per Euler step and
guidance branch: the attention's rotated keys and values, the position convolutions' last
30 input frames; the look-ahead layer's last 2 tokens) and each call computes only the open
chunk, its new tokens and their look-ahead. Its frames equal ``inference``'s (streaming).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.config import DiTFlowConfig
from minmo_core.errors import CheckpointError
from minmo_core.voice.flow import FlowDecoder, FlowStream
from minmo_core.voice.flow_decoder import FlowMatching
from minmo_core.voice.flow_encoder import PreLookahead
from minmo_core.voice.prefix import Prefix, chunk_mask

FLOW_FILE = "flow.pt"
TIME_FREQ_DIM = 256  # the sinusoidal time embedding's width (fixed in the release)
TIME_SCALE = 1000.0  # t in [0, 1] is scaled to [0, 1000] before the sinusoids
POS_KERNEL, POS_GROUPS = 31, 16  # the causal convolutional position embedding
ROTARY_BASE = 10000.0
NORM_EPS = 1e-6


class TimestepEmbedding(nn.Module):
    """t (B,) in [0, 1] -> (B, dim): sinusoids of 1000·t, then Linear, SiLU, Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = TIME_FREQ_DIM // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -step)  # (half,)
        angles = TIME_SCALE * t[:, None] * freqs[None]  # (B, half)
        hidden = torch.cat([angles.sin(), angles.cos()], dim=-1).to(t.dtype)
        return self.time_mlp(hidden)


class CausalPositionEmbedding(nn.Module):
    """Two grouped causal convolutions (kernel 31, 16 groups) with Mish.
    x (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, POS_KERNEL, groups=POS_GROUPS), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, POS_KERNEL, groups=POS_GROUPS), nn.Mish())

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        """With a ``prefix``, the kept frames before x feed each convolution's left edge."""
        h = x.transpose(1, 2)  # (B, dim, T)
        for conv in (self.conv1, self.conv2):
            T = h.size(2)
            if prefix is not None:
                h = prefix.history(conv, h, POS_KERNEL - 1, dim=2)  # (B, dim, Th + T)
            h = conv(F.pad(h, (POS_KERNEL - 1 - (h.size(2) - T), 0)))  # (B, dim, T)
        return h.transpose(1, 2)


class InputEmbedding(nn.Module):
    """[x | cond | mu | spks] (4 x 80) -> dim, plus the position embedding.
    x, cond, mu (B, T, 80), spks (B, 80) -> (B, T, dim)."""

    def __init__(self, n_mels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4 * n_mels, dim)
        self.conv_pos_embed = CausalPositionEmbedding(dim)

    def forward(self, x, cond, mu, spks, prefix: Prefix | None = None) -> torch.Tensor:
        spks = spks[:, None].expand(-1, x.size(1), -1)
        h = self.proj(torch.cat([x, cond, mu, spks], dim=-1))
        return self.conv_pos_embed(h, prefix) + h


class RotaryEmbedding(nn.Module):
    """x-transformers' rotary embedding: angles n·f_i on interleaved channel pairs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", self._inv_freq())  # in the release's state dict

    def _inv_freq(self) -> torch.Tensor:
        return 1.0 / (ROTARY_BASE ** (torch.arange(0, self.dim, 2).float() / self.dim))

    def reset(self) -> None:
        """Recompute the frequencies (after building on the meta device)."""
        self.inv_freq = self._inv_freq().to(self.inv_freq.device)

    def forward(self, n: int, start: int = 0) -> torch.Tensor:
        """Angles of positions start..start+n: (n, dim), each pair's angle twice."""
        inv_freq = self.inv_freq.float()  # float32 whatever the model's dtype
        t = torch.arange(start, start + n, device=inv_freq.device, dtype=inv_freq.dtype)
        freqs = t[:, None] * inv_freq[None]  # (n, dim / 2)
        return torch.stack([freqs, freqs], dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``angles.shape[-1]`` channels of x (B, n, C) in adjacent pairs
    (2i, 2i + 1); the other channels pass unchanged."""
    rot = angles.shape[-1]
    turned, kept = x[..., :rot], x[..., rot:]
    x1, x2 = turned.unflatten(-1, (-1, 2)).unbind(-1)
    half_turn = torch.stack([-x2, x1], dim=-1).flatten(-2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.cat([turned * cos + half_turn * sin, kept], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention; rotary positions on the first head's channels."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(
        self,
        x: torch.Tensor,
        angles: torch.Tensor,
        mask: torch.Tensor | None,
        prefix: Prefix | None = None,
    ):
        """x (B, T, dim), angles (T, dim_head), mask (T, S) bool or None -> (B, T, dim); S is
        T, or with a ``prefix`` its start + T (the kept keys and values come first)."""
        B, T, _ = x.shape
        q = apply_rotary(self.to_q(x), angles)
        k = apply_rotary(self.to_k(x), angles)
        v = self.to_v(x)
        q, k, v = (y.view(B, T, self.heads, self.dim_head).transpose(1, 2) for y in (q, k, v))
        if prefix is not None:
            k = prefix.extend(self, "k", k, dim=2)  # (B, heads, start + T, dim_head)
            v = prefix.extend(self, "v", v, dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out[0](out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """Linear, GELU (tanh), Linear (keys ff.0.0, ff.2 as the release's Sequential)."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(approximate="tanh")),
            nn.Identity(),  # the release's dropout
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class AdaNorm(nn.Module):
    """LayerNorm without affine, modulated by the time embedding: ``n_out`` chunks of
    linear(SiLU(t)) (shift, scale, gate for attention and FF; or scale, shift at the end)."""

    def __init__(self, dim: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim * n_out)
        self.n_out = n_out

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(t)).chunk(self.n_out, dim=1)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block. x (B, T, dim), t (B, dim) -> (B, T, dim)."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.attn_norm = AdaNorm(dim, 6)
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x, t, angles, mask, prefix: Prefix | None = None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(t)
        norm = _norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        x = x + gate_msa[:, None] * self.attn(norm, angles, mask, prefix)
        norm = _norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(norm)


class DiT(nn.Module):
    """The estimator: velocity of the mel at time t, the same interface as CosyVoice 2's
    U-Net (``flow_decoder.Estimator``)."""

    def __init__(self, cfg: DiTFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.input_embed = InputEmbedding(cfg.output_size, cfg.dim)
        self.rotary_embed = RotaryEmbedding(cfg.dim_head)
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.ff_mult) for _ in range(cfg.depth)
        )
        self.norm_out = AdaNorm(cfg.dim, 2)
        self.proj_out = nn.Linear(cfg.dim, cfg.output_size)

    def attention_mask(self, T: int, streaming: bool, device) -> torch.Tensor | None:
        """(T, T) bool: block-causal chunks when streaming (frame i sees every frame of its
        chunk and before), None (full attention) otherwise."""
        if not streaming:
            return None
        chunk = self.cfg.static_chunk_size
        i = torch.arange(T, device=device)
        return i[None, :] < ((i[:, None] // chunk) + 1) * chunk

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        streaming: bool = False,
        prefix: Prefix | None = None,
    ) -> torch.Tensor:
        """x, mu, cond (B, n_mels, T), t (B,), spks (B, n_mels) -> dx/dt (B, n_mels, T).

        With a ``prefix`` (streaming only), x, mu and cond are the region after its kept
        frames, and so is the result."""
        T = x.size(2)
        start = 0
        if prefix is not None:
            if not streaming:
                raise ValueError("a kept prefix needs chunked (streaming) attention")
            start = prefix.start
        temb = self.time_embed(t)  # (B, dim)
        h = self.input_embed(
            x.transpose(1, 2), cond.transpose(1, 2), mu.transpose(1, 2), spks, prefix
        )  # (B, T, dim)
        angles = self.rotary_embed(T, start)  # (T, dim_head): positions start..start + T
        if prefix is not None:
            mask = chunk_mask(T, self.cfg.static_chunk_size, x.device, start)  # (T, start + T)
        else:
            mask = self.attention_mask(T, streaming, x.device)
        for block in self.transformer_blocks:
            h = block(h, temb, angles, mask, prefix)
        scale, shift = self.norm_out(temb)
        h = _norm(h) * (1 + scale)[:, None] + shift[:, None]
        return self.proj_out(h).transpose(1, 2)


class DiTFlowDecoder(nn.Module):
    """Speech tokens + voice prompt -> 80-bin mel at 50 Hz. Batch size 1, no padding."""

    def __init__(self, cfg: DiTFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.pre_lookahead_layer = PreLookahead(
            cfg.input_size, cfg.pre_lookahead_len, cfg.pre_lookahead_channels
        )
        self.decoder = FlowMatching(DiT(cfg), cfg.output_size, cfg.n_timesteps, cfg.cfg_rate)

    def encode(
        self, tokens: torch.Tensor, prompt_tokens: torch.Tensor, finalize: bool = True
    ) -> torch.Tensor:
        """mu for prompt + tokens: (1, 80, ratio * (P + L [- lookahead]))."""
        ids = torch.cat([prompt_tokens, tokens], dim=1).long()
        lookahead = self.cfg.pre_lookahead_len
        if not finalize and ids.size(1) <= lookahead:
            raise ValueError(
                f"an unfinished stream needs more than {lookahead} tokens (prompt included), "
                f"got {ids.size(1)}"
            )
        x = self.input_embedding(ids.clamp(min=0))  # (1, P + L, 80)
        if finalize:
            h = self.pre_lookahead_layer(x)
        else:
            h = self.pre_lookahead_layer(x[:, :-lookahead], x[:, -lookahead:])
        return h.repeat_interleave(self.cfg.token_mel_ratio, dim=1).transpose(1, 2)

    # the same layers and checks as CosyVoice 2's flow
    speaker = FlowDecoder.speaker
    _check_prompt = FlowDecoder._check_prompt

    def stream(
        self, prompt_tokens: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor
    ) -> DiTFlowStream:
        """An incremental stream for one utterance in the prompt's voice (shapes as in
        ``inference``)."""
        return DiTFlowStream(self, prompt_tokens, prompt_feat, embedding)

    @torch.inference_mode()
    def inference(
        self,
        tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        streaming: bool = False,
        finalize: bool = True,
    ) -> torch.Tensor:
        """The mel of ``tokens`` (1, L) in the voice of the prompt (tokens (1, P), mel
        (1, 2P, 80) time first, x-vector (1, 192)). Returns float32 (1, 80, 2L), or
        (1, 80, 2(L - 3)) unless ``finalize``; ``streaming``: chunked attention."""
        if tokens.dim() != 2 or tokens.size(0) != 1:
            raise ValueError(f"tokens must be (1, L), got {tuple(tokens.shape)}")
        self._check_prompt(prompt_tokens, prompt_feat)
        weight = self.spk_embed_affine_layer.weight
        device, dtype = weight.device, weight.dtype
        spks = self.speaker(embedding)
        mu = self.encode(tokens.to(device), prompt_tokens.to(device), finalize)
        n_prompt = prompt_feat.size(1)
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_feat.to(device, dtype).transpose(1, 2)
        mel = self.decoder(mu, spks, cond, streaming)
        return mel[:, :, n_prompt:]


class DiTFlowStream(FlowStream):
    """One utterance's mel, computed a region at a time: ``FlowStream``'s bookkeeping with
    the DiT flow's layers. Complete chunks are the DiT's ``static_chunk_size`` frames,
    counted in whole tokens."""

    def __init__(
        self,
        flow: DiTFlowDecoder,
        prompt_tokens: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
    ) -> None:
        super().__init__(flow, prompt_tokens, prompt_feat, embedding)  # type: ignore[arg-type]
        ratio, frames = flow.cfg.token_mel_ratio, flow.cfg.static_chunk_size
        self.chunk_tokens = math.lcm(frames, ratio) // ratio  # kept regions end on both grids

    def _mu(
        self, ids: torch.Tensor, start: int, end: int, keep: int, finalize: bool
    ) -> torch.Tensor:
        flow = self.flow
        embed = flow.input_embedding
        x = embed(ids[:, start:end].clamp(min=0))  # (1, end - start, 80)
        context = None if finalize else embed(ids[:, end:].clamp(min=0))  # (1, 3, 80)
        h = flow.pre_lookahead_layer(x, context, prefix=Prefix(start, keep, self._kept[0]))
        return h.repeat_interleave(flow.cfg.token_mel_ratio, dim=1).transpose(1, 2)


def load_dit_flow(
    folder: Path | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_unpinned: bool = False,
) -> DiTFlowDecoder:
    """A CosyVoice 3 release folder's ``flow.pt`` with the sizes of its ``cosyvoice3.yaml``
    (read, never executed) -> DiTFlowDecoder in eval mode, float32 unless ``dtype``."""
    from minmo_core.common.release_config import RELEASE_YAMLS, dit_flow_config, read_release_yaml
    from minmo_core.common.releases import COSYVOICE3, verify_files

    folder = Path(folder)
    yaml_name = RELEASE_YAMLS[3]
    verify_files(folder, COSYVOICE3, [yaml_name, FLOW_FILE], allow_unpinned)
    flow = read_release_yaml(folder / yaml_name).get("flow")
    if not isinstance(flow, dict):
        raise CheckpointError(f"{folder / yaml_name} has no flow section")
    cfg = dit_flow_config(flow, str(folder / yaml_name))
    state = load_state_dict(folder / FLOW_FILE)
    with torch.device("meta"):
        model = DiTFlowDecoder(cfg)
    model.to_empty(device="cpu")
    model.decoder.estimator.rotary_embed.reset()  # a computed buffer: recompute, then load
    load_into(model, state, folder / FLOW_FILE)
    return model.to(device=torch.device(device), dtype=dtype or torch.float32).eval()


__all__ = ["FLOW_FILE", "DiT", "DiTFlowDecoder", "DiTFlowStream", "apply_rotary", "load_dit_flow"]
