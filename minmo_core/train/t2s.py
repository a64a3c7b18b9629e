"""Text-to-speech alignment (t2s): the output projector learns to drive the voice LM from
the LLM's semantic vectors, with the composed path as a free teacher.

For each example (a user's words and the assistant's reply text):

* the teacher is composed mode: the voice LM reads the reply's text ids (its own tokenizer)
  in the 5:15 bi-streaming layout and speaks greedily; those speech tokens are the targets
  (or the manifest's ``response_speech_tokens`` where it gives them);
* the student is MinMo's semantic path as ``reply.py`` runs it for a typed turn: the LLM,
  teacher-forced on the reply, gives for each reply token its input embedding and the hidden
  state that chose it; the output projector maps [embedding ; hidden] to the voice LM's text
  positions, and [user embedding ; first hidden] to the query (the user embedding is the mean
  of the user's words' input embeddings, as ``ConversationEngine._aligned_text`` takes it).

The training sequence is laid out by the inference code itself: ``interleaved_tokens`` runs
over a recording stand-in for the voice LM's decoder and a sampler that returns the targets
in turn, so every input position (sos, query, text blocks, speech, fills, task id) and every
predicted position is exactly where generation puts them. One forward pass of the voice LM
over that sequence then scores the targets (and the end of speech). Each reply is one
session, as one sentence group is at inference.

Evaluation: the share of the teacher's speech tokens that the semantic path predicts
(arg-max, teacher-forced) on held-out replies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minmo_core.llm.projectors import semantic_query
from minmo_core.train.manifest import Example
from minmo_core.train.models import TrainingModels
from minmo_core.voice.speech_tokens import LMPrompt, interleaved_tokens
from minmo_core.voice.voice_lm import greedy_sampler


@dataclass(frozen=True)
class SemanticInputs:
    """What the output projector reads for one reply (float32 on the CPU, no graph)."""

    user: torch.Tensor  # (D_llm,) mean input embedding of the user's words
    embeddings: torch.Tensor  # (n, D_llm) input embeddings of the reply's tokens
    hidden: torch.Tensor  # (n, D_llm) the hidden states that chose them


class _Targets(Exception):
    """The targets ran out inside a 15-token block: the recorded layout ends there."""


class _Recording:
    """Stands in for ``VoiceTokenLM.decoder()``: keeps what is fed, predicts nothing."""

    def __init__(self, lm) -> None:
        self.inputs: list[torch.Tensor] = []
        self.length = 0
        self.n_out = lm.llm_decoder.out_features
        self.device = lm.sos.device

    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        self.inputs.append(embeds)
        self.length += embeds.shape[0]
        return torch.zeros(self.n_out, device=self.device)


class _RecordingLM:
    """The voice LM for ``interleaved_tokens``, with a recording decoder."""

    def __init__(self, lm) -> None:
        self.lm = lm
        self.state = _Recording(lm)

    def __getattr__(self, name: str):
        return getattr(self.lm, name)

    def decoder(self) -> _Recording:
        return self.state


def forced_layout(
    lm, vectors: Sequence[torch.Tensor], query: torch.Tensor | None, targets: Sequence[int]
) -> tuple[torch.Tensor, list[int], list[int]]:
    """The voice LM's input sequence when it is fed ``vectors`` (each (1, D)) and produces
    ``targets`` then end-of-speech, as generation lays it out.

    returns : (torch.Tensor, shape = (n_positions, D), the inputs (graph kept),
               list of the positions whose prediction is scored, list of their tokens)
    """
    recorder = _RecordingLM(lm)
    positions: list[int] = []
    labels: list[int] = []
    remaining = list(targets)
    eos = lm.cfg.eos_token
    blocks = True  # before the task id, the end of speech cannot be predicted

    def sampler(logits: torch.Tensor, decoded: list[int]) -> int:
        nonlocal blocks
        if not remaining:
            if blocks:
                raise _Targets
            token = eos
        else:
            token = remaining.pop(0)
        positions.append(recorder.state.length - 1)
        labels.append(token)
        return token

    def text() -> Iterator[torch.Tensor]:
        nonlocal blocks
        yield from vectors
        blocks = False

    try:
        for _ in interleaved_tokens(recorder, text(), LMPrompt(query=query), sampler):
            pass
    except _Targets:
        pass
    return torch.cat(recorder.state.inputs), positions, labels


@torch.no_grad()
def semantic_inputs(models: TrainingModels, example: Example) -> SemanticInputs:
    """The LLM's view of the reply, teacher-forced after the user's words (a typed turn)."""
    llm = models.llm
    prompt = llm.encode(example.transcript)
    reply = llm.tokenizer(example.response or "", add_special_tokens=False)["input_ids"]
    if not reply:
        raise ValueError(f"{example.audio}: the reply is empty")
    embeds = llm.embed([*prompt, *reply])  # (P + n, D)
    hidden = llm.model.base_model(inputs_embeds=embeds[None]).last_hidden_state[0]
    words = llm.tokenizer(example.transcript, add_special_tokens=False)["input_ids"] or [0]
    return SemanticInputs(
        llm.embed(words).float().mean(0).cpu(),
        embeds[len(prompt) :].float().cpu(),
        hidden[len(prompt) - 1 : -1].float().cpu(),
    )


@torch.no_grad()
def teacher_tokens(models: TrainingModels, example: Example) -> list[int]:
    """The composed path's greedy speech tokens for the reply (or the manifest's own)."""
    if example.response_speech_tokens:
        return list(example.response_speech_tokens)
    tokens = models.voice
    ids = tokens.tokenizer(example.response or "", add_special_tokens=False)["input_ids"]
    vectors = (tokens.lm.embed_text([i]) for i in ids)
    return list(interleaved_tokens(tokens.lm, vectors, LMPrompt(), greedy_sampler))


def student_layout(models: TrainingModels, inputs: SemanticInputs, targets: Sequence[int]):
    """The semantic path's voice-LM inputs for one reply (graph through the projector)."""
    projector = models.adapters.output_projector
    lm = models.voice.lm
    dtype, device = projector.proj.weight.dtype, lm.sos.device
    embeddings = inputs.embeddings.to(device, dtype)
    hidden = inputs.hidden.to(device, dtype)
    query = projector(semantic_query(inputs.user.to(device, dtype), hidden[0]))
    vectors = projector(torch.cat([embeddings, hidden], -1)).to(lm.sos.dtype)  # (n, D_voice)
    return forced_layout(lm, [v[None] for v in vectors], query.to(lm.sos.dtype), targets)


def scored_logits(models: TrainingModels, layouts) -> tuple[torch.Tensor, torch.Tensor]:
    """One padded forward pass of the voice LM: (N, V) logits and (N,) labels."""
    return layout_logits(models.voice.lm, layouts)


def layout_logits(lm, layouts) -> tuple[torch.Tensor, torch.Tensor]:
    """``lm`` over ``forced_layout``s in one padded pass: the (N, V) logits at the scored
    positions and their (N,) labels."""
    rows = [inputs for inputs, _, _ in layouts]
    embeds = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, S, D)
    size = torch.tensor([len(r) for r in rows], device=embeds.device)
    mask = (torch.arange(embeds.shape[1], device=embeds.device) < size[:, None]).long()
    hidden = lm.body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    picked = torch.cat([hidden[i, positions] for i, (_, positions, _) in enumerate(layouts)])
    labels = torch.tensor([t for _, _, ls in layouts for t in ls], device=embeds.device)
    return lm.llm_decoder(picked).float(), labels


class TextToSpeechTask:
    """t2s: the semantic path learns the composed path's speech tokens."""

    def __init__(self, examples: Sequence[Example], heldout: Sequence[Example],
                 models: TrainingModels) -> None:  # fmt: skip
        self.models = models
        self.examples = list(range(len(examples)))
        self.train = [self._prepare(e) for e in examples]
        self.heldout = [self._prepare(e) for e in heldout]

    def _prepare(self, example: Example) -> tuple[SemanticInputs, list[int], int]:
        inputs = semantic_inputs(self.models, example)
        targets = teacher_tokens(self.models, example)
        with torch.no_grad():
            _, positions, _ = student_layout(self.models, inputs, targets)
        return inputs, targets, len(positions)

    def count(self, item: int) -> int:
        return self.train[item][2]

    def loss_sum(self, items: Sequence[int]) -> torch.Tensor:
        layouts = [student_layout(self.models, *self.train[i][:2]) for i in items]
        logits, labels = scored_logits(self.models, layouts)
        return F.cross_entropy(logits, labels, reduction="sum")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.heldout:
            return {}
        hits = total = 0
        eos = self.models.voice.lm.cfg.eos_token
        for inputs, targets, _ in self.heldout:
            layout = student_layout(self.models, inputs, targets)
            logits, labels = scored_logits(self.models, [layout])
            speech = labels != eos
            hits += int((logits.argmax(-1)[speech] == labels[speech]).sum())
            total += int(speech.sum())
        return {"token_accuracy": hits / max(1, total)}


__all__ = [
    "SemanticInputs",
    "TextToSpeechTask",
    "forced_layout",
    "layout_logits",
    "scored_logits",
    "semantic_inputs",
    "student_layout",
    "teacher_tokens",
]
