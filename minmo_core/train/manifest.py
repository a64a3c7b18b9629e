"""Training data manifests: one JSON object per line, each an utterance or a dialogue.

    {"audio": "clips/0001.wav", "duration": 2.4, "transcript": "what time is it",
     "language": "en", "task": "qa", "response": "It is three o'clock.",
     "response_speech_tokens": [812, 33, ...],
     "turns": [{"t": 2.1, "label": "speak"}, {"t": 4.0, "label": "stop"}]}

``audio`` is relative to the manifest's folder (or absolute); ``duration`` in seconds;
``task`` says what the example trains (``TASKS``); ``instruction`` (optional) is a task
prompt; ``turns`` (optional) label the full-duplex predictor's decisions at times in the
audio, in order (``TURN_LABELS``: MinMo's three classes). A bad line is refused with its
number and the field at fault, so a broken manifest never trains quietly on half its data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minmo_core.errors import ConfigError

TASKS = ("asr", "qa", "instruction", "s2s", "duplex")
TURN_LABELS = ("listen", "speak", "stop")  # keep listening, take the turn, stop speaking
MAX_DURATION_S = 3600.0  # one example longer than an hour is a mistake, not data
_FIELDS = {
    "audio", "duration", "transcript", "language", "task", "instruction", "response",
    "response_speech_tokens", "turns",
}  # fmt: skip


class ManifestError(ConfigError):
    """A manifest line that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class TurnLabel:
    t: float  # seconds into the audio
    label: str  # one of TURN_LABELS


@dataclass(frozen=True)
class Example:
    audio: Path  # resolved against the manifest's folder
    duration: float  # seconds
    transcript: str
    language: str  # e.g. "en", "zh"
    task: str  # one of TASKS
    instruction: str | None = None
    response: str | None = None
    response_speech_tokens: tuple[int, ...] | None = None
    turns: tuple[TurnLabel, ...] = ()


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ManifestError(f"{where}: {message}")


def _text(raw: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    _require(isinstance(value, str), where, f'"{key}" must be a string, not {value!r}')
    return value


def parse_example(raw: object, folder: Path, where: str) -> Example:
    """One manifest object -> Example; ManifestError naming ``where`` and the field if not."""
    _require(isinstance(raw, dict), where, "a line must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        raise ManifestError(f"{where}: unknown field {unknown[0]!r} (known: {known})")
    audio = _text(raw, "audio", where)
    _require(bool(audio.strip()), where, '"audio" is empty')
    duration = raw.get("duration")
    _require(
        isinstance(duration, int | float) and not isinstance(duration, bool),
        where, f'"duration" must be a number of seconds, not {duration!r}',
    )  # fmt: skip
    _require(0 < duration <= MAX_DURATION_S, where,
             f'"duration" {duration} s is outside (0, {MAX_DURATION_S:.0f}]')  # fmt: skip
    transcript = _text(raw, "transcript", where)
    language = _text(raw, "language", where)
    _require(0 < len(language) <= 8, where, f'"language" {language!r} is not a language code')
    task = _text(raw, "task", where)
    _require(task in TASKS, where, f'"task" {task!r} is not one of {", ".join(TASKS)}')
    instruction = _text(raw, "instruction", where, optional=True)
    response = _text(raw, "response", where, optional=True)
    _require(task not in ("qa", "instruction", "s2s") or response is not None, where,
             f'a "{task}" example needs a "response"')  # fmt: skip
    tokens = raw.get("response_speech_tokens")
    if tokens is not None:
        _require(
            isinstance(tokens, list)
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens),
            where, '"response_speech_tokens" must be a list of non-negative integers',
        )  # fmt: skip
        tokens = tuple(tokens)
    turns = _turns(raw.get("turns", []), duration, where)
    _require(task != "duplex" or bool(turns), where, 'a "duplex" example needs "turns"')
    path = Path(audio)
    return Example(
        audio=path if path.is_absolute() else folder / path,
        duration=float(duration), transcript=transcript, language=language, task=task,
        instruction=instruction, response=response, response_speech_tokens=tokens,
        turns=turns,
    )  # fmt: skip


def _turns(raw: object, duration: float, where: str) -> tuple[TurnLabel, ...]:
    _require(isinstance(raw, list), where, '"turns" must be a list')
    turns, last = [], -1.0
    for i, item in enumerate(raw):
        at = f"{where}, turns[{i}]"
        _require(isinstance(item, dict) and set(item) == {"t", "label"}, at,
                 'each turn is {"t": seconds, "label": ...}')  # fmt: skip
        t, label = item["t"], item["label"]
        _require(isinstance(t, int | float) and not isinstance(t, bool), at,
                 f'"t" must be seconds, not {t!r}')  # fmt: skip
        _require(0 <= t <= duration, at, f"t = {t} s lies outside the {duration} s of audio")
        _require(t >= last, at, f"t = {t} s comes before the turn before it ({last} s)")
        _require(label in TURN_LABELS, at,
                 f'"label" {label!r} is not one of {", ".join(TURN_LABELS)}')  # fmt: skip
        turns.append(TurnLabel(float(t), label))
        last = t
    return tuple(turns)


def read_manifest(path: Path | str, check_audio: bool = True) -> Iterator[Example]:
    """The examples of a JSONL manifest, one at a time (blank lines skipped).

    ManifestError names the first bad line: not JSON, a missing or mistyped field, or
    (``check_audio``) an audio file that does not exist.
    """
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"cannot read the manifest {path}: {err.strerror or err}") from err
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: not JSON ({err.msg} at column {err.colno})") from err
            example = parse_example(raw, path.parent, where)
            if check_audio:
                _require(
                    example.audio.is_file(), where, f"the audio file {example.audio} does not exist"
                )
            yield example


def validate_manifest(path: Path | str, check_audio: bool = True) -> int:
    """Read the whole manifest; the number of examples, or ManifestError at the first bad line."""
    return sum(1 for _ in read_manifest(path, check_audio))


__all__ = [
    "MAX_DURATION_S", "TASKS", "TURN_LABELS", "Example", "ManifestError", "TurnLabel",
    "parse_example", "read_manifest", "validate_manifest",
]  # fmt: skip
