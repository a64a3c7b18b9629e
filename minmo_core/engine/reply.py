"""One reply, streamed end to end in composed mode:

    LLM text deltas ─► screen (AssistantTextDelta)
         └─► SpeakableStream ─► the voice LM's tokenizer ─► 5 text : 15 speech interleave
                 ─► chunks of 15 speech tokens ─► Token2WavStream ─► AssistantAudio
                    (at each sentence group's end the voice LM and the flow start afresh)

Everything is pulled by the voice path (MinMo's order: 5 text tokens, then 15 speech tokens,
then their audio), so the first audio costs 5·d_llm + 15·d_lm + 15·d_syn. A stop request is
checked before every LLM token and every speech chunk: generation ends within one chunk.
Each audio piece carries the range of the screen text the voice LM had read when it was
made, which maps played samples back to heard text (``heard_text``).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from minmo_core.engine.events import AssistantAudio, AssistantTextDelta, EngineEvent
from minmo_core.engine.speakable import SpeakableStream
from minmo_core.errors import ConfigError
from minmo_core.llm.adapters import MinMoAdapters
from minmo_core.llm.chat import ChatLLM
from minmo_core.voice.speech_tokens import SemanticStep
from minmo_core.voice.styles import VoiceStyle, instruction_is_empty
from minmo_core.voice.token2wav import SCHEDULES, FlowPrompt
from minmo_core.voice.tts import SpeechSynthesizer
from minmo_core.voice.voice_prompt import InstructPrompt, VoiceProfile, ZeroShotPrompt, lm_prompt

_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class AudioSpan:
    start_sample: int
    samples: int
    text_span: tuple[int, int]  # screen-text characters [start, end)


@dataclass
class ReplyOutcome:
    text: str = ""  # everything the LLM wrote (the screen's text)
    spans: list[AudioSpan] = field(default_factory=list)
    samples: int = 0  # audio samples produced
    stopped: bool = False  # cut short by a stop request
    llm_tokens: int = 0
    speech_tokens: int = 0
    llm_s: float = 0.0  # compute inside the LLM
    lm_s: float = 0.0  # compute inside the voice LM
    syn_s: float = 0.0  # compute inside token2wav
    first_text_s: float | None = None  # from the start of the reply
    first_speech_token_s: float | None = None
    first_audio_s: float | None = None


@dataclass(frozen=True)
class VoiceSettings:
    style: VoiceStyle = field(default_factory=VoiceStyle)
    voice: VoiceProfile | None = None
    wording: str = "en"  # the style instruction's language
    chunk_schedule: str = "fixed"  # token2wav's chunks: "fixed" (MinMo's 15) or "growing"

    def __post_init__(self) -> None:
        if self.chunk_schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown chunk schedule {self.chunk_schedule!r}; choose one of: "
                + ", ".join(SCHEDULES)
            )


@dataclass
class AlignedTurn:
    """What aligned mode adds to a reply: MinMo's adapters, and the user's turn as the LLM
    sees it (the input projector's embeddings of their speech; None for a typed turn)."""

    adapters: MinMoAdapters
    speech: torch.Tensor | None  # (T, d_llm) in place of the user's words
    user_embedding: torch.Tensor  # (d_llm,) the output projector's view of the user's input


def run_reply(
    llm: ChatLLM,
    voice: SpeechSynthesizer | None,
    messages: list[dict[str, str]],
    emit: Callable[[EngineEvent], None],
    turn_id: int,
    stop: threading.Event,
    settings: VoiceSettings,
    seed: int | None = None,
    aligned: AlignedTurn | None = None,
    hold: Callable[[], None] | None = None,
) -> ReplyOutcome:
    """Generate, show and speak one reply to ``messages``; returns what was made.

    Composed mode (``aligned`` None): the reply's speakable text, re-tokenised for the voice
    LM, drives it. Aligned mode: the LLM reads the user's speech embeddings, and each of its
    tokens becomes a semantic vector (output projector over the token's embedding and the
    hidden state that chose it) for the voice LM. ``hold`` is called before each chunk (a
    tentative barge-in waits there).
    """
    out = ReplyOutcome()
    started = time.perf_counter()
    consumed = 0  # screen characters the voice LM has read
    stop_ids = getattr(llm, "stop_ids", set())

    def llm_events() -> Iterator:
        """The LLM's tokens as they come, timed, with their text shown on the way."""
        events = llm.stream(
            messages,
            stop=stop.is_set,
            seed=seed,
            **(
                {"prefix_embeds": aligned.speech, "return_hidden": True}
                if aligned is not None
                else {}
            ),
        )
        while True:
            tick = time.perf_counter()
            event = next(events, None)
            out.llm_s += time.perf_counter() - tick
            if event is None:
                return
            out.llm_tokens += 1
            if event.text:
                if out.first_text_s is None:
                    out.first_text_s = time.perf_counter() - started
                out.text += event.text
                emit(AssistantTextDelta(turn_id=turn_id, text=event.text))
            yield event

    def text_ids() -> Iterator[int]:
        """The LLM's reply as voice-LM text ids (its speakable form, piece by piece)."""
        speakable = SpeakableStream()
        tokenizer = voice.tokens.tokenizer if voice is not None else None
        for event in llm_events():
            if tokenizer is None or not event.text:
                continue
            for piece in speakable.push(event.text):
                yield from _piece_ids(tokenizer, piece.text, piece.display_end)
        if tokenizer is not None and not stop.is_set():
            for piece in speakable.finish():
                yield from _piece_ids(tokenizer, piece.text, piece.display_end)

    def _piece_ids(tokenizer, text: str, display_end: int) -> Iterator[int]:
        """One speakable piece as voice-LM text ids (pieces carry their leading space)."""
        nonlocal consumed
        if not text:
            return
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            consumed = display_end  # the voice LM is reading this piece
            yield token

    def semantic_steps() -> Iterator[SemanticStep]:
        """Aligned mode: each LLM token (its end token excluded) as the voice LM's input."""
        nonlocal consumed
        for event in llm_events():
            if event.token_id in stop_ids:
                continue
            consumed = len(out.text)
            yield SemanticStep(llm.embed([event.token_id])[0], event.hidden, event.text)

    if voice is None:
        for _ in llm_events():
            pass
        out.stopped = stop.is_set()
        return out

    if aligned is None or aligned.adapters.output_projector is None:  # the text drives it
        chunks = _speech_chunks(voice, text_ids(), settings)
    else:
        chunks = _semantic_chunks(voice, semantic_steps(), aligned)
    schedule = SCHEDULES[settings.chunk_schedule]
    stream = voice.t2w.stream(FlowPrompt.from_voice(settings.voice), _generator(seed), schedule)
    span_start = 0
    try:
        while not stop.is_set():
            if hold is not None:
                hold()
                if stop.is_set():
                    break
            tick = time.perf_counter()
            llm_before = out.llm_s
            chunk = next(chunks, None)
            out.lm_s += time.perf_counter() - tick - (out.llm_s - llm_before)
            if chunk is None or stop.is_set():
                break
            if out.first_speech_token_s is None and chunk:
                out.first_speech_token_s = time.perf_counter() - started
            out.speech_tokens += len(chunk)
            tick = time.perf_counter()
            audio = stream.push(chunk) if chunk else stream.end_group()  # empty: group ends
            out.syn_s += time.perf_counter() - tick
            span_start = _emit_audio(out, audio, (span_start, consumed), emit, turn_id, started)
        if not stop.is_set():
            tick = time.perf_counter()
            tail = stream.flush()
            out.syn_s += time.perf_counter() - tick
            _emit_audio(out, tail, (span_start, len(out.text)), emit, turn_id, started)
    finally:
        chunks.close()  # ends the voice LM and, through it, the LLM's stream
    out.stopped = stop.is_set()
    return out


def _semantic_chunks(
    voice: SpeechSynthesizer, steps: Iterator[SemanticStep], aligned: AlignedTurn
) -> Iterator[list[int]]:
    """MinMo's voice path: the output projector's vectors into the voice LM. The query is
    [user embedding ; the hidden state that chose the first token]."""
    projector = aligned.adapters.output_projector
    dtype = projector.proj.weight.dtype

    def projected() -> Iterator[SemanticStep]:
        for step in steps:
            yield SemanticStep(step.text_embedding.to(dtype), step.hidden.to(dtype), step.text)

    vectors = projected()
    try:
        first = next(vectors, None)
        if first is None:
            return
        user = aligned.user_embedding.to(first.hidden)
        yield from voice.tokens.from_semantic(
            itertools.chain([first], vectors), projector, user, first.hidden
        )
    finally:
        vectors.close()


def _speech_chunks(
    voice: SpeechSynthesizer, ids: Iterator[int], settings: VoiceSettings
) -> Iterator[list[int]]:
    style = settings.style
    if not instruction_is_empty(style):
        prompt = InstructPrompt(style, settings.voice, settings.wording)
    else:
        prompt = ZeroShotPrompt(settings.voice) if settings.voice is not None else None
    return voice.tokens.from_token_ids(
        ids, voice.tokens.prompt(*lm_prompt(prompt, voice.cosyvoice))
    )


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _emit_audio(
    out: ReplyOutcome,
    audio: torch.Tensor,
    span: tuple[int, int],
    emit: Callable[[EngineEvent], None],
    turn_id: int,
    started: float,
) -> int:
    """Emit a non-empty audio piece with its text span; returns where the next span starts."""
    if not audio.numel():
        return span[0]
    if out.first_audio_s is None:
        out.first_audio_s = time.perf_counter() - started
    start, end = span[0], max(span)
    samples = audio.numel()
    out.spans.append(AudioSpan(out.samples, samples, (start, end)))
    emit(
        AssistantAudio(
            turn_id=turn_id,
            audio=audio.numpy().astype("float32", copy=False),
            start_sample=out.samples,
            text_span=(start, end),
        )
    )
    out.samples += samples
    return end


def heard_text(text: str, spans: list[AudioSpan], played: int) -> str:
    """The part of ``text`` the user heard after ``played`` samples, cut at a word boundary.

    Fully played pieces count whole; the piece playing when it stopped counts in proportion
    to how much of it was played.
    """
    end = 0
    for span in spans:
        a, b = span.text_span
        if played >= span.start_sample + span.samples:
            end = b
            continue
        if played > span.start_sample:
            end = a + int((b - a) * (played - span.start_sample) / span.samples)
        break
    if end >= len(text):
        return text
    cut = text[:end]
    if cut and not text[end].isspace() and not _CJK.match(text[end]):
        space = max(cut.rfind(" "), cut.rfind("\n"))
        cut = cut[:space] if space >= 0 else ""
    return cut.rstrip()
