"""Reply text made speakable, incrementally, before the voice LM sees it.

The screen keeps the LLM's text; the voice LM gets a spoken form of it: no markdown markers,
code blocks, emoji or URLs read aloud, and numbers, dates and units as words. Verbalisation
is WeTextProcessing's runtime (``wetext``, the text normaliser CosyVoice itself uses), Chinese
or English by the text's script.

Text is released at word boundaries as it streams in (so the voice LM never waits for a
whole sentence), except while a piece holds digits, where the verbaliser needs the whole
expression ("Jan 5, 2024", "3.5 kg"): that waits for the end of the clause. Each released
piece says how far into the screen text it reaches, so audio can be mapped back to the text
the user heard.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import emoji

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](target) -> text; images vanish
_MD_LINE = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d{1,3}[.)]\s+)", re.MULTILINE)
_MD_MARKS = re.compile(r"(\*{1,3}|_{2,3}|~~|`+|^\s*[-*_]{3,}\s*$)", re.MULTILINE)
_TABLE_PIPES = re.compile(r"\s*\|\s*")
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_MARK = re.compile(r"[ \t]+(?=[.,!?;:])")
# never said, and the verbaliser escapes quotes and backslashes or fails on control codes
_UNSAID = re.compile(r'["\\\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\ufeff\ufffd]')
_CLAUSE_END = re.compile(r"[.!?;:,。！？；：，、…]\s|[。！？；：，、]|\n")
_FENCE = "```"


@dataclass(frozen=True)
class Piece:
    text: str  # what the voice LM gets; may be "" when the screen text had nothing to say
    display_end: int  # screen-text characters consumed up to and including this piece


@functools.cache
def _normalizer(lang: str):
    from wetext import Normalizer

    return Normalizer(lang=lang, operator="tn")


def warm_up() -> None:
    """Load both normalisers' grammars now (a model loader calls this): loading one holds
    the interpreter for a few hundred milliseconds, which during a first reply would stall
    every other thread, the window's included."""
    for lang in ("en", "zh"):
        _normalizer(lang)


def verbalise(text: str) -> str:
    """Numbers, dates, units and symbols as words (Chinese or English by script)."""
    if not text.strip():
        return text
    lang = "zh" if _CJK.search(text) else "en"
    try:
        return _normalizer(lang).normalize(text)
    except Exception:  # the grammar has no path for some inputs (it asserts): say it as written
        return text


def plain_speech(text: str) -> str:
    """Screen text -> what may be said: markdown markers, emoji and URLs removed."""
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _MD_LINE.sub("", text)
    text = _MD_MARKS.sub("", text)
    text = _TABLE_PIPES.sub(", ", text) if "|" in text else text
    text = emoji.replace_emoji(_UNSAID.sub("", text), "")
    return _SPACE_BEFORE_MARK.sub("", _SPACES.sub(" ", text.replace("\n", " ")))


def speakable(text: str) -> str:
    """A whole screen text -> its spoken form (as the stream would say it)."""
    stream = SpeakableStream()
    pieces = stream.push(text) + stream.finish()
    return "".join(p.text for p in pieces)


class SpeakableStream:
    """Screen-text deltas in, speakable pieces out, each as soon as it is safe to say."""

    def __init__(self) -> None:
        self.buffer = ""  # screen text not yet released
        self.released = 0  # screen characters released so far
        self.in_code = False  # inside a ``` fence: nothing is said
        self.gap = False  # whitespace seen since the last spoken text
        self.spoke = False  # some text has been said

    def push(self, delta: str) -> list[Piece]:
        self.buffer += delta
        pieces = []
        while (cut := self._cut()) is not None:
            pieces.append(self._release(cut))
        return pieces

    def finish(self) -> list[Piece]:
        """The rest, at the end of the reply."""
        if not self.buffer:
            return []
        return [self._release(len(self.buffer))]

    def _cut(self) -> int | None:
        """Where the buffer can be released up to, or None to wait for more text."""
        buf = self.buffer
        fence = buf.find(_FENCE)
        if fence >= 0:  # up to and including the fence marker, which flips the code state
            return fence + len(_FENCE)
        if self.in_code:
            end = len(buf) - (len(_FENCE) - 1)  # the tail may be the start of a fence
        else:
            clause = max((m.end() for m in _CLAUSE_END.finditer(buf)), default=0)
            if any(c.isdigit() for c in buf[clause:]):
                end = clause  # an expression with digits may still be growing
            else:
                end = max(clause, max(buf.rfind(" "), buf.rfind("\n")) + 1)
                if _CJK.search(buf[end:]):  # Chinese has no spaces: hold one character back
                    end = len(buf) - 1
        return end if end > 0 else None

    def _release(self, cut: int) -> Piece:
        segment, self.buffer = self.buffer[:cut], self.buffer[cut:]
        self.released += cut
        if segment.endswith(_FENCE):
            said = "" if self.in_code else segment[: -len(_FENCE)]
            self.in_code = not self.in_code
        else:
            said = "" if self.in_code else segment
        if said[:1].isspace():
            self.gap = True
        text = verbalise(plain_speech(said)).strip() if said.strip() else ""
        if text:
            # one space between words, at the start of the next piece (where BPE wants it),
            # none before punctuation
            if self.gap and self.spoke and not unicodedata.category(text[0]).startswith("P"):
                text = " " + text
            self.gap = False
            self.spoke = True
        if said[-1:].isspace() or (said and not said.strip()):
            self.gap = True
        return Piece(text, self.released)
