"""Speech tokens -> 24 kHz audio with CosyVoice 3's flow and causal vocoder.

The same interface as ``token2wav.Token2Wav`` (whole utterances, or streams of 15-token
chunks with ``push``, ``end_group`` and ``flush``), so the engine, the command line and the
window use either release alike. What differs is the joins:

    group tokens so far + 3 look-ahead ──► DiT flow (chunk-masked attention; a
        DiTFlowStream computes only the open chunk and the new tokens, or with ``reencode``
        every call re-runs the group so far, as the release does) ──► the new mel frames
    new mel ──► one causal vocoder stream for the whole reply ──► every sample no later
        frame can change

The vocoder is causal and runs as one stream over the reply's mel (``CausalHiFTStream``,
a bounded window per call), so consecutive chunks, and consecutive sentence groups, are one
continuous signal: nothing to cross-fade, nothing that can click. The flow starts afresh at
each sentence group (at most MAX_GROUP_TOKENS tokens), which bounds its memory (and, with
``reencode``, its cost per chunk).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from minmo_core.voice.flow_dit import DiTFlowDecoder
from minmo_core.voice.hift_causal import CausalHiFTStream, CausalHiFTVocoder
from minmo_core.voice.token2wav import (
    FIXED,
    ChunkSchedule,
    FlowPrompt,
    Token2Wav,
    Token2WavStream,
)


class CausalToken2Wav(Token2Wav):
    """DiTFlowDecoder + CausalHiFTVocoder (CosyVoice 3): Token2Wav's whole-utterance
    rendering as it is, its own stream."""

    flow: DiTFlowDecoder
    vocoder: CausalHiFTVocoder

    def stream(
        self,
        prompt: FlowPrompt,
        generator: torch.Generator | None = None,
        schedule: ChunkSchedule | None = None,
        reencode: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> CausalToken2WavStream:
        """A stream in chunks of ``schedule`` (default: this Token2Wav's fixed size);
        ``reencode``: the release's flow scheme (re-run the group so far) instead of the
        incremental one."""
        schedule = schedule or ChunkSchedule((self.chunk_tokens,), f"fixed {self.chunk_tokens}")
        return CausalToken2WavStream(self, prompt, generator, schedule, reencode, clock)


class CausalToken2WavStream(Token2WavStream):
    """One reply rendered chunk by chunk through one vocoder stream."""

    def __init__(
        self,
        t2w: CausalToken2Wav,
        prompt: FlowPrompt,
        generator: torch.Generator | None,
        schedule: ChunkSchedule = FIXED,
        reencode: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(t2w, prompt, generator, schedule, reencode=reencode, clock=clock)
        self.vocoder: CausalHiFTStream | None = t2w.vocoder.stream()

    @property
    def _capped(self) -> bool:
        return True  # either way groups stay short: re-runs cost, kept chunks take memory

    @torch.inference_mode()
    def end_group(self) -> torch.Tensor:
        """The tokens so far end a sentence group: the flow renders them all and starts
        afresh for the next group; the vocoder runs on."""
        audio = torch.zeros(0)
        if self.offset < len(self.tokens):
            audio = self._render(len(self.tokens), finalize=True, last=False)
        self.earlier += len(self.tokens)
        self.tokens, self.offset, self.groups = [], 0, self.groups + 1
        self.flow = None if self.reencode else self._new_flow()
        return audio

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """Render every remaining token and the vocoder's held-back tail; the stream is
        finished afterwards."""
        if self.offset < len(self.tokens):
            return self._render(len(self.tokens), finalize=True)
        if self.vocoder is None:
            return torch.zeros(0)
        kept = self.vocoder.mel
        mel = kept[:, :, :0] if kept is not None else torch.zeros(1, 80, 0)
        tail = self.vocoder.push(mel, finalize=True)
        self.vocoder = None
        return self._emit(tail[0].float().cpu())

    def _render(self, upto: int, finalize: bool, last: bool | None = None) -> torch.Tensor:
        """Tokens up to ``upto`` -> audio; ``finalize``: the flow's group ends there;
        ``last`` (default: ``finalize``): so does the reply (the vocoder's tail too)."""
        last = finalize if last is None else last
        if self.vocoder is None:
            raise RuntimeError("this token2wav stream was flushed; start a new one")
        t2w, tick, count = self.t2w, self.clock(), upto - self.offset
        seen = self.tokens[: upto if finalize else upto + t2w.lookahead]
        mel = self._flow_mel(seen, finalize).to(t2w._vocoder_dtype)  # (1, 80, new frames)
        audio = self.vocoder.push(mel, finalize=last)
        if last:
            self.vocoder = None
        self.offset = upto
        self._rate = (self.clock() - tick) / count
        return self._emit(audio[0].float().cpu())


__all__ = ["CausalToken2Wav", "CausalToken2WavStream"]
