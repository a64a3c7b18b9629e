"""Rich transcripts: SenseVoice's tags become typed fields."""

from __future__ import annotations

from minmo_core.understanding.transcript import RichTranscript, merge_transcripts, parse_rich_text


def test_tags_become_fields_and_leave_the_text() -> None:
    r = parse_rich_text("<|en|><|HAPPY|><|Laughter|><|withitn|>That's great, thanks!")
    assert (r.language, r.emotion, r.event, r.itn) == ("en", "happy", "laughter", True)
    assert r.text == "That's great, thanks!"
    assert r.other_tags == ()


def test_missing_and_unknown_tags() -> None:
    r = parse_rich_text("<|zh|><|woitn|><|Weird|>你好")
    assert (r.language, r.emotion, r.event, r.itn) == ("zh", None, None, False)
    assert r.other_tags == ("Weird",)
    assert r.text == "你好"


def test_first_tag_of_a_kind_wins_and_spaces_are_tidied() -> None:
    r = parse_rich_text("<|ja|><|SAD|><|ANGRY|>  hello   <|Speech|> world ")
    assert (r.language, r.emotion, r.event) == ("ja", "sad", "speech")
    assert r.text == "hello world"


def test_merging_segments_joins_text_and_votes_tags() -> None:
    parts = [
        RichTranscript("hello there", "en", "neutral", "speech", False, (), 0.0, 30.0),
        RichTranscript("", "nospeech", None, "bgm", False, (), 30.0, 60.0),
        RichTranscript("how are you", "en", "happy", "speech", False, (), 60.0, 75.0),
        RichTranscript("fine", "en", "happy", "speech", False, (), 75.0, 80.0),
    ]
    merged = merge_transcripts(parts)
    assert merged.text == "hello there how are you fine"
    assert (merged.language, merged.emotion, merged.event) == ("en", "happy", "speech")
    assert (merged.start, merged.end) == (0.0, 80.0)


def test_chinese_segments_join_without_spaces() -> None:
    parts = [RichTranscript("你好", "zh"), RichTranscript("世界", "zh")]
    assert merge_transcripts(parts).text == "你好世界"
