"""Feeding the voice-token LM: whole text, 5:15 bi-streaming, or MinMo semantic vectors.

Every path yields speech tokens in chunks of 15 as soon as each chunk exists.

Whole text (the release's ``inference`` layout), one sentence group at a time:

    [sos] [prompt text + text] [task_id] [prompt speech] -> s s s ... eos

Bi-streaming (the release's interleaved training layout): text arrives token by token from
the LLM; every 5 text vectors are followed by 15 speech tokens and a fill output, and when
the text ends the rest of it goes in with task_id and speech runs on to eos:

    [sos] [t0..t4] s0..s14 (fill) [t5..t9] s15..s29 (fill) ... [t20..t22] [task_id] s.. eos

A zero-shot voice prompt is interleaved the same way before decoding starts (prompt text,
then target text, paired with the prompt's speech tokens 5:15). MinMo's semantic vectors
take the text vectors' place, with the query vector right after sos (the release's
instruction slot).

One deliberate difference from the release's bi-streaming inference: when the text ends
right after a fill, the release feeds the block's last speech token a second time; here it
is not, so inference matches the training layout exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from minmo_core.errors import ConfigError
from minmo_core.voice.voice_lm import Sampler, VoiceTokenLM, masked

MAX_SENTENCE_TOKENS = 80  # whole-text mode synthesises at most this many text tokens at once
# bi-streaming restarts at the first sentence end after this many text tokens (short
# sentences stay together, as the whole-text path groups them), and at the latest after
# MAX_STREAM_TOKENS: the voice LM's cache is bounded by the prompt plus one group
MIN_STREAM_TOKENS = 20
MAX_STREAM_TOKENS = 2 * MAX_SENTENCE_TOKENS
_END = object()


@dataclass(frozen=True)
class LMPrompt:
    """What the LM sees before the text: a voice transcript or an instruction."""

    text_ids: list[int] = field(default_factory=list)  # ends with <|endofprompt|> for styles
    speech_tokens: list[int] = field(default_factory=list)  # zero-shot voice only
    query: torch.Tensor | None = None  # MinMo: (D,) semantic query after sos


@dataclass(frozen=True)
class SemanticStep:
    """One LLM output for MinMo's semantic path."""

    text_embedding: torch.Tensor  # (D_llm,) the LLM's input embedding of the sampled token
    hidden: torch.Tensor  # (D_llm,) the LLM's last hidden state that chose it
    text: str = ""  # the token's characters: where sentences end


Trace = list[tuple[str, int]]  # (kind, index) of every input position, for tests and debugging


def chunked(tokens: Iterable[int], size: int) -> Iterator[list[int]]:
    """Group a token stream into lists of ``size`` (the last may be shorter)."""
    chunk: list[int] = []
    for token in tokens:
        chunk.append(token)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def whole_text_tokens(
    lm: VoiceTokenLM,
    text_ids: list[int],
    prompt: LMPrompt,
    sampler: Sampler,
    trace: Trace | None = None,
) -> Iterator[int]:
    """The release's non-streaming layout: all the text first, then speech until eos.

    Between min_token_text_ratio and max_token_text_ratio speech tokens per text token.
    """
    cfg = lm.cfg
    pieces = [lm.sos]
    if prompt.query is not None:
        pieces.append(prompt.query[None].to(lm.sos))
    all_text = [*prompt.text_ids, *text_ids]
    if cfg.instruction_after_sos:
        _instruction_end(cfg, all_text)  # (the layout is the same; the token must be there)
    pieces += [lm.embed_text(all_text), lm.task_id, lm.embed_speech(prompt.speech_tokens)]
    if trace is not None:
        trace.append(("sos", 0))
        if prompt.query is not None:
            trace.append(("query", 0))
        trace += [("text", i) for i in range(len(all_text))] + [("task_id", 0)]
        trace += [("speech", i) for i in range(len(prompt.speech_tokens))]
    min_len = int(len(text_ids) * cfg.min_token_text_ratio)
    max_len = int(len(text_ids) * cfg.max_token_text_ratio)
    state = lm.decoder()
    x = torch.cat(pieces)
    out: list[int] = []
    for step in range(max_len):
        logits = state.feed(x)
        token = sampler(masked(logits, cfg.min_len_banned if step < min_len else ()), out)
        if token in cfg.stop_tokens:
            return
        out.append(token)
        if trace is not None:
            trace.append(("speech", len(prompt.speech_tokens) + len(out) - 1))
        yield token
        x = lm.embed_speech([token])


def interleaved_tokens(
    lm: VoiceTokenLM,
    text_vectors: Iterable[torch.Tensor],
    prompt: LMPrompt,
    sampler: Sampler,
    prompt_text_vectors: torch.Tensor | None = None,
    trace: Trace | None = None,
) -> Iterator[int]:
    """Bi-streaming: text vectors (n, D) arrive in pieces; speech follows 15 per 5 text.

    prompt_text_vectors: (p, D), the prompt's text in vector form (default: its ids
    embedded). Text positions in ``trace`` count the prompt's text first.
    """
    cfg = lm.cfg
    n_text, n_speech = cfg.mix_ratio
    fill, eos = cfg.fill_token, cfg.eos_token
    during_blocks = tuple(t for t in cfg.stop_tokens if t != fill)  # only speech or fill
    state = lm.decoder()
    pending: list[torch.Tensor] = [lm.sos]
    kinds: Trace = [("sos", 0)]
    if prompt.query is not None:
        pending.append(prompt.query[None].to(lm.sos))
        kinds.append(("query", 0))
    prompt_ids = list(prompt.text_ids)
    if cfg.instruction_after_sos and prompt_text_vectors is None:
        # CosyVoice 3: the instruction, through <|endofprompt|>, right after sos; only the
        # rest of the prompt (a voice's transcript) is interleaved with its speech
        cut = _instruction_end(cfg, prompt_ids) + 1
        pending.append(lm.embed_text(prompt_ids[:cut]))
        kinds.extend(("instruct", i) for i in range(cut))
        prompt_ids = prompt_ids[cut:]
    text = prompt_text_vectors if prompt_text_vectors is not None else lm.embed_text(prompt_ids)
    text_seen = 0  # text positions taken out of ``text`` so far
    prompt_speech = lm.embed_speech(prompt.speech_tokens)
    prompt_used = 0
    out: list[int] = []  # every output, fill included (the sampler's repetition window)
    n_spoken = 0  # speech tokens generated
    target_text = 0  # text vectors received (prompt excluded): bounds the speech length
    n_prompt = len(prompt.speech_tokens)
    next_fill = (-n_prompt) % n_speech if n_prompt else n_speech
    need_text = n_prompt == 0

    def take_text(count: int) -> None:
        nonlocal text, text_seen
        pending.append(text[:count])
        kinds.extend(("text", text_seen + i) for i in range(min(count, len(text))))
        text, text_seen = text[count:], text_seen + min(count, len(text))

    def emit(token: int) -> None:
        """Record a generated speech token; it is the next input."""
        nonlocal n_spoken
        out.append(token)
        n_spoken += 1
        if trace is not None:
            kinds.append(("speech", n_prompt + n_spoken - 1))
        pending.append(lm.embed_speech([token]))

    def feed() -> torch.Tensor:
        nonlocal pending
        if trace is not None:
            trace.extend(kinds)
        kinds.clear()
        logits = state.feed(torch.cat(pending))
        pending = []
        return logits

    for piece in text_vectors:
        text = torch.cat([text, piece.to(text)])
        target_text += piece.shape[0]
        while prompt_used < n_prompt and len(text) >= n_text:
            take_text(n_text)
            pending.append(prompt_speech[prompt_used : prompt_used + n_speech])
            kinds.extend(("speech", prompt_used + i) for i in range(len(pending[-1])))
            prompt_used += len(pending[-1])
        if prompt_used < n_prompt:
            continue
        while True:
            if need_text:
                if len(text) < n_text:
                    break
                take_text(n_text)
                need_text = False
            logits = feed()
            # a block's 15 speech tokens complete: fill, without sampling (as the release does)
            block_done = len(out) == next_fill
            token = fill if block_done else sampler(masked(logits, during_blocks), out)
            if token == fill:
                next_fill = len(out) + n_speech + 1
                out.append(fill)
                need_text = True
                continue
            emit(token)
            yield token

    take_text(len(text))
    pending.append(lm.task_id)
    kinds.append(("task_id", 0))
    if prompt_used < n_prompt:  # short text, long prompt: the rest of the prompt's speech
        pending.append(prompt_speech[prompt_used:])
        kinds.extend(("speech", i) for i in range(prompt_used, n_prompt))
    limit = int(max(target_text, 1) * cfg.max_token_text_ratio)
    while n_spoken < limit:
        token = sampler(masked(feed(), tuple(t for t in cfg.stop_tokens if t != eos)), out)
        if token == eos:
            return
        emit(token)
        yield token


def _instruction_end(cfg, ids: list[int]) -> int:
    """Where <|endofprompt|> is in ``ids``; CosyVoice 3 refuses a prompt without it."""
    try:
        return ids.index(cfg.endofprompt_text_id)
    except ValueError:
        raise ConfigError(
            "CosyVoice 3 needs <|endofprompt|> in its prompt (an instruction such as 'You are "
            "a helpful assistant.<|endofprompt|>' before the transcript or text)"
        ) from None


_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…\n])|(?<=[.])(?=\s)")
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")


def split_sentences(
    text: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int = MAX_SENTENCE_TOKENS
) -> list[list[int]]:
    """Text -> groups of whole sentences of at most ``max_tokens`` token ids each.

    A sentence longer than that is cut at clause punctuation, then, as a last resort,
    every ``max_tokens`` tokens.
    """

    def encode(piece: str) -> list[int]:
        return tokenizer(piece, add_special_tokens=False)["input_ids"]

    groups: list[list[int]] = []
    current: list[int] = []
    for sentence in (s for s in _SENTENCE_END.split(text) if s.strip()):
        ids = encode(sentence)
        if len(ids) > max_tokens:
            parts = [encode(c) for c in _CLAUSE_END.split(sentence) if c.strip()]
            pieces = [p[i : i + max_tokens] for p in parts for i in range(0, len(p), max_tokens)]
        else:
            pieces = [ids]
        for piece in pieces:
            if current and len(current) + len(piece) > max_tokens:
                groups.append(current)
                current = []
            current = current + piece
    if current:
        groups.append(current)
    return groups


_FIRM_END = re.compile(r"[。！？!?；;…]\s*$|\n")


def ends_sentence(piece: str, following: str | None) -> bool:
    """Whether text piece ``piece`` ends a sentence, ``following`` being the next piece
    (None: the text ended). A full stop counts only before a space, as in the whole-text
    splitter: "3.5" is not two sentences."""
    if _FIRM_END.search(piece):
        return True
    return piece.rstrip().endswith(".") and (following is None or following[:1].isspace())


def sentence_groups(
    ids: Iterable[int],
    piece: Callable[[int], str],
    min_tokens: int = MIN_STREAM_TOKENS,
    max_tokens: int = MAX_STREAM_TOKENS,
) -> Iterator[Iterator[int]]:
    """Text token ids arriving one at a time -> groups of whole sentences, each an iterator
    to drain before the next is asked for. A group ends at the first sentence end once it
    holds ``min_tokens``, or at ``max_tokens``. A full stop is judged by the token after it,
    read only then (no delay for other tokens)."""
    source = iter(ids)
    peeked: list[int] = []

    def pull() -> object:
        return peeked.pop() if peeked else next(source, _END)

    def group(first: int) -> Iterator[int]:
        current, count = first, 0
        while True:
            yield current
            count += 1
            if count >= max_tokens:
                return
            if count >= min_tokens:
                text = piece(current)
                if _FIRM_END.search(text):
                    return
                if text.rstrip().endswith("."):  # a full stop: the next token decides
                    following = pull()
                    if following is _END:
                        return
                    peeked.append(following)
                    if ends_sentence(text, piece(following)):
                        return
            current = pull()
            if current is _END:
                return

    while (first := pull()) is not _END:
        members = group(first)
        yield members
        for _ in members:  # a consumer that stopped early: the rest still belongs here
            pass


class SpeechTokenGenerator:
    """The one streaming API: LLM outputs (or text) in, chunks of 15 speech tokens out."""

    def __init__(
        self, lm: VoiceTokenLM, tokenizer: PreTrainedTokenizerBase, sampler: Sampler
    ) -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.sampler = sampler
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        """A text token's characters (cached: each id is decoded once)."""
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return text

    @property
    def chunk(self) -> int:
        return self.lm.cfg.chunk_tokens

    def prompt(self, text: str = "", speech_tokens: list[int] | None = None) -> LMPrompt:
        """An LM prompt from its text (transcript or instruction) and speech tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        speech = list(speech_tokens or [])
        bad = [t for t in speech if not 0 <= t < self.lm.cfg.speech_token_size]
        if bad:
            raise ConfigError(f"prompt speech token {bad[0]} is outside the codebook")
        return LMPrompt(ids, speech)

    @torch.inference_mode()
    def from_text(self, text: str, prompt: LMPrompt | None = None) -> Iterator[list[int]]:
        """Whole text at once, cut into sentence groups synthesised one after another."""
        if not text.strip():
            raise ConfigError("nothing to say: the text is empty")
        for group in self.from_text_groups(text, prompt):
            yield from group

    def from_text_groups(
        self, text: str, prompt: LMPrompt | None = None
    ) -> Iterator[Iterator[list[int]]]:
        """``from_text`` one sentence group at a time: each group's speech tokens in chunks
        of 15 (its last chunk may be shorter), so that a renderer can start afresh at each
        group and its cost stay bounded by a group's length."""
        if not text.strip():
            raise ConfigError("nothing to say: the text is empty")
        prompt = prompt or LMPrompt()
        for ids in split_sentences(text, self.tokenizer):
            yield self._group_chunks(ids, prompt)

    @torch.inference_mode()
    def _group_chunks(self, ids: list[int], prompt: LMPrompt) -> Iterator[list[int]]:
        yield from chunked(whole_text_tokens(self.lm, ids, prompt, self.sampler), self.chunk)

    @torch.inference_mode()
    def from_token_ids(
        self, ids: Iterable[int], prompt: LMPrompt | None = None
    ) -> Iterator[list[int]]:
        """Bi-streaming from text token ids arriving one at a time (composed mode).

        The voice LM restarts at sentence ends (``sentence_groups``), each group a fresh
        5:15 session carrying the prompt, as the whole-text path synthesises sentence
        groups: its cache, and so the cost of each speech token, stays bounded however
        long the reply. Each group's speech comes in chunks of 15 (its last may be
        shorter) followed by an empty chunk: a renderer may start afresh there
        (``Token2WavStream.end_group``); to anyone else it adds no token."""
        prompt = prompt or LMPrompt()
        groups = 0
        for group in sentence_groups(ids, self.piece):
            groups += 1
            vectors = (self.lm.embed_text([i]) for i in group)
            yield from chunked(
                interleaved_tokens(self.lm, vectors, prompt, self.sampler), self.chunk
            )
            yield []  # the group's speech is complete
        if not groups:  # no text at all: one empty session, as before the restarts
            yield from chunked(
                interleaved_tokens(self.lm, iter(()), prompt, self.sampler), self.chunk
            )

    def from_llm(
        self,
        events: Iterable[object],
        stop_ids: Iterable[int],
        prompt: LMPrompt | None = None,
    ) -> Iterator[list[int]]:
        """Composed mode: the LLM's stream events (anything with ``token_id``) as they come.

        The LLM's own end tokens (``stop_ids``, e.g. ``ChatLLM.stop_ids``) never reach the
        voice LM; the end of ``events`` is the end of the text.
        """
        stops = set(stop_ids)
        ids = (e.token_id for e in events if e.token_id not in stops)
        return self.from_token_ids(ids, prompt)

    @torch.inference_mode()
    def from_semantic(
        self,
        steps: Iterable[SemanticStep],
        projector: torch.nn.Module,
        user_embedding: torch.Tensor,
        first_hidden: torch.Tensor,
    ) -> Iterator[list[int]]:
        """MinMo's path: semantic vectors from the OutputProjector.

        The query is projector([user_embedding ; first_hidden]) (both (D_llm,)); each step
        becomes projector([text_embedding ; hidden]). The end of ``steps`` is the LLM's end
        of turn: task_id goes in and speech runs to end-of-speech. As on the text path, the
        voice LM restarts at sentence ends (judged by each step's ``text``), each group a
        fresh session after the same query, and an empty chunk follows each group.
        """
        query = projector(torch.cat([user_embedding, first_hidden], -1))
        texts: dict[int, str] = {}
        pending: dict[int, SemanticStep] = {}

        def numbered() -> Iterator[int]:
            for i, step in enumerate(steps):
                texts[i], pending[i] = step.text, step
                yield i

        def session(indices: Iterable[int]) -> Iterator[list[int]]:
            vectors = (
                projector(torch.cat([s.text_embedding, s.hidden], -1))[None]
                for s in (pending.pop(i) for i in indices)
            )
            tokens = interleaved_tokens(
                self.lm, vectors, LMPrompt(query=query), self.sampler, self.lm.sos[:0]
            )
            return chunked(tokens, self.chunk)

        groups = 0
        for group in sentence_groups(numbered(), texts.__getitem__):
            groups += 1
            yield from session(group)
            yield []  # the group's speech is complete
            for i in [i for i in texts if i not in pending]:  # spoken (one may be peeked)
                del texts[i]
        if not groups:
            yield from session(())
