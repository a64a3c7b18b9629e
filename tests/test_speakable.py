"""Reply text made speakable: markdown, emoji, URLs and code are not read aloud, numbers and
units become words, and streaming the text in any pieces says exactly what the whole says."""

from __future__ import annotations

import random

import pytest

from minmo_core.engine.speakable import SpeakableStream, speakable

REPLY = (
    "## Answer\n\nThe **capital** of France is [Paris](https://en.wikipedia.org/wiki/Paris) "
    "\U0001f1eb\U0001f1f7. It had 2,100,000 people in 2024, and it is 105 km\u00b2 large.\n\n"
    "- one item\n- see https://example.org/page\n\n```python\nprint(1)\n```\n"
    "Done! \u4eca\u5929\u662f2024\u5e741\u67085\u65e5\u3002"
)


def test_markdown_emoji_urls_and_code_are_not_said_and_numbers_become_words() -> None:
    said = speakable(REPLY)
    for unsaid in ("#", "*", "[", "](", "http", "wikipedia", "print", "```", "- ", "\U0001f1eb"):
        assert unsaid not in said, unsaid
    assert "The capital of France is Paris." in said
    assert "two million one hundred thousand people in twenty twenty four" in said
    assert "one hundred and five square kilometers" in said
    assert "one item see Done!" in said
    assert said.endswith(
        "\u4eca\u5929\u662f\u4e8c\u96f6\u4e8c\u56db\u5e74\u4e00\u6708\u4e94\u65e5\u3002"
    )


@pytest.mark.parametrize("seed", range(5))
def test_streaming_in_any_pieces_says_what_the_whole_text_says(seed: int) -> None:
    rng = random.Random(seed)
    stream = SpeakableStream()
    pieces, i = [], 0
    while i < len(REPLY):
        n = rng.randint(1, 6)
        pieces += stream.push(REPLY[i : i + n])
        i += n
    pieces += stream.finish()
    ends = [p.display_end for p in pieces]
    assert ends == sorted(ends) and ends[-1] == len(REPLY)
    said = " ".join("".join(p.text for p in pieces).split())
    assert said == speakable(REPLY)


def test_words_are_released_before_the_sentence_ends() -> None:
    stream = SpeakableStream()
    assert [p.text for p in stream.push("The capital of Fra")] == ["The capital of"]
    assert stream.push("nce") == []


def test_numbers_wait_for_the_end_of_their_clause() -> None:
    stream = SpeakableStream()
    assert [p.text for p in stream.push("It costs 3")] == []
    assert [p.text for p in stream.push(".5 kg, ")] == ["It costs three point five kilograms,"]


def test_quotes_and_control_codes_are_not_said() -> None:
    assert speakable('He said "hi" \\ ok\x00 \ufffd fine') == "He said hi ok fine"


def test_text_the_verbaliser_cannot_parse_is_said_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from minmo_core.engine import speakable as module

    class Broken:
        def normalize(self, text: str) -> str:
            raise AssertionError

    monkeypatch.setattr(module, "_normalizer", lambda lang: Broken())
    assert module.speakable("It has 3 rooms.") == "It has 3 rooms."
