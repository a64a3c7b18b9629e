"""Speech-to-speech alignment (s2s): a spoken question in, the spoken answer out.

The LLM hears the question through the input projector (the engine's spoken-turn prompt, as
in ``s2t``) and is teacher-forced on the response. The response's semantic vectors (each
token's input embedding beside the hidden state that chose it) and the user embedding (the
mean of the speech embeddings, as ``ConversationEngine._aligned_speech`` takes it) go through
the output projector to the voice LM, whose targets are the composed path's speech tokens for
the response (t2s's teacher: ``t2s.teacher_tokens``).

By default the stage trains the output projector and the voice LM. When it also trains a part
upstream of the LLM's states (encoder, input projector, LoRA), the response's text
cross-entropy joins the loss, so the LLM keeps its answers while they learn to be spoken.

Evaluation: the teacher's speech tokens that the semantic path predicts (arg-max,
teacher-forced) on held-out spoken questions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from minmo_core.train import s2t
from minmo_core.train.manifest import Example
from minmo_core.train.models import TrainingModels
from minmo_core.train.t2s import (
    SemanticInputs,
    forced_layout,
    scored_logits,
    student_layout,
    teacher_tokens,
)

UPSTREAM = ("encoder", "input_projector", "lora")  # parts that change what the LLM says


class SpeechToSpeechTask:
    def __init__(self, examples: Sequence[Example], heldout: Sequence[Example],
                 models: TrainingModels, parts: Sequence[str]) -> None:  # fmt: skip
        self.models = models
        self.examples = list(examples)
        self.heldout = list(heldout)
        self.grad_encoder = "encoder" in parts
        self.with_text = any(part in UPSTREAM for part in parts)
        self._teacher: dict[int, list[int]] = {}
        self._counts: dict[int, int] = {}

    def teacher(self, example: Example) -> list[int]:
        key = id(example)
        if key not in self._teacher:
            self._teacher[key] = teacher_tokens(self.models, example)
        return self._teacher[key]

    def count(self, example: Example) -> int:
        """The scored positions: the teacher's speech tokens (and end of speech) as the layout
        places them, plus the response's tokens when the text loss is on."""
        key = id(example)
        if key not in self._counts:
            n_text = len(s2t.target_ids(self.models.llm, example))
            lm = self.models.voice.lm
            with torch.no_grad():
                blank = [torch.zeros_like(lm.sos)] * (n_text - 1)
                _, positions, _ = forced_layout(lm, blank, lm.sos[0], self.teacher(example))
            self._counts[key] = len(positions) + (n_text if self.with_text else 0)
        return self._counts[key]

    def _layouts(self, out: s2t.Forward, examples: Sequence[Example]) -> list:
        layouts = []
        for i, example in enumerate(examples):
            n, first = len(out.targets[i]) - 1, out.firsts[i]  # the response without its end
            inputs = SemanticInputs(
                out.speech[i].float().mean(0),
                out.embeds[i, first : first + n],
                out.hidden[i, first - 1 : first - 1 + n],
            )
            layouts.append(student_layout(self.models, inputs, self.teacher(example)))
        return layouts

    def loss_sum(self, items: Sequence[Example]) -> torch.Tensor:
        out = s2t.forward(self.models, items, self.grad_encoder)
        logits, labels = scored_logits(self.models, self._layouts(out, items))
        loss = F.cross_entropy(logits, labels, reduction="sum")
        if self.with_text:
            loss = loss + s2t.text_loss_sum(self.models, out)
        return loss

    @torch.no_grad()
    def evaluate(self, batch: int = 8) -> dict[str, float]:
        if not self.heldout:
            return {}
        hits = total = 0
        eos = self.models.voice.lm.cfg.eos_token
        for start in range(0, len(self.heldout), batch):
            chunk = self.heldout[start : start + batch]
            out = s2t.forward(self.models, chunk, False)
            logits, labels = scored_logits(self.models, self._layouts(out, chunk))
            speech = labels != eos
            hits += int((logits.argmax(-1)[speech] == labels[speech]).sum())
            total += int(speech.sum())
        return {"token_accuracy": hits / max(1, total)}


__all__ = ["UPSTREAM", "SpeechToSpeechTask"]
