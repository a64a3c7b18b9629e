"""SenseVoice's rich transcript: text plus language, emotion, audio-event and ITN tags.

SenseVoice's CTC output starts with special pieces such as ``<|en|><|HAPPY|><|Speech|>
<|withitn|>``; this module turns them into typed fields, so nothing downstream parses
``<|...|>`` strings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

LANGUAGES = ("zh", "en", "yue", "ja", "ko", "nospeech")
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN")
EVENTS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Event_UNK")
TEXT_NORMS = ("withitn", "woitn")
ALL_TAGS = tuple(f"<|{t}|>" for t in (*LANGUAGES, *EMOTIONS, *EVENTS, *TEXT_NORMS))

_TAG = re.compile(r"<\|([^|<>]*)\|>")


@dataclass(frozen=True)
class RichTranscript:
    text: str  # the words, tags removed
    language: str | None = None  # one of LANGUAGES
    emotion: str | None = None  # one of EMOTIONS, lower case ("happy", "neutral"...)
    event: str | None = None  # one of EVENTS, lower case ("speech", "laughter"...)
    itn: bool | None = None  # True: punctuated and inverse-text-normalised
    other_tags: tuple[str, ...] = field(default_factory=tuple)  # tags of no known kind
    start: float = 0.0  # seconds, within the whole input
    end: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def parse_rich_text(decoded: str, start: float = 0.0, end: float = 0.0) -> RichTranscript:
    """Split a decoded SenseVoice string into words and typed tags.

    The first tag of each kind wins; tags of unknown kinds are kept in ``other_tags``.
    """
    language = emotion = event = None
    itn = None
    other: list[str] = []
    for tag in _TAG.findall(decoded):
        if tag in LANGUAGES and language is None:
            language = tag
        elif tag in EMOTIONS and emotion is None:
            emotion = tag.lower()
        elif tag in EVENTS and event is None:
            event = tag.lower()
        elif tag in TEXT_NORMS and itn is None:
            itn = tag == "withitn"
        elif tag not in (*LANGUAGES, *EMOTIONS, *EVENTS, *TEXT_NORMS):
            other.append(tag)
    text = re.sub(r"\s+", " ", _TAG.sub("", decoded)).strip()
    return RichTranscript(text, language, emotion, event, itn, tuple(other), start, end)


def merge_transcripts(parts: list[RichTranscript]) -> RichTranscript:
    """One transcript for a long input cut into segments.

    Tags are the most frequent among the segments that carry words (ties: earliest).
    """
    spoken = [p for p in parts if p.text] or parts
    if not spoken:
        return RichTranscript("")

    def most_common(values: list) -> object:
        values = [v for v in values if v is not None]
        return max(values, key=values.count) if values else None

    joiner = "" if most_common([p.language for p in spoken]) in ("zh", "yue", "ja") else " "
    return RichTranscript(
        text=joiner.join(p.text for p in spoken if p.text),
        language=most_common([p.language for p in spoken]),
        emotion=most_common([p.emotion for p in spoken]),
        event=most_common([p.event for p in spoken]),
        itn=most_common([p.itn for p in spoken]),
        other_tags=tuple(t for p in spoken for t in p.other_tags),
        start=parts[0].start,
        end=parts[-1].end,
    )
