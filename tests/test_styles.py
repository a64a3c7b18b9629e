"""CosyVoice 2 and 3 instruction styles: parsing, the contradiction rules, rendering, menus."""

from __future__ import annotations

import pytest

from minmo_core.errors import ConfigError
from minmo_core.voice.styles import (
    END_OF_PROMPT,
    Dialect,
    Emotion,
    Persona,
    SpeakingRate,
    VoiceStyle,
    Volume,
    check_style,
    choices,
    instruction_is_empty,
    render_instruction,
    trained,
)
from minmo_core.voice.voice_prompt import InstructPrompt, lm_prompt

SLOT_KINDS = {
    "emotion": Emotion,
    "dialect": Dialect,
    "rate": SpeakingRate,
    "persona": Persona,
    "volume": Volume,
}


@pytest.mark.parametrize(
    ("slot", "name", "expected"),
    [
        ("emotion", "happy", Emotion.HAPPY),
        ("emotion", "HAPPY", Emotion.HAPPY),
        ("emotion", "  Serious ", Emotion.SERIOUS),
        ("emotion", "高兴", Emotion.HAPPY),
        ("emotion", "愤怒", Emotion.ANGRY),
        ("emotion", "生气", Emotion.ANGRY),
        ("dialect", "Sichuanese", Dialect.SICHUANESE),
        ("dialect", "四川话", Dialect.SICHUANESE),
        ("dialect", "粤语", Dialect.CANTONESE),
        ("dialect", "武汉话", Dialect.WUHAN),
        ("rate", "very_fast", SpeakingRate.VERY_FAST),
        ("rate", "Very-Fast", SpeakingRate.VERY_FAST),
        ("rate", "very fast", SpeakingRate.VERY_FAST),
        ("rate", "VERY__SLOW", SpeakingRate.VERY_SLOW),
        ("rate", "非常慢速", SpeakingRate.VERY_SLOW),
        ("rate", "快速", SpeakingRate.FAST),
        ("persona", "Robot", Persona.ROBOT),
        ("persona", "机器人", Persona.ROBOT),
        ("persona", "peppa-pig", Persona.PEPPA),
        ("persona", "小猪佩奇", Persona.PEPPA),
    ],
)
def test_parse_accepts_names_variants_and_chinese_wordings(
    slot: str, name: str, expected: object
) -> None:
    style = VoiceStyle.parse(**{slot: name})
    assert getattr(style, slot) is expected
    others = [getattr(style, s) for s in SLOT_KINDS if s != slot]
    assert others == [None, None, None, None]


def test_parse_fills_every_slot_at_once() -> None:
    style = VoiceStyle.parse(emotion="calm", dialect="上海话", rate="slow", persona="elegant")
    assert style == VoiceStyle(
        Emotion.CALM, Dialect.SHANGHAINESE, SpeakingRate.SLOW, Persona.ELEGANT
    )


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_parse_leaves_blank_slots_unset(blank: str | None) -> None:
    assert VoiceStyle.parse(emotion=blank, dialect=blank, rate=blank, persona=blank) == VoiceStyle()


@pytest.mark.parametrize("slot", list(SLOT_KINDS))
def test_unknown_name_is_named_and_every_choice_listed(slot: str) -> None:
    with pytest.raises(ConfigError) as info:
        VoiceStyle.parse(**{slot: "grumpy-ish"})
    message = str(info.value)
    assert "'grumpy-ish'" in message
    assert "\n" not in message
    for member in SLOT_KINDS[slot]:
        assert member.value in message
        assert member.wording.zh in message


def test_a_value_given_to_the_wrong_slot_says_where_it_belongs() -> None:
    with pytest.raises(ConfigError, match="'四川话' is a value for dialect, not for emotion"):
        VoiceStyle.parse(emotion="四川话")
    with pytest.raises(ConfigError, match="'fast' is a value for rate, not for persona"):
        VoiceStyle.parse(persona="fast")


MENU_LABELS = [
    (slot, entry.value, label)
    for slot, entries in choices().items()
    for entry in entries
    for label in (entry.value, entry.zh, entry.en)
]


@pytest.mark.parametrize(("slot", "value", "label"), MENU_LABELS)
def test_every_menu_label_parses_in_its_own_slot_only(slot: str, value: str, label: str) -> None:
    assert getattr(VoiceStyle.parse(**{slot: label}), slot).value == value
    for other in SLOT_KINDS.keys() - {slot}:
        if label.lower() == "normal" and other in ("rate", "volume"):
            assert getattr(VoiceStyle.parse(**{other: label}), other).value == "normal"
            continue  # a normal rate and a normal volume: the one shared name
        with pytest.raises(
            ConfigError, match=f"is a value for [a-z ]*{slot}[a-z ]*, not for {other}"
        ):
            VoiceStyle.parse(**{other: label})


def test_a_slot_holds_only_its_own_kind() -> None:
    with pytest.raises(ConfigError, match="emotion takes a Emotion or None"):
        VoiceStyle(emotion=Dialect.WUHAN)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rate takes a SpeakingRate or None"):
        VoiceStyle(rate="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", list(Dialect))
def test_rule_a_dialect_needs_chinese_wording(dialect: Dialect) -> None:
    style = VoiceStyle(emotion=Emotion.HAPPY, dialect=dialect)
    with pytest.raises(
        ConfigError, match=r'dialect .*needs a Chinese instruction \(language="zh"\)'
    ):
        render_instruction(style, "en")
    assert dialect.wording.zh in render_instruction(style, "zh")


def test_rule_the_wording_language_is_zh_or_en() -> None:
    with pytest.raises(ConfigError, match="unknown instruction language 'fr'"):
        check_style(VoiceStyle(emotion=Emotion.SAD), "fr")
    with pytest.raises(ConfigError, match="unknown instruction language"):
        render_instruction(VoiceStyle(), "ja")  # type: ignore[arg-type]


def test_styles_without_a_dialect_pass_the_rules_in_both_languages() -> None:
    style = VoiceStyle(Emotion.ANGRY, None, SpeakingRate.VERY_FAST, Persona.FIERCE)
    for language in ("zh", "en"):
        check_style(style, language)


def test_a_dialect_alone_renders_as_the_release_example() -> None:
    # the README's inference_instruct2 example, plus the token its frontend appends
    assert (
        render_instruction(VoiceStyle(dialect=Dialect.SICHUANESE))
        == "用四川话说这句话" + END_OF_PROMPT
    )


def test_combined_chinese_instruction_keeps_a_fixed_order() -> None:
    style = VoiceStyle(Emotion.HAPPY, Dialect.SICHUANESE, SpeakingRate.FAST, Persona.ROBOT)
    text = render_instruction(style, "zh")
    assert text.endswith(END_OF_PROMPT)
    assert text.count(END_OF_PROMPT) == 1
    positions = [text.index(word) for word in ("机器人", "四川话", "高兴", "快速")]
    assert positions == sorted(positions)
    assert text.removesuffix(END_OF_PROMPT).endswith("说这句话")


def test_combined_english_instruction_keeps_a_fixed_order() -> None:
    style = VoiceStyle(Emotion.HAPPY, None, SpeakingRate.FAST)
    assert render_instruction(style, "en") == "Speak happily, at a fast pace." + END_OF_PROMPT
    style = VoiceStyle(Emotion.CALM, None, SpeakingRate.VERY_SLOW, Persona.ROBOT)
    text = render_instruction(style, "en")
    positions = [text.index(p) for p in ("robot", "calmly", "very slow pace")]
    assert positions == sorted(positions)
    assert text.endswith("." + END_OF_PROMPT)


@pytest.mark.parametrize("style", [VoiceStyle(), VoiceStyle(rate=SpeakingRate.NORMAL)])
def test_an_empty_style_renders_no_instruction_at_all(style: VoiceStyle) -> None:
    assert instruction_is_empty(style)
    assert render_instruction(style, "zh") == ""
    assert render_instruction(style, "en") == ""


def test_normal_rate_adds_nothing_to_other_parts() -> None:
    plain = VoiceStyle(emotion=Emotion.SAD)
    normal = VoiceStyle(emotion=Emotion.SAD, rate=SpeakingRate.NORMAL)
    assert not instruction_is_empty(normal)
    for language in ("zh", "en"):
        assert render_instruction(normal, language) == render_instruction(plain, language)


@pytest.mark.parametrize(
    "value",
    [*Emotion, *Persona, *(r for r in SpeakingRate if r is not SpeakingRate.NORMAL), *Dialect],
)
def test_every_value_renders_its_wording(value: object) -> None:
    slot = next(s for s, kind in SLOT_KINDS.items() if isinstance(value, kind))
    style = VoiceStyle(**{slot: value})
    zh = render_instruction(style, "zh")
    assert zh.endswith("说这句话" + END_OF_PROMPT)
    assert value.wording.zh in zh
    if isinstance(value, Dialect):
        with pytest.raises(ConfigError):
            render_instruction(style, "en")
    else:
        en = render_instruction(style, "en")
        assert en == f"Speak {value.wording.en_phrase}.{END_OF_PROMPT}"


CV2_UNTRAINED = {("dialect", d) for d in (
    "wuhan", "northeastern", "gansu", "guizhou", "henan", "hubei", "hunan", "jiangxi", "minnan",
    "ningxia", "shanxi", "shaanxi", "shandong", "yunnan",
)} | {("volume", "soft"), ("volume", "loud")}  # fmt: skip
CV3_TRAINED = {
    ("dialect", d) for d in (
        "cantonese", "sichuanese", "shanghainese", "tianjin", "northeastern", "gansu", "guizhou",
        "henan", "hubei", "hunan", "jiangxi", "minnan", "ningxia", "shanxi", "shaanxi",
        "shandong", "yunnan",
    )
} | {("emotion", "happy"), ("emotion", "sad"), ("emotion", "angry"), ("rate", "very_slow"),
     ("rate", "very_fast"), ("persona", "robot"), ("persona", "peppa"), ("volume", "soft"),
     ("volume", "loud")}  # fmt: skip


@pytest.mark.parametrize("cosyvoice", [2, 3])
def test_menus_list_every_value_once_and_mark_what_the_release_did_not_learn(cosyvoice) -> None:
    menus = choices(cosyvoice)
    assert list(menus) == ["persona", "dialect", "emotion", "rate", "volume"]
    for slot, entries in menus.items():
        assert [e.value for e in entries] == [m.value for m in SLOT_KINDS[slot]]
        assert len({e.zh for e in entries}) == len({e.en for e in entries}) == len(entries)
    experimental = {(slot, e.value) for slot, es in menus.items() for e in es if e.experimental}
    if cosyvoice == 2:
        assert experimental == CV2_UNTRAINED
        assert Dialect.WUHAN.wording.experimental
    else:
        everything = {(slot, e.value) for slot, es in menus.items() for e in es}
        nothing = {("rate", "normal"), ("volume", "normal")}
        assert experimental == everything - CV3_TRAINED - nothing
    with pytest.raises(ConfigError, match="CosyVoice 4"):
        choices(4)


# Fun-CosyVoice3-0.5B-2512's instruct_list (cosyvoice/utils/common.py at ace7c47f): the
# instructions its LM was trained on, each one request
RELEASE_V3 = [
    *(f"You are a helpful assistant. 请用{d}表达。<|endofprompt|>" for d in (
        "广东话", "东北话", "甘肃话", "贵州话", "河南话", "湖北话", "湖南话", "江西话", "闽南话",
        "宁夏话", "山西话", "陕西话", "山东话", "上海话", "四川话", "天津话", "云南话",
    )),
    "You are a helpful assistant. Please say a sentence as loudly as possible.<|endofprompt|>",
    "You are a helpful assistant. Please say a sentence in a very soft voice.<|endofprompt|>",
    "You are a helpful assistant. 请用尽可能慢地语速说一句话。<|endofprompt|>",
    "You are a helpful assistant. 请用尽可能快地语速说一句话。<|endofprompt|>",
    "You are a helpful assistant. 请非常开心地说一句话。<|endofprompt|>",
    "You are a helpful assistant. 请非常伤心地说一句话。<|endofprompt|>",
    "You are a helpful assistant. 请非常生气地说一句话。<|endofprompt|>",
    "You are a helpful assistant. 我想体验一下小猪佩奇风格，可以吗？<|endofprompt|>",
    "You are a helpful assistant. 你可以尝试用机器人的方式解答吗？<|endofprompt|>",
]  # fmt: skip


def test_cosyvoice3_prompts_of_trained_values_are_the_releases_instructions() -> None:
    prompts = {}
    for slot, kind in SLOT_KINDS.items():
        for member in kind:
            if trained(member, 3) and member.value != "normal":
                style = VoiceStyle(**{slot: member})
                text, tokens = lm_prompt(InstructPrompt(style), cosyvoice=3)
                assert tokens == []
                prompts[text] = (slot, member.value)
    assert sorted(prompts) == sorted(RELEASE_V3)
    assert set(prompts.values()) == CV3_TRAINED


def test_cosyvoice3_words_untrained_values_in_its_own_patterns() -> None:
    assert render_instruction(VoiceStyle(dialect=Dialect.ZHENGZHOU), cosyvoice=3) == (
        "请用郑州话表达。" + END_OF_PROMPT
    )
    assert render_instruction(VoiceStyle(emotion=Emotion.FEARFUL), cosyvoice=3) == (
        "请非常害怕地说一句话。" + END_OF_PROMPT
    )
    assert render_instruction(VoiceStyle(persona=Persona.ELEGANT), cosyvoice=3) == (
        "我想体验一下优雅风格，可以吗？" + END_OF_PROMPT
    )
    assert render_instruction(VoiceStyle(rate=SpeakingRate.FAST), cosyvoice=3).startswith("请用")
    assert not trained(Dialect.ZHENGZHOU, 3) and trained(Dialect.ZHENGZHOU, 2)
    assert trained(Dialect.HENAN, 3) and not trained(Dialect.HENAN, 2)
    assert trained(Volume.NORMAL, 2) and trained(SpeakingRate.NORMAL, 3)


def test_cosyvoice3_joins_requests_in_order_and_ignores_the_wording_language() -> None:
    style = VoiceStyle(
        Emotion.HAPPY, Dialect.SICHUANESE, SpeakingRate.VERY_FAST, Persona.ROBOT, Volume.LOUD
    )
    expected = (
        "你可以尝试用机器人的方式解答吗？请用四川话表达。请非常开心地说一句话。"
        "请用尽可能快地语速说一句话。 Please say a sentence as loudly as possible." + END_OF_PROMPT
    )
    assert render_instruction(style, "zh", cosyvoice=3) == expected
    assert render_instruction(style, "en", cosyvoice=3) == expected  # no rule 2 on CosyVoice 3
    with pytest.raises(ConfigError, match="needs a Chinese"):
        render_instruction(style, "en", cosyvoice=2)
    text, _ = lm_prompt(InstructPrompt(style, language="en"), cosyvoice=3)
    assert text == "You are a helpful assistant. " + expected
    with pytest.raises(ConfigError, match="needs a Chinese"):
        lm_prompt(InstructPrompt(style, language="en"), cosyvoice=2)


def test_volume_on_cosyvoice2_is_worded_like_its_other_requests() -> None:
    style = VoiceStyle(emotion=Emotion.CALM, volume=Volume.SOFT)
    assert render_instruction(style, "zh") == "用冷静的情感，用轻柔的声音说这句话" + END_OF_PROMPT
    assert render_instruction(style, "en") == "Speak calmly, softly." + END_OF_PROMPT
    assert instruction_is_empty(VoiceStyle(rate=SpeakingRate.NORMAL, volume=Volume.NORMAL))
    assert VoiceStyle.parse(volume="大声").volume is Volume.LOUD
    assert VoiceStyle.parse(volume="Soft").volume is Volume.SOFT


def test_the_release_lists_are_all_there() -> None:
    # CosyVoice 2 paper, Table 1: 8 emotions, 4 rates (+ normal), 6 dialects (+ Wuhan), 7 roles
    assert {e.wording.zh for e in Emotion} == {
        "高兴", "悲伤", "惊讶", "愤怒", "恐惧", "厌恶", "冷静", "严肃"
    }  # fmt: skip
    assert {r.wording.zh for r in SpeakingRate} - {"正常"} == {
        "快速",
        "非常快速",
        "慢速",
        "非常慢速",
    }
    trained = {d.wording.zh for d in Dialect if not d.wording.experimental}
    assert trained == {"粤语", "四川话", "上海话", "郑州话", "长沙话", "天津话"}
    assert {p.wording.zh for p in Persona} == {
        "神秘", "凶猛", "好奇", "优雅", "孤独", "机器人", "小猪佩奇"
    }  # fmt: skip
