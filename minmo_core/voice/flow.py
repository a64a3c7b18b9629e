"""FlowDecoder: CosyVoice 2's speech-token -> mel model (CausalMaskedDiffWithXvec), inference.

    speech tokens (25 Hz) of prompt + reply ─► input_embedding ─► FlowEncoder ─► encoder_proj
        ─► mu (80, T_mel = 2 T) ─► FlowMatching (10 Euler steps, CFG 0.7, fixed noise)
        ─► mel (80, T_mel) ─► the reply's frames (the prompt's mel frames are cut)

The speaker x-vector (CAM++, 192) is L2-normalised and projected to 80; the prompt's mel fills
the first frames of the ``cond`` input. Parameter names are those of the released
``flow.pt`` (``input_embedding``, ``spk_embed_affine_layer``, ``encoder.*``,
``encoder_proj``, ``decoder.estimator.*``); see ``flow_encoder`` and ``flow_decoder``.

Streaming, as the release does it (``inference``): every call re-encodes all tokens so far
(prompt included) and re-samples the whole mel; ``streaming=True`` makes the attention
chunked (25 tokens / 50 frames, each chunk sees itself and the past), ``finalize=False``
holds the last ``pre_lookahead_len`` (3) tokens back as look-ahead context that yields no
frames. The caller keeps only the frames it has not played yet. Because the starting noise
is fixed per frame index, a streamed call's frames of complete chunks equal those of a later
streamed call over more tokens.

Streaming at a bounded cost (``stream``, a ``FlowStream``): since complete chunks never
change, every layer keeps what they produced (attention keys and values, convolution
context; per Euler step, both guidance branches) and each call computes only the open
chunk, its new tokens and their look-ahead. Its frames equal ``inference``'s.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.common.releases import ALLOW_FLAG, COSYVOICE2, verify_files
from minmo_core.config import FlowConfig
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.voice.flow_decoder import Estimator, FlowMatching
from minmo_core.voice.flow_encoder import FlowEncoder
from minmo_core.voice.prefix import Prefix

ATTENTION_CHUNK_TOKENS = 25  # the encoder's static_chunk_size (1 s); x token_mel_ratio after

FLOW_FILE = "flow.pt"


class FlowDecoder(nn.Module):
    """Speech tokens + voice prompt -> 80-bin mel at 50 Hz. Batch size 1, no padding."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        if len(cfg.estimator_channels) != 1:
            raise ConfigError(
                f"the flow's estimator has one U-Net stage (channels [256]); got "
                f"{list(cfg.estimator_channels)}"
            )
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = FlowEncoder(
            dim=cfg.input_size,
            n_heads=cfg.encoder_heads,
            ffn=cfg.encoder_ffn,
            n_blocks=cfg.encoder_blocks,
            n_up_blocks=cfg.encoder_up_blocks,
            lookahead=cfg.pre_lookahead_len,
            stride=cfg.token_mel_ratio,
            chunk_tokens=ATTENTION_CHUNK_TOKENS,
        )
        self.encoder_proj = nn.Linear(cfg.input_size, cfg.output_size)
        estimator = Estimator(
            n_mels=cfg.output_size,
            channels=cfg.estimator_channels[0],
            n_blocks=cfg.estimator_blocks_per_stage,
            n_mid_blocks=cfg.estimator_mid_blocks,
            n_heads=cfg.estimator_heads,
            head_dim=cfg.estimator_head_dim,
            chunk_frames=cfg.token_mel_ratio * ATTENTION_CHUNK_TOKENS,
        )
        self.decoder = FlowMatching(estimator, cfg.output_size, cfg.n_timesteps, cfg.cfg_rate)

    def encode(
        self,
        tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        streaming: bool = False,
        finalize: bool = True,
    ) -> torch.Tensor:
        """Encoder output for prompt + tokens: (1, ratio * (P + L [- lookahead]), D).

        With ``finalize=False`` the last ``pre_lookahead_len`` tokens are only look-ahead.
        """
        ids = torch.cat([prompt_tokens, tokens], dim=1).long()  # (1, P + L)
        if not finalize and ids.size(1) <= self.cfg.pre_lookahead_len:
            raise ValueError(
                f"an unfinished stream needs more than {self.cfg.pre_lookahead_len} tokens "
                f"(prompt included), got {ids.size(1)}"
            )
        x = self.input_embedding(ids.clamp(min=0))  # (1, P + L, D)
        if finalize:
            return self.encoder(x, streaming=streaming)
        lookahead = self.cfg.pre_lookahead_len
        return self.encoder(x[:, :-lookahead], x[:, -lookahead:], streaming=streaming)

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
        """The mel of ``tokens`` spoken in the prompt's voice.

        tokens : torch.Tensor, shape = (1, L)
            speech tokens of the reply so far (int)
        prompt_tokens : torch.Tensor, shape = (1, P)
            speech tokens of the voice prompt (P may be 0)
        prompt_feat : torch.Tensor, shape = (1, ratio * P, 80)
            the voice prompt's mel (24 kHz, hop 480), time first as the release stores it
        embedding : torch.Tensor, shape = (1, 192)
            the voice prompt's speaker x-vector (any norm)
        streaming : bool
            chunked attention (what a stream uses for all but its last call)
        finalize : bool
            False while more tokens will come: the last 3 tokens serve as look-ahead only

        Returns float32 mel, shape = (1, 80, ratio * L) when finalising, else
        (1, 80, ratio * (L - 3)).
        """
        if tokens.dim() != 2 or tokens.size(0) != 1:
            raise ValueError(f"tokens must be (1, L), got {tuple(tokens.shape)}")
        self._check_prompt(prompt_tokens, prompt_feat)
        n_prompt = prompt_feat.size(1)
        weight = self.spk_embed_affine_layer.weight
        device, dtype = weight.device, weight.dtype
        spks = self.speaker(embedding)
        h = self.encode(tokens.to(device), prompt_tokens.to(device), streaming, finalize)
        mu = self.encoder_proj(h).transpose(1, 2)  # (1, 80, T_mel)
        cond = torch.zeros_like(mu)  # (1, 80, T_mel)
        cond[:, :, :n_prompt] = prompt_feat.to(device, dtype).transpose(1, 2)
        mel = self.decoder(mu, spks, cond, streaming)  # (1, 80, T_mel)
        return mel[:, :, n_prompt:]

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """The speaker x-vector (1, 192), any norm -> L2-normalised and projected: (1, 80)."""
        weight = self.spk_embed_affine_layer.weight
        return self.spk_embed_affine_layer(
            F.normalize(embedding.to(weight.device, weight.dtype), dim=1)
        )

    def _check_prompt(self, prompt_tokens: torch.Tensor, prompt_feat: torch.Tensor) -> None:
        ratio = self.cfg.token_mel_ratio
        if prompt_feat.size(1) != ratio * prompt_tokens.size(1):
            raise ValueError(
                f"prompt_feat has {prompt_feat.size(1)} frames for {prompt_tokens.size(1)} "
                f"prompt tokens; the flow needs exactly {ratio} frames per token"
            )

    def stream(
        self, prompt_tokens: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor
    ) -> FlowStream:
        """An incremental stream for one utterance in the prompt's voice (shapes as in
        ``inference``)."""
        return FlowStream(self, prompt_tokens, prompt_feat, embedding)


class FlowStream:
    """One utterance's mel, computed a region at a time (see ``minmo_core.voice.prefix``).

    Each call passes the reply's tokens so far; the flow keeps, per layer, what the
    complete 25-token chunks produced, and computes only from the first incomplete chunk
    on. So a call costs the same however long the utterance already is (its attention
    reads the kept keys: a small share that grows), and gives the frames ``inference``
    would give for the same tokens (streaming). Memory grows with the utterance: a
    renderer starts a new stream at each sentence group.
    """

    chunk_tokens = ATTENTION_CHUNK_TOKENS  # tokens per attention chunk, encoder and decoder

    def __init__(
        self,
        flow: FlowDecoder,
        prompt_tokens: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
    ) -> None:
        flow._check_prompt(prompt_tokens, prompt_feat)
        weight = flow.spk_embed_affine_layer.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.flow = flow
        self.prompt_tokens = prompt_tokens.to(self.device).long()  # (1, P)
        self.prompt_mel = prompt_feat.to(self.device, self.dtype).transpose(1, 2)  # (1, 80, 2P)
        with torch.inference_mode():
            self.spks = flow.speaker(embedding)  # (1, 80)
        self.done = 0  # tokens (prompt included) in complete chunks, kept by every layer
        self.finished = False
        self._ids = self.prompt_tokens  # (1, P + L) the tokens of the last call
        self._kept: tuple[dict, dict] = ({}, {})  # the encoder's, by token and by frame
        self._kept_steps: list[dict] = [{} for _ in range(flow.decoder.n_steps)]

    @torch.inference_mode()
    def mel(self, tokens: torch.Tensor, finalize: bool = False) -> tuple[torch.Tensor, int]:
        """The newest frames for the reply so far.

        tokens : torch.Tensor, shape = (1, L)
            every speech token of the reply so far (earlier calls' tokens first)
        finalize : bool
            the utterance is complete: its last tokens need no look-ahead; the stream
            ends here

        Returns (mel, first): float32 mel of shape (1, 80, F) holding the reply's frames
        ``first`` to ``first + F`` (all the frames ``inference`` would give from ``first``
        on), where ``first`` is at most the first frame no earlier call returned.
        """
        cfg = self.flow.cfg
        ratio, lookahead, chunk = cfg.token_mel_ratio, cfg.pre_lookahead_len, self.chunk_tokens
        if self.finished:
            raise RuntimeError("this flow stream was finalised; start a new one")
        if tokens.dim() != 2 or tokens.size(0) != 1:
            raise ValueError(f"tokens must be (1, L), got {tuple(tokens.shape)}")
        ids = torch.cat([self.prompt_tokens, tokens.to(self.device).long()], dim=1)  # (1, n)
        n = ids.size(1)
        end = n if finalize else n - lookahead  # tokens that yield frames now
        start = self.done
        if end <= start:
            raise ValueError(
                f"a flow stream call needs new tokens past the {start - self.prompt_tokens.size(1)}"
                f" kept and the {0 if finalize else lookahead} of look-ahead; got {tokens.size(1)}"
            )
        if not torch.equal(ids[:, :start], self._ids[:, :start]):
            raise ValueError("the tokens changed where the flow already kept them")
        keep = 0 if finalize else max(0, end // chunk * chunk - start)
        mu = self._mu(ids, start, end, keep, finalize)  # (1, 80, ratio * (end - start))
        first = ratio * start  # the region's first frame, prompt included
        n_prompt = self.prompt_mel.size(2)
        cond = torch.zeros_like(mu)  # (1, 80, region frames)
        if first < n_prompt:
            cond[:, :, : n_prompt - first] = self.prompt_mel[:, :, first:]
        steps = [Prefix(first, ratio * keep, kept) for kept in self._kept_steps]
        mel = self.flow.decoder(mu, self.spks, cond, streaming=True, prefixes=steps)
        self.done, self._ids, self.finished = start + keep, ids, finalize
        if first < n_prompt:
            return mel[:, :, n_prompt - first :], 0
        return mel, first - n_prompt

    def _mu(
        self, ids: torch.Tensor, start: int, end: int, keep: int, finalize: bool
    ) -> torch.Tensor:
        """mu of tokens start..end (ids (1, n) holds every token, look-ahead after end):
        (1, 80, ratio * (end - start)), the first ``keep`` tokens' layers kept."""
        ratio = self.flow.cfg.token_mel_ratio
        embed = self.flow.input_embedding
        x = embed(ids[:, start:end].clamp(min=0))  # (1, end - start, D)
        context = None if finalize else embed(ids[:, end:].clamp(min=0))  # (1, 3, D)
        by_token = Prefix(start, keep, self._kept[0])
        by_frame = Prefix(ratio * start, ratio * keep, self._kept[1])
        h = self.flow.encoder(x, context, streaming=True, prefix=(by_token, by_frame))
        return self.flow.encoder_proj(h).transpose(1, 2)


def load_flow(
    path: Path | str,
    cfg: FlowConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_unpinned: bool = False,
) -> FlowDecoder:
    """The official ``flow.pt`` (pinned size and sha256) -> FlowDecoder in eval mode.

    ``dtype`` defaults to float32, as the release runs by default (its ``fp16`` option is
    float16); the Euler state and the returned mel stay float32 either way.
    ``allow_unpinned`` accepts another file of the same architecture (a fine-tune, a test
    checkpoint).
    """
    path = Path(path)
    if path.name != FLOW_FILE and not allow_unpinned:
        raise CheckpointError(f"{path} is not the release's {FLOW_FILE}; pass {ALLOW_FLAG}")
    if path.name == FLOW_FILE:
        verify_files(path.parent, COSYVOICE2, [FLOW_FILE], allow_unpinned)
    state = load_state_dict(path)
    with torch.device("meta"):
        model = FlowDecoder(cfg or FlowConfig())
    model.to_empty(device="cpu")  # safe: the model has no buffers, every tensor is loaded
    load_into(model, state, path)
    del state
    return model.to(device=torch.device(device), dtype=dtype or torch.float32).eval()


__all__ = ["FLOW_FILE", "FlowDecoder", "load_flow"]
