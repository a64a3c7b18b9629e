"""The flow's mel decoder: conditional flow matching with a causal 1-D U-Net (inference only).

CosyVoice 2's CausalConditionalCFM integrates dx/dt = v(x, t | mu, spks, cond) from fixed
Gaussian noise (t = 0) to a mel spectrogram (t = 1) with 10 Euler steps on a cosine time
schedule, under classifier-free guidance. The velocity ``v`` is CausalConditionalDecoder,
parameter names as in the released ``flow.pt`` under ``decoder.estimator.``:

    time_mlp.linear_{1,2}               sinusoidal t -> (4C,)
    down_blocks.0.{0,1.N,2}             resnet, N transformer blocks, causal conv
    mid_blocks.M.{0,1.N}                resnet, N transformer blocks
    up_blocks.0.{0,1.N,2}               resnet (skip concatenated: 2C in), N blocks, causal conv
    final_block.block.{0,2}, final_proj causal conv + LayerNorm + Mish, 1x1 conv to 80 mels

Resnets are ``block1/block2.block.{0: causal conv k=3, 2: LayerNorm}``, ``mlp.1`` (time) and
``res_conv``; transformer blocks are ``norm1``, ``attn1.to_{q,k,v}``, ``attn1.to_out.0``,
``norm3``, ``ff.net.0.proj`` (GELU), ``ff.net.2``. The release has a single U-Net stage
(channels [256]), so nothing is down- or up-sampled in time: every convolution is causal and,
when streaming, attention sees 50-frame chunks and all chunks before them.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from minmo_core.voice.prefix import Prefix, chunk_mask

NOISE_FRAMES = 50 * 300  # 15000: 300 s of 50 Hz mel frames of fixed noise, as the release draws
NOISE_SEED = 0


@cache
def _noise_table(n_mels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(NOISE_SEED)
    return torch.randn(1, n_mels, NOISE_FRAMES, generator=generator)  # (1, n_mels, 15000)


def fixed_noise(n_mels: int, n_frames: int, start: int = 0) -> torch.Tensor:
    """The release's starting noise for mel frames [start, start + n_frames): shape
    (1, n_mels, n_frames).

    The release draws ``torch.manual_seed(0); torch.randn(1, 80, 15000)`` once and every call
    starts from its first columns: frame f always gets the same noise, which keeps
    streamed chunks consistent with each other. Here it comes from a private generator (the
    same values), so the global RNG state neither matters nor changes.

    Past the table's 300 s (where the release fails) frame f gets column f mod 15000: still
    the same noise for the same frame on every call, so long replies keep streaming.
    """
    table = _noise_table(n_mels)
    if start + n_frames <= NOISE_FRAMES:
        return table[:, :, start : start + n_frames].clone()
    columns = torch.arange(start, start + n_frames) % NOISE_FRAMES  # (n_frames,)
    return table[:, :, columns]


def cosine_t_span(n_steps: int) -> torch.Tensor:
    """Euler time points 0 = t_0 < ... < t_n = 1, denser near 0: shape (n_steps + 1,)."""
    return 1 - torch.cos(torch.linspace(0, 1, n_steps + 1) * 0.5 * torch.pi)


class Transpose(nn.Module):
    """Swap the channel and time axes, so a LayerNorm can sit inside an nn.Sequential."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class CausalConv1d(nn.Conv1d):
    """A stride-1 convolution whose output at frame f reads frames <= f only."""

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        """x : (B, C_in, T) -> (B, C_out, T); before x, the kept frames or zeros"""
        T, k = x.size(2), self.kernel_size[0] - 1
        if prefix is not None:
            x = prefix.history(self, x, k, dim=2)  # (B, C_in, <= k + T)
        return super().forward(F.pad(x, (k + T - x.size(2), 0)))


class CausalBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3),
            Transpose(),
            nn.LayerNorm(dim_out),
            Transpose(),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        """x : (B, dim, T) -> (B, dim_out, T)"""
        x = self.block[0](x, prefix)
        for layer in self.block[1:]:
            x = layer(x)
        return x


class CausalResnet(nn.Module):
    """Two causal blocks with the time embedding added between them, plus a 1x1 skip."""

    def __init__(self, dim: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(
        self, x: torch.Tensor, t_emb: torch.Tensor, prefix: Prefix | None = None
    ) -> torch.Tensor:
        """x : (B, dim, T); t_emb : (B, time_dim) -> (B, dim_out, T)"""
        h = self.block1(x, prefix) + self.mlp(t_emb)[:, :, None]
        return self.block2(h, prefix) + self.res_conv(x)


class Attention(nn.Module):
    """Multi-head self-attention whose inner width is n_heads * head_dim (512 for 256 wide)."""

    def __init__(self, dim: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, prefix: Prefix | None = None
    ) -> torch.Tensor:
        """x : (B, T, dim); mask : (T, S + T) bool or None -> (B, T, dim), S the kept frames
        whose keys and values come from ``prefix`` (none without one)"""
        B, T, _ = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        if prefix is not None:
            k = prefix.extend(self, "k", k, dim=2)  # (B, H, S + T, Dh)
            v = prefix.extend(self, "v", v, dim=2)  # (B, H, S + T, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
        return self.to_out(out.transpose(1, 2).reshape(B, T, -1))


class GELUProjection(nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        # net.1 is the release's dropout (rate 0): kept so that net.2 keeps its name
        self.net = nn.Sequential(
            GELUProjection(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : (B, T, dim) -> (B, T, dim)"""
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward (4x), as Matcha-TTS builds it."""

    def __init__(self, dim: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, n_heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, prefix: Prefix | None = None
    ) -> torch.Tensor:
        """x : (B, T, dim) -> (B, T, dim)"""
        x = x + self.attn1(self.norm1(x), mask, prefix)
        return x + self.ff(self.norm3(x))


class TimeEmbedding(nn.Module):
    """Diffusion time t in [0, 1] -> (B, time_dim): sinusoids of 1000 t, then an MLP."""

    def __init__(self, n_freqs: int, time_dim: int) -> None:
        super().__init__()
        self.n_freqs = n_freqs  # sin and cos each get n_freqs / 2
        self.linear_1 = nn.Linear(n_freqs, time_dim)
        self.linear_2 = nn.Linear(time_dim, time_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t : (B,) -> (B, time_dim)"""
        half = self.n_freqs // 2
        freqs = torch.exp(
            torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1))
        )  # (half,)
        angle = 1000 * t.float()[:, None] * freqs[None, :]  # (B, half)
        emb = torch.cat([angle.sin(), angle.cos()], dim=-1).to(t.dtype)  # (B, n_freqs)
        return self.linear_2(F.silu(self.linear_1(emb)))


class Estimator(nn.Module):
    """The velocity field: (x, mu, spks, cond, t) -> dx/dt, a causal 1-D U-Net of one stage."""

    def __init__(
        self,
        n_mels: int,
        channels: int,
        n_blocks: int,
        n_mid_blocks: int,
        n_heads: int,
        head_dim: int,
        chunk_frames: int,
    ) -> None:
        super().__init__()
        self.chunk_frames = chunk_frames  # streaming attention chunk (50: one second of mel)
        n_in = 4 * n_mels  # x, mu, spks (broadcast over time), cond: 320
        time_dim = 4 * channels
        self.time_mlp = TimeEmbedding(n_in, time_dim)

        def stage(dim_in: int, last: nn.Module | None) -> nn.ModuleList:
            resnet = CausalResnet(dim_in, channels, time_dim)
            blocks = nn.ModuleList(
                TransformerBlock(channels, n_heads, head_dim) for _ in range(n_blocks)
            )
            return nn.ModuleList([resnet, blocks] if last is None else [resnet, blocks, last])

        self.down_blocks = nn.ModuleList([stage(n_in, CausalConv1d(channels, channels, 3))])
        self.mid_blocks = nn.ModuleList(stage(channels, None) for _ in range(n_mid_blocks))
        self.up_blocks = nn.ModuleList([stage(2 * channels, CausalConv1d(channels, channels, 3))])
        self.final_block = CausalBlock(channels, channels)
        self.final_proj = nn.Conv1d(channels, n_mels, 1)

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
        """Velocity at time t for unpadded sequences, or for a region after a kept prefix.

        x, mu, cond : torch.Tensor, shape = (B, n_mels, T)
            current sample, encoder output, prompt mel (zeros past the prompt)
        t : torch.Tensor, shape = (B,)
        spks : torch.Tensor, shape = (B, n_mels)
            projected speaker embedding
        streaming : bool
            50-frame chunked attention instead of full attention
        prefix : Prefix or None
            what earlier passes at this time step kept (chunk-aligned start; streaming
            only): x, mu and cond then hold the region's frames only

        Returns dx/dt, shape = (B, n_mels, T).
        """
        T = x.size(2)
        S = prefix.start if prefix is not None else 0
        if S and not streaming:
            raise ValueError("a region after a kept prefix needs chunked (streaming) attention")
        t_emb = self.time_mlp(t)  # (B, 4C)
        h = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, T), cond], dim=1)  # (B, 4 n_mels, T)
        mask = chunk_mask(T, self.chunk_frames, x.device, S) if streaming else None  # (T, S + T)

        def stage(blocks: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
            h = blocks[0](h, t_emb, prefix)  # (B, C, T)
            h = h.transpose(1, 2)  # (B, T, C)
            for block in blocks[1]:
                h = block(h, mask, prefix)
            return h.transpose(1, 2)  # (B, C, T)

        (down,) = self.down_blocks
        skip = stage(down, h)  # (B, C, T)
        h = down[2](skip, prefix)
        for mid in self.mid_blocks:
            h = stage(mid, h)
        (up,) = self.up_blocks
        h = up[2](stage(up, torch.cat([h, skip], dim=1)), prefix)  # (B, C, T)
        return self.final_proj(self.final_block(h, prefix))  # (B, n_mels, T)


class FlowMatching(nn.Module):
    """Euler integration of the estimator from fixed noise, with classifier-free guidance."""

    def __init__(self, estimator: Estimator, n_mels: int, n_steps: int, cfg_rate: float) -> None:
        super().__init__()
        self.estimator = estimator
        self.n_mels, self.n_steps, self.cfg_rate = n_mels, n_steps, cfg_rate

    def forward(
        self,
        mu: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        streaming: bool = False,
        prefixes: list[Prefix] | None = None,
    ) -> torch.Tensor:
        """Sample a mel, or the region of one after a kept prefix.

        mu : torch.Tensor, shape = (1, n_mels, T)
            encoder output projected to mel size
        spks : torch.Tensor, shape = (1, n_mels)
        cond : torch.Tensor, shape = (1, n_mels, T)
            prompt mel in its first frames, zeros after
        prefixes : list of n_steps Prefix, or None
            what earlier passes kept at each Euler step, all with the same start: mu and
            cond are then the region's frames, and so is the result

        Returns float32 (1, n_mels, T). Each step evaluates a batch of 2, conditional and
        unconditional (zero mu, spks and cond), and moves along
        (1 + cfg_rate) v_cond - cfg_rate v_uncond.
        """
        T = mu.size(2)
        start = prefixes[0].start if prefixes is not None else 0
        x = fixed_noise(self.n_mels, T, start).to(mu.device)  # (1, n_mels, T) float32
        mu_in = torch.cat([mu, torch.zeros_like(mu)])  # (2, n_mels, T)
        spks_in = torch.cat([spks, torch.zeros_like(spks)])  # (2, n_mels)
        cond_in = torch.cat([cond, torch.zeros_like(cond)])  # (2, n_mels, T)
        t_span = cosine_t_span(self.n_steps).to(mu.device)  # (n_steps + 1,)
        t, dt = t_span[0], t_span[1] - t_span[0]
        for step in range(1, self.n_steps + 1):
            x_in = x.to(mu.dtype).expand(2, -1, -1)  # (2, n_mels, T)
            prefix = prefixes[step - 1] if prefixes is not None else None
            v = self.estimator(
                x_in, mu_in, t.to(mu.dtype).expand(2), spks_in, cond_in, streaming, prefix
            )
            v_cond, v_uncond = v.float().chunk(2)  # (1, n_mels, T) each
            x = x + dt * ((1.0 + self.cfg_rate) * v_cond - self.cfg_rate * v_uncond)
            t = t + dt  # the release steps t by accumulated dt, not by indexing t_span
            if step < self.n_steps:
                dt = t_span[step + 1] - t
        return x
