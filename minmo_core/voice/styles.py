"""How the reply should sound: CosyVoice 2's natural-language instructions, as types.

CosyVoice 2's speech-token LM was trained with an instruction as its prompt text, closed by
the ``<|endofprompt|>`` token (the release's frontend appends it to the instruction; its
README's example is ``用四川话说这句话``). The instructions it was trained on are listed in
Table 1 of the CosyVoice 2 paper (arXiv 2412.10117, "Instructed Generation"):

- emotion: 高兴 (Happy), 悲伤 (Sad), 惊讶 (Surprised), 愤怒 (Angry), 恐惧 (Fearful),
  厌恶 (Disgusted), 冷静 (Calm), 严肃 (Serious);
- speaking rate: 快速 (Fast), 非常快速 (Very Fast), 慢速 (Slow), 非常慢速 (Very Slow);
- dialect: 粤语, 四川话, 上海话, 郑州话, 长沙话, 天津话 (listed in Chinese only);
- role-playing: 神秘 (Mysterious), 凶猛 (Fierce), 好奇 (Curious), 优雅 (Elegant),
  孤独 (Lonely), 机器人 (Robot), 小猪佩奇 (Peppa), "etc.".

The table's examples word them as ``你能用高兴的情感说吗？``, ``Please speaking very fast.``,
``请问你能模仿粤语的口音吗？`` and ``尝试一下以机器人的角色和我交流。``;
:func:`render_instruction` follows that phrasing.

Rules a style must follow (checked by :func:`check_style`, hence by
:func:`render_instruction`):

1. One value per slot (emotion, dialect, rate, persona): two emotions at once cannot be
   expressed, by construction.
2. A dialect needs Chinese wording (``language="zh"``): the paper lists the dialects in
   Chinese only, so an English-worded dialect instruction is not one the model has seen.
3. The wording language is ``"zh"`` or ``"en"``.

Wuhanese (武汉话) is named among the release README's supported "Chinese dialects" but is not
in the instruction table, so :attr:`Dialect.WUHAN` is kept and marked ``experimental``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Literal, NamedTuple

from minmo_core.errors import ConfigError

END_OF_PROMPT = "<|endofprompt|>"  # closes the instruction; text id 151646 in the tokenizer
LANGUAGES = ("zh", "en")  # wordings an instruction can be rendered in

Language = Literal["zh", "en"]


@dataclass(frozen=True)
class Wording:
    """How one style value is named and spoken in each language."""

    zh: str  # the word of the paper's Table 1, also the Chinese menu label
    en: str  # English menu label
    en_phrase: str | None  # the words in an English instruction; None: no English wording
    zh_aliases: tuple[str, ...] = ()  # other Chinese words that parse to this value
    experimental: bool = False  # not among the instructions the release was trained on


class Emotion(StrEnum):
    """The emotions of the paper's Table 1."""

    HAPPY = "happy"
    SAD = "sad"
    SURPRISED = "surprised"
    ANGRY = "angry"
    FEARFUL = "fearful"
    DISGUSTED = "disgusted"
    CALM = "calm"
    SERIOUS = "serious"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[self]


class Dialect(StrEnum):
    """The dialects of the paper's Table 1, plus Wuhanese (``experimental``: README only)."""

    CANTONESE = "cantonese"
    SICHUANESE = "sichuanese"
    SHANGHAINESE = "shanghainese"
    ZHENGZHOU = "zhengzhou"
    CHANGSHA = "changsha"
    TIANJIN = "tianjin"
    WUHAN = "wuhan"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[self]


class SpeakingRate(StrEnum):
    """The speaking rates of the paper's Table 1, plus ``normal``, which renders nothing."""

    VERY_SLOW = "very_slow"
    SLOW = "slow"
    NORMAL = "normal"
    FAST = "fast"
    VERY_FAST = "very_fast"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[self]


class Persona(StrEnum):
    """The role-playing instructions of the paper's Table 1."""

    MYSTERIOUS = "mysterious"
    FIERCE = "fierce"
    CURIOUS = "curious"
    ELEGANT = "elegant"
    LONELY = "lonely"
    ROBOT = "robot"
    PEPPA = "peppa"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[self]


StyleValue = Emotion | Dialect | SpeakingRate | Persona

_WORDINGS: dict[StyleValue, Wording] = {
    Emotion.HAPPY: Wording("高兴", "Happy", "happily", ("开心",)),
    Emotion.SAD: Wording("悲伤", "Sad", "sadly", ("伤心",)),
    Emotion.SURPRISED: Wording("惊讶", "Surprised", "with surprise"),
    Emotion.ANGRY: Wording("愤怒", "Angry", "angrily", ("生气",)),
    Emotion.FEARFUL: Wording("恐惧", "Fearful", "fearfully", ("害怕",)),
    Emotion.DISGUSTED: Wording("厌恶", "Disgusted", "with disgust"),
    Emotion.CALM: Wording("冷静", "Calm", "calmly", ("平静",)),
    Emotion.SERIOUS: Wording("严肃", "Serious", "seriously"),
    Dialect.CANTONESE: Wording("粤语", "Cantonese", None, ("广东话",)),
    Dialect.SICHUANESE: Wording("四川话", "Sichuanese", None),
    Dialect.SHANGHAINESE: Wording("上海话", "Shanghainese", None),
    Dialect.ZHENGZHOU: Wording("郑州话", "Zhengzhou", None),
    Dialect.CHANGSHA: Wording("长沙话", "Changsha", None),
    Dialect.TIANJIN: Wording("天津话", "Tianjin", None),
    Dialect.WUHAN: Wording("武汉话", "Wuhan", None, experimental=True),
    SpeakingRate.VERY_SLOW: Wording("非常慢速", "Very slow", "at a very slow pace"),
    SpeakingRate.SLOW: Wording("慢速", "Slow", "at a slow pace"),
    SpeakingRate.NORMAL: Wording("正常", "Normal", None, ("正常语速",)),
    SpeakingRate.FAST: Wording("快速", "Fast", "at a fast pace"),
    SpeakingRate.VERY_FAST: Wording("非常快速", "Very fast", "at a very fast pace"),
    Persona.MYSTERIOUS: Wording("神秘", "Mysterious", "in the role of a mysterious character"),
    Persona.FIERCE: Wording("凶猛", "Fierce", "in the role of a fierce character"),
    Persona.CURIOUS: Wording("好奇", "Curious", "in the role of a curious character"),
    Persona.ELEGANT: Wording("优雅", "Elegant", "in the role of an elegant character"),
    Persona.LONELY: Wording("孤独", "Lonely", "in the role of a lonely character"),
    Persona.ROBOT: Wording("机器人", "Robot", "in the role of a robot"),
    Persona.PEPPA: Wording("小猪佩奇", "Peppa Pig", "in the role of Peppa Pig"),
}

# VoiceStyle's fields, in rendering order, with the enum each one takes
_SLOTS: dict[str, type[StyleValue]] = {
    "persona": Persona,
    "dialect": Dialect,
    "emotion": Emotion,
    "rate": SpeakingRate,
}


class Choice(NamedTuple):
    """One entry of a GUI menu."""

    value: str  # what VoiceStyle.parse accepts, e.g. "very_fast"
    zh: str  # Chinese label, e.g. "非常快速"
    en: str  # English label, e.g. "Very fast"
    experimental: bool  # not among the instructions the release was trained on


def _normalise(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def _lookup(kind: type[StyleValue], name: str) -> StyleValue | None:
    key = _normalise(name)
    for member in kind:
        w = member.wording
        if key in (member.value, _normalise(w.en)) or name.strip() in (w.zh, *w.zh_aliases):
            return member
    return None


def _parse_slot(slot: str, name: str | None) -> StyleValue | None:
    if name is None or not name.strip():
        return None
    kind = _SLOTS[slot]
    member = _lookup(kind, name)
    if member is not None:
        return member
    valid = f"valid {slot} values: " + ", ".join(f"{m.value} ({m.wording.zh})" for m in kind)
    for other, other_kind in _SLOTS.items():
        if other != slot and _lookup(other_kind, name) is not None:
            raise ConfigError(f"{name!r} is a value for {other}, not for {slot}; {valid}")
    raise ConfigError(f"unknown {slot} {name!r}; {valid}")


@dataclass(frozen=True)
class VoiceStyle:
    """How to speak: at most one emotion, dialect, speaking rate and persona (None: unset)."""

    emotion: Emotion | None = None
    dialect: Dialect | None = None
    rate: SpeakingRate | None = None
    persona: Persona | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _SLOTS[f.name]
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{f.name} takes a {kind.__name__} or None, not {value!r}")

    @classmethod
    def parse(
        cls,
        emotion: str | None = None,
        dialect: str | None = None,
        rate: str | None = None,
        persona: str | None = None,
    ) -> VoiceStyle:
        """Build a style from names a user or a settings file gave.

        Each name may be the value (``"very_fast"``), in any case and with hyphens, spaces or
        underscores (``"Very-Fast"``), the English label (``"Peppa Pig"``) or the Chinese
        wording (``"非常快速"``). None or a blank string leaves the slot unset.

        Raises ConfigError naming the bad value and listing the valid ones.
        """
        return cls(
            emotion=_parse_slot("emotion", emotion),
            dialect=_parse_slot("dialect", dialect),
            rate=_parse_slot("rate", rate),
            persona=_parse_slot("persona", persona),
        )

    def _spoken(self) -> list[StyleValue]:
        """The set values that change the instruction, in rendering order."""
        values = (getattr(self, slot) for slot in _SLOTS)
        return [v for v in values if v is not None and v is not SpeakingRate.NORMAL]


def instruction_is_empty(style: VoiceStyle) -> bool:
    """True when the style asks for nothing, so no instruction is rendered (``normal`` rate
    alone counts as nothing)."""
    return not style._spoken()


def check_style(style: VoiceStyle, language: str = "zh") -> None:
    """Raise ConfigError when ``style`` cannot be worded in ``language`` (the module's rules)."""
    if language not in LANGUAGES:
        raise ConfigError(f"unknown instruction language {language!r}; choose one of: zh, en")
    if language == "en" and style.dialect is not None:
        raise ConfigError(
            f"the dialect {style.dialect.value} ({style.dialect.wording.zh}) needs a Chinese "
            'instruction (language="zh"): CosyVoice 2 learned dialects from Chinese wording only'
        )


def _zh_phrase(value: StyleValue) -> str:
    word = value.wording.zh
    match value:
        case Persona():
            return f"以{word}的角色"
        case Dialect():
            return f"用{word}"
        case Emotion():
            return f"用{word}的情感"
        case SpeakingRate():
            return f"用{word}的语速"


def render_instruction(style: VoiceStyle, language: Language = "zh") -> str:
    """The LM's prompt text for ``style``, ending with ``<|endofprompt|>``; "" for no style.

    Parts come in a fixed order: persona, dialect, emotion, rate. For example
    ``VoiceStyle(Emotion.HAPPY, Dialect.SICHUANESE, SpeakingRate.FAST)`` renders as
    ``用四川话，用高兴的情感，用快速的语速说这句话<|endofprompt|>`` in Chinese, and
    ``Speak happily, at a fast pace.<|endofprompt|>`` without the dialect in English.

    Raises ConfigError when the style breaks one of the module's rules.
    """
    check_style(style, language)
    spoken = style._spoken()
    if not spoken:
        return ""
    if language == "zh":
        return "，".join(_zh_phrase(v) for v in spoken) + "说这句话" + END_OF_PROMPT
    return "Speak " + ", ".join(v.wording.en_phrase for v in spoken) + "." + END_OF_PROMPT


def choices() -> dict[str, tuple[Choice, ...]]:
    """Menu entries for each VoiceStyle field (``"emotion"``, ``"dialect"``, ``"rate"``,
    ``"persona"``), in enum order; a GUI adds its own "none" entry."""
    return {
        slot: tuple(
            Choice(m.value, m.wording.zh, m.wording.en, m.wording.experimental) for m in kind
        )
        for slot, kind in _SLOTS.items()
    }
