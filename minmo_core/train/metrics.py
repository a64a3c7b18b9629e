"""Evaluation metrics: word and character error rates (jiwer), reply accuracy, and the
precision / recall / F1 of turn-taking decisions.

Texts are compared after one normalisation: lower case, punctuation dropped, numbers 0-99
written as words ("7" and "seven" are the same answer), whitespace collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from minmo_core.errors import MissingDependencyError

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen")  # fmt: skip
TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0-99 as English words ("forty two")."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens - 2] + ("" if ones == 0 else f" {ONES[ones]}")


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"\b\d{1,2}\b", lambda m: number_words(int(m.group())), text)
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def _jiwer():
    try:
        import jiwer
    except ImportError as err:
        raise MissingDependencyError(
            "the error rates come from jiwer: pip install 'minmo-assistant[train]'"
        ) from err
    return jiwer


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER after normalisation (an empty hypothesis counts all its words deleted)."""
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    if not any(refs):
        raise ValueError("every reference is empty: WER is undefined")
    return float(_jiwer().wer(refs, hyps))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return float(_jiwer().cer(refs, hyps))


def answer_accuracy(answers: Sequence[str], replies: Sequence[str]) -> float:
    """The share of replies that say the expected answer as whole words."""
    if not answers:
        raise ValueError("no answers to score")
    hits = 0
    for answer, reply in zip(answers, replies, strict=True):
        said = f" {normalise(reply)} "
        hits += f" {normalise(answer)} " in said
    return hits / len(answers)


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def precision_recall_f1(tp: int, fp: int, fn: int) -> Scores:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, fp, fn)


__all__ = [
    "Scores",
    "answer_accuracy",
    "char_error_rate",
    "normalise",
    "number_words",
    "precision_recall_f1",
    "word_error_rate",
]
