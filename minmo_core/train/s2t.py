"""Speech-to-text alignment (pre-align, full-align, sft): the LLM hears the user's speech
through the input projector and is taught to give the example's response.

The prompt is the engine's own for a spoken turn: the system prompt, then a user message
that is the speech embeddings (``SPEECH_PLACEHOLDER``), followed by the example's
instruction where it has one ("Repeat exactly what was said." for recognition). The target is
the response's tokens and the end-of-turn token; the loss is their summed cross-entropy,
divided by the global batch's target count (so data-parallel shares add up exactly).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from minmo_core.llm.chat import END_TOKENS, SPEECH_PLACEHOLDER, ChatLLM
from minmo_core.train.data import load_clip, speech_embeddings
from minmo_core.train.manifest import Example
from minmo_core.train.models import TrainingModels


@dataclass(frozen=True)
class Prompt:
    before: tuple[int, ...]  # token ids before the speech embeddings
    after: tuple[int, ...]  # token ids after them, up to the assistant's header


def user_content(example: Example) -> str:
    """The user message: the speech, then the instruction if the example has one."""
    if example.instruction:
        return f"{SPEECH_PLACEHOLDER}\n{example.instruction}"
    return SPEECH_PLACEHOLDER


@functools.lru_cache(maxsize=64)
def _prompt(llm: ChatLLM, content: str) -> Prompt:
    text = llm.render(content)  # the config's system prompt, then the user message
    before, after = text.split(SPEECH_PLACEHOLDER)
    tokenize = functools.partial(llm.tokenizer, add_special_tokens=False)
    return Prompt(tuple(tokenize(before)["input_ids"]), tuple(tokenize(after)["input_ids"]))


def prompt(llm: ChatLLM, example: Example) -> Prompt:
    return _prompt(llm, user_content(example))


def end_token(llm: ChatLLM) -> int:
    """The token that ends the assistant's turn (Qwen's and SmolLM2's <|im_end|>)."""
    vocab = llm.tokenizer.get_vocab()
    for token in END_TOKENS:
        if token in vocab:
            return vocab[token]
    return int(llm.tokenizer.eos_token_id)


def target_ids(llm: ChatLLM, example: Example) -> list[int]:
    text = example.response if example.response is not None else example.transcript
    return [*llm.tokenizer(text, add_special_tokens=False)["input_ids"], end_token(llm)]


def count_targets(llm: ChatLLM, example: Example) -> int:
    return len(target_ids(llm, example))


@dataclass
class Forward:
    """The LLM teacher-forced on a batch of spoken prompts and their responses."""

    hidden: torch.Tensor  # (B, S, D) last hidden states, right-padded
    embeds: torch.Tensor  # (B, S, D) the input embeddings (speech spliced in)
    speech: list[torch.Tensor]  # per example, (T', D) its speech embeddings
    firsts: list[int]  # per example, the position of the response's first token
    targets: list[torch.Tensor]  # per example, (L,) the response's ids and the end token


def forward(models: TrainingModels, examples: Sequence[Example], grad_encoder: bool) -> Forward:
    llm = models.llm
    clips = [load_clip(e, models) for e in examples]
    speech, lengths = speech_embeddings(models, clips, grad_encoder)  # (B, T', D), (B,)
    rows, targets, firsts, spoken = [], [], [], []
    for i, example in enumerate(examples):
        p, target = prompt(llm, example), target_ids(llm, example)
        ids = torch.tensor([*p.before, *p.after, *target], device=models.device)
        text = llm.model.get_input_embeddings()(ids).to(speech.dtype)  # (P + L, D)
        n_before, n_speech = len(p.before), int(lengths[i])
        spoken.append(speech[i, :n_speech])
        row = torch.cat([text[:n_before], spoken[-1], text[n_before:]])
        rows.append(row)
        targets.append(torch.tensor(target, device=models.device))
        firsts.append(len(row) - len(target))
    embeds = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, S, D)
    size = torch.tensor([len(r) for r in rows], device=models.device)
    mask = (torch.arange(embeds.shape[1], device=models.device) < size[:, None]).long()
    hidden = llm.model.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return Forward(hidden, embeds, spoken, firsts, targets)


def loss_sum(
    models: TrainingModels, examples: Sequence[Example], grad_encoder: bool
) -> torch.Tensor:
    """The summed cross-entropy of the responses' tokens (a scalar, float32)."""
    return text_loss_sum(models, forward(models, examples, grad_encoder))


def text_loss_sum(models: TrainingModels, out: Forward) -> torch.Tensor:
    pairs = enumerate(zip(out.firsts, out.targets, strict=True))
    picked = torch.cat(
        [out.hidden[i, first - 1 : first - 1 + len(t)] for i, (first, t) in pairs]
    )  # (N, D): the positions whose logits choose each target token
    logits = models.llm.model.get_output_embeddings()(picked).float()  # (N, V)
    return F.cross_entropy(logits, torch.cat(out.targets), reduction="sum")


@torch.inference_mode()
def respond(models: TrainingModels, example: Example, max_new_tokens: int = 32) -> str:
    """The LLM's greedy reply to the example's speech, as the engine would make it."""
    llm = models.llm
    speech, lengths = speech_embeddings(models, [load_clip(example, models)], False)
    llm.reset_cache()
    saved = llm.config
    llm.config = _greedy(saved)
    try:
        events = llm.stream(
            user_content(example),
            prefix_embeds=speech[0, : int(lengths[0])],
            max_new_tokens=max_new_tokens,
            seed=0,
        )
        return "".join(event.text for event in events).strip()
    finally:
        llm.config = saved
        llm.reset_cache()


def _greedy(config):
    return replace(config, temperature=0.0, repetition_penalty=1.0)


__all__ = [
    "Forward",
    "Prompt",
    "count_targets",
    "forward",
    "loss_sum",
    "prompt",
    "respond",
    "target_ids",
    "text_loss_sum",
    "user_content",
]
