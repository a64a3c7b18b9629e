"""Speech tokens -> 24 kHz audio, whole or streamed 15 tokens at a time.

Streaming follows the release's token2wav, with MinMo's 15-token chunks:

    tokens so far + 3 look-ahead ──► FlowStream (chunk-masked attention; complete chunks
        kept, only the open one computed) ──► new mel frames
    [last 8 mel frames of the previous chunk ; new mel] ──► HiFT (excitation continued from
    the previous chunk's last 8 x 480 source samples) ──► audio
    the first 3840 samples cross-fade (Hann) into the previous chunk's held-back tail;
    the last 3840 are held back for the next chunk; ``flush`` renders the rest.

So every join is a cross-fade of identical-length overlaps, and the vocoder's sine source
keeps its phase across chunks: no clicks.

At the end of a sentence group (``end_group``) the flow renders the group's last tokens and
starts afresh for the next group, as the voice LM does, while the vocoder runs on: the cost
and the memory of a chunk stay bounded by one group, and the join is cross-faded like any
other. ``reencode=True`` keeps the release's scheme (every chunk re-runs the flow over all
tokens so far) for comparison; its frames are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minmo_core.voice.flow import FlowDecoder, FlowStream
from minmo_core.voice.hift import HiFTVocoder
from minmo_core.voice.voice_prompt import VoiceProfile


@dataclass(frozen=True)
class ChunkSchedule:
    """How many speech tokens each chunk renders. MinMo's is a fixed 15 (0.6 s: the first
    packet as early as it can be); a growing one (15, then 25, then 50) renders a long reply
    in fewer, larger chunks once playback has a lead, which costs less in all (each chunk
    has a fixed share: the open flow chunk, the vocoder's cache, the calls themselves).

    A stream moves to the next size only when the audio it has ready beyond what has been
    played covers LEAD_MARGIN times that bigger chunk's predicted compute (from the last
    chunk's cost per token), and back down when the lead no longer covers the current
    size: a slow machine stays at 15."""

    hops: tuple[int, ...] = (15,)
    name: str = "fixed 15"

    def __post_init__(self) -> None:
        if not self.hops or any(h < 1 for h in self.hops):
            raise ValueError(f"chunk hops must be positive token counts, not {self.hops}")


FIXED = ChunkSchedule((15,), "fixed 15")
GROWING = ChunkSchedule((15, 25, 50), "15, 25, then 50")
SCHEDULES = {"fixed": FIXED, "growing": GROWING}

LEAD_MARGIN = 2.0  # a bigger chunk once the lead covers twice its predicted compute
SAMPLE_RATE = 24000
MEL_CACHE = 8  # mel frames repeated at the start of the next chunk
# the flow starts afresh at the latest after this many tokens (20 s) of one group: what it
# keeps per token is large (keys and values of every attention layer at every Euler step);
# the voice LM's sentence groups (at most 160 text tokens) rarely reach it
MAX_GROUP_TOKENS = 500
HOP = 480  # audio samples per mel frame at 24 kHz
SOURCE_CACHE = MEL_CACHE * HOP  # 3840 samples of excitation carried over, and of cross-fade


@dataclass(frozen=True)
class FlowPrompt:
    """What the flow needs of a voice: its tokens, their mel and the speaker embedding."""

    tokens: torch.Tensor  # (1, P) int64
    mel: torch.Tensor  # (1, 2P, 80)
    embedding: torch.Tensor  # (1, 192)

    @classmethod
    def from_voice(cls, voice: VoiceProfile | None, embed_dim: int = 192) -> FlowPrompt:
        """A saved voice; with none, an empty prompt and a zero speaker embedding."""
        if voice is None or voice.prompt_mel is None or voice.speaker_embedding is None:
            embedding = (
                voice.speaker_embedding[None]
                if voice is not None and voice.speaker_embedding is not None
                else torch.zeros(1, embed_dim)
            )
            return cls(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 80), embedding)
        return cls(voice.speech_tokens[None], voice.prompt_mel[None], voice.speaker_embedding[None])


class Token2Wav:
    """FlowDecoder + HiFT vocoder."""

    def __init__(self, flow: FlowDecoder, vocoder: HiFTVocoder, chunk_tokens: int = 15) -> None:
        self.flow = flow
        self.vocoder = vocoder
        self.chunk_tokens = chunk_tokens
        self.lookahead = flow.cfg.pre_lookahead_len
        # Hann, not the release's Hamming: its halves run from exactly 0 to 1 and sum to 1,
        # where Hamming's start at 0.08 and leave a small step at both ends of every fade
        self.window = torch.hann_window(2 * SOURCE_CACHE, periodic=False)

    @torch.inference_mode()
    def synthesize(
        self, tokens: list[int], prompt: FlowPrompt, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """All tokens at once (full attention) -> audio (N,) float32, N = 2 x 480 x tokens."""
        mel = self.flow.inference(
            torch.tensor([tokens]), prompt.tokens, prompt.mel, prompt.embedding, False, True
        )
        audio, _ = self.vocoder.inference(mel.to(self._vocoder_dtype), generator=generator)
        return audio[0].float().cpu()

    def stream(
        self,
        prompt: FlowPrompt,
        generator: torch.Generator | None = None,
        schedule: ChunkSchedule | None = None,
        reencode: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> Token2WavStream:
        """A stream in chunks of ``schedule`` (default: this Token2Wav's fixed size);
        ``reencode``: the release's flow scheme instead of the incremental one; ``clock``
        (seconds) measures the lead of the audio over its playback."""
        schedule = schedule or ChunkSchedule((self.chunk_tokens,), f"fixed {self.chunk_tokens}")
        return Token2WavStream(self, prompt, generator, schedule, reencode, clock)

    @property
    def _vocoder_dtype(self) -> torch.dtype:
        return next(self.vocoder.parameters()).dtype


class Token2WavStream:
    """One utterance rendered chunk by chunk: ``push`` tokens as they come, then ``flush``."""

    def __init__(
        self,
        t2w: Token2Wav,
        prompt: FlowPrompt,
        generator: torch.Generator | None,
        schedule: ChunkSchedule = FIXED,
        reencode: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.t2w = t2w
        self.prompt = prompt
        self.generator = generator
        self.schedule = schedule
        self.reencode = reencode
        self.groups = 0  # sentence groups ended
        self.earlier = 0  # tokens of the ended groups (all rendered)
        self.tokens: list[int] = []  # the current group's
        self.offset = 0  # tokens of the group whose audio has been rendered (or is held back)
        self.flow = None if reencode else self._new_flow()
        self.clock = clock
        self.level = 0  # the schedule's size in use: hops[level]
        self._rate: float | None = None  # the last chunk's compute seconds per token
        self._played_out_at: float | None = None  # when playback will have played it all
        self.cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # mel, src, wav
        self.chunk_joins: list[int] = []  # sample positions where one chunk's audio meets the next
        self._emitted = 0

    @torch.inference_mode()
    def push(self, tokens: list[int]) -> torch.Tensor:
        """Add speech tokens; returns the audio that is ready (possibly empty), (n,) float32.

        A group reaching MAX_GROUP_TOKENS ends there (the release's scheme keeps no state
        per token and runs on)."""
        out = []
        while tokens:
            room = MAX_GROUP_TOKENS - len(self.tokens) if self._capped else len(tokens)
            if room <= 0:
                out.append(self.end_group())
                continue
            self.tokens += tokens[:room]
            tokens = tokens[room:]
            ahead = self.t2w.lookahead
            while (
                len(self.tokens) - self.offset >= (step := self.schedule.hops[self.level]) + ahead
            ):
                out.append(self._render(self.offset + step, finalize=False))
        return torch.cat(out) if out else torch.zeros(0)

    @torch.inference_mode()
    def end_group(self) -> torch.Tensor:
        """The tokens so far end a sentence group: render them all, and start the flow
        afresh for the next group's tokens (the vocoder's caches carry on)."""
        audio = torch.zeros(0)
        if self.offset < len(self.tokens):
            # a first group too short to leave a vocoder cache (under 8 frames) is given out
            # whole, and the next group starts as a fresh stream would
            ratio = self.t2w.flow.cfg.token_mel_ratio
            tiny = self.cache is None and len(self.tokens) * ratio < MEL_CACHE
            audio = self._render(len(self.tokens), finalize=True, last=tiny)
        self.earlier += len(self.tokens)
        self.tokens, self.offset, self.groups = [], 0, self.groups + 1
        self.flow = None if self.reencode else self._new_flow()
        return audio

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """Render every remaining token; the stream is finished afterwards."""
        if self.offset >= len(self.tokens):
            tail = self.cache[2][0] if self.cache is not None else torch.zeros(0)
            self.cache = None
            return self._emit(tail.float().cpu())
        return self._render(len(self.tokens), finalize=True)

    @property
    def _capped(self) -> bool:
        """Whether a group ends at MAX_GROUP_TOKENS (the incremental flow keeps state per
        token; the release's re-encoding scheme does not)."""
        return self.flow is not None

    def _new_flow(self) -> FlowStream:
        return self.t2w.flow.stream(self.prompt.tokens, self.prompt.mel, self.prompt.embedding)

    def _flow_mel(self, seen: list[int], finalize: bool) -> torch.Tensor:
        """The flow's frames from the first unrendered token on: (1, 80, new frames)."""
        ratio = self.t2w.flow.cfg.token_mel_ratio
        if self.flow is not None:
            mel, first = self.flow.mel(torch.tensor([seen]), finalize)
            return mel[:, :, self.offset * ratio - first :]
        mel = self.t2w.flow.inference(
            torch.tensor([seen]),
            self.prompt.tokens,
            self.prompt.mel,
            self.prompt.embedding,
            streaming=True,
            finalize=finalize,
        )
        return mel[:, :, self.offset * ratio :]

    def _render(self, upto: int, finalize: bool, last: bool | None = None) -> torch.Tensor:
        """Tokens up to ``upto`` -> audio; ``finalize``: the flow's utterance ends there;
        ``last`` (default: ``finalize``): so does the audio (nothing held back)."""
        last = finalize if last is None else last
        t2w, tick, count = self.t2w, self.clock(), upto - self.offset
        seen = self.tokens[: upto if finalize else upto + t2w.lookahead]
        mel = self._flow_mel(seen, finalize).to(t2w._vocoder_dtype)
        cache_source = None
        if self.cache is not None:
            mel = torch.cat([self.cache[0], mel], dim=2)
            cache_source = self.cache[1]
        audio, source = t2w.vocoder.inference(mel, cache_source, self.generator)  # (1, n)
        if self.cache is not None:  # cross-fade into the previous chunk's held-back tail
            fade_in, fade_out = t2w.window[:SOURCE_CACHE], t2w.window[SOURCE_CACHE:]
            head = audio[:, :SOURCE_CACHE] * fade_in.to(audio) + self.cache[2] * fade_out.to(audio)
            audio = torch.cat([head, audio[:, SOURCE_CACHE:]], dim=1)
        self.offset = upto
        self._rate = (self.clock() - tick) / count
        if last:
            self.cache = None
            return self._emit(audio[0].float().cpu())
        self.cache = (
            mel[:, :, -MEL_CACHE:],
            source[:, :, -SOURCE_CACHE:],
            audio[:, -SOURCE_CACHE:],
        )
        return self._emit(audio[0, :-SOURCE_CACHE].float().cpu())

    @property
    def rendered(self) -> int:
        """Speech tokens whose audio has been given out or is held back, all groups."""
        return self.earlier + self.offset

    def lead(self) -> float:
        """Seconds of audio given out and not yet played, if playback starts with each
        piece as soon as it is given out (after an underrun, it waits for the next)."""
        if self._played_out_at is None:
            return 0.0
        return max(0.0, self._played_out_at - self.clock())

    def _choose_size(self) -> None:
        hops, rate = self.schedule.hops, self._rate or 0.0
        lead = self.lead()
        if self.level + 1 < len(hops) and lead >= LEAD_MARGIN * rate * hops[self.level + 1]:
            self.level += 1
        elif self.level > 0 and lead < rate * hops[self.level]:
            self.level -= 1

    def _emit(self, audio: torch.Tensor) -> torch.Tensor:
        if self._emitted and audio.numel():
            self.chunk_joins.append(self._emitted)
        if audio.numel():
            now = self.clock()
            start = now if self._played_out_at is None else max(now, self._played_out_at)
            self._played_out_at = start + audio.numel() / SAMPLE_RATE
        self._emitted += audio.numel()
        self._choose_size()
        return audio
