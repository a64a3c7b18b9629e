"""Speech tokens -> 24 kHz audio, whole or streamed 15 tokens at a time.

Streaming follows the release's token2wav, with MinMo's 15-token chunks:

    tokens so far + 3 look-ahead ──► FlowDecoder (chunk-masked attention) ──► new mel frames
    [last 8 mel frames of the previous chunk ; new mel] ──► HiFT (excitation continued from
    the previous chunk's last 8 x 480 source samples) ──► audio
    the first 3840 samples cross-fade (Hann) into the previous chunk's held-back tail;
    the last 3840 are held back for the next chunk; ``flush`` renders the rest.

So every join is a cross-fade of identical-length overlaps, and the vocoder's sine source
keeps its phase across chunks: no clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minmo_core.voice.flow import FlowDecoder
from minmo_core.voice.hift import HiFTVocoder
from minmo_core.voice.voice_prompt import VoiceProfile


@dataclass(frozen=True)
class ChunkSchedule:
    """How many speech tokens each chunk renders: ``hops[i]`` for chunk i, the last one
    repeating. MinMo's is a fixed 15 (0.6 s: the first packet as early as it can be); a
    growing one (15, then 25, then 50) renders a long reply in fewer, larger chunks once
    playback has the first ones to play, which costs less in all where each chunk
    re-encodes what came before."""

    hops: tuple[int, ...] = (15,)
    name: str = "fixed 15"

    def __post_init__(self) -> None:
        if not self.hops or any(h < 1 for h in self.hops):
            raise ValueError(f"chunk hops must be positive token counts, not {self.hops}")

    def size(self, index: int) -> int:
        return self.hops[min(index, len(self.hops) - 1)]


FIXED = ChunkSchedule((15,), "fixed 15")
GROWING = ChunkSchedule((15, 25, 50), "15, 25, then 50")
SCHEDULES = {"fixed": FIXED, "growing": GROWING}

MEL_CACHE = 8  # mel frames repeated at the start of the next chunk
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
    ) -> Token2WavStream:
        """A stream in chunks of ``schedule`` (default: this Token2Wav's fixed size)."""
        schedule = schedule or ChunkSchedule((self.chunk_tokens,), f"fixed {self.chunk_tokens}")
        return Token2WavStream(self, prompt, generator, schedule)

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
    ) -> None:
        self.t2w = t2w
        self.prompt = prompt
        self.generator = generator
        self.schedule = schedule
        self.chunks = 0  # chunks rendered
        self.tokens: list[int] = []
        self.offset = 0  # tokens whose audio has been rendered (or is held back)
        self.cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # mel, src, wav
        self.chunk_joins: list[int] = []  # sample positions where one chunk's audio meets the next
        self._emitted = 0

    @torch.inference_mode()
    def push(self, tokens: list[int]) -> torch.Tensor:
        """Add speech tokens; returns the audio that is ready (possibly empty), (n,) float32."""
        self.tokens += tokens
        out = []
        ahead = self.t2w.lookahead
        while len(self.tokens) - self.offset >= (step := self.schedule.size(self.chunks)) + ahead:
            out.append(self._render(self.offset + step, finalize=False))
        return torch.cat(out) if out else torch.zeros(0)

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """Render every remaining token; the stream is finished afterwards."""
        if self.offset >= len(self.tokens):
            tail = self.cache[2][0] if self.cache is not None else torch.zeros(0)
            self.cache = None
            return self._emit(tail.float().cpu())
        return self._render(len(self.tokens), finalize=True)

    def _render(self, upto: int, finalize: bool) -> torch.Tensor:
        t2w, ratio = self.t2w, self.t2w.flow.cfg.token_mel_ratio
        seen = self.tokens[: upto if finalize else upto + t2w.lookahead]
        mel = t2w.flow.inference(
            torch.tensor([seen]),
            self.prompt.tokens,
            self.prompt.mel,
            self.prompt.embedding,
            streaming=True,
            finalize=finalize,
        )[:, :, self.offset * ratio :]  # (1, 80, new frames)
        mel = mel.to(t2w._vocoder_dtype)
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
        self.chunks += 1
        if finalize:
            self.cache = None
            return self._emit(audio[0].float().cpu())
        self.cache = (
            mel[:, :, -MEL_CACHE:],
            source[:, :, -SOURCE_CACHE:],
            audio[:, -SOURCE_CACHE:],
        )
        return self._emit(audio[0, :-SOURCE_CACHE].float().cpu())

    def _emit(self, audio: torch.Tensor) -> torch.Tensor:
        if self._emitted and audio.numel():
            self.chunk_joins.append(self._emitted)
        self._emitted += audio.numel()
        return audio
