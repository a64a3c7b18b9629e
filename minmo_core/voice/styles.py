"""How the reply should sound: CosyVoice 2's and CosyVoice 3's natural-language
instructions, as types.

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

CosyVoice 3 (Fun-CosyVoice3-0.5B-2512) words its instructions differently: one sentence per
request after the system sentence, as the release's ``instruct_list``
(cosyvoice/utils/common.py) lists them:

- dialect: ``请用四川话表达。`` for 广东话, 东北话, 甘肃话, 贵州话, 河南话, 湖北话, 湖南话,
  江西话, 闽南话, 宁夏话, 山西话, 陕西话, 山东话, 上海话, 四川话, 天津话, 云南话;
- volume: ``Please say a sentence as loudly as possible.`` and
  ``Please say a sentence in a very soft voice.`` (in English);
- speed: ``请用尽可能慢地语速说一句话。`` and ``请用尽可能快地语速说一句话。``;
- emotion: ``请非常开心地说一句话。``, ``伤心``, ``生气``;
- role-play: ``我想体验一下小猪佩奇风格，可以吗？``, ``你可以尝试用机器人的方式解答吗？``.

Every value renders on both backends. A value one release was not trained on is rendered in
that release's phrasing (``请用郑州话表达。`` for CosyVoice 3, ``用河南话说这句话`` for
CosyVoice 2) and marked experimental for that backend (:func:`trained`, :func:`choices`), so
a style survives a change of voice pack. CosyVoice 3's sentences are the release's own in
either wording language; requests are joined in the fixed order persona, dialect, emotion,
rate, volume (the release trained them one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Literal, NamedTuple

from minmo_core.errors import ConfigError

END_OF_PROMPT = "<|endofprompt|>"  # closes the instruction; text id 151646 in the tokenizer
LANGUAGES = ("zh", "en")  # wordings an instruction can be rendered in
BACKENDS = (2, 3)  # CosyVoice generations an instruction can be rendered for

Language = Literal["zh", "en"]


@dataclass(frozen=True)
class Wording:
    """How one style value is named and spoken in each language."""

    zh: str  # the word of the paper's Table 1, also the Chinese menu label
    en: str  # English menu label
    en_phrase: str | None  # the words in an English instruction; None: no English wording
    zh_aliases: tuple[str, ...] = ()  # other Chinese words that parse to this value
    experimental: bool = False  # not among the instructions CosyVoice 2 was trained on
    cv3: str | None = None  # CosyVoice 3's sentence; None: built from the pattern, untrained
    cv3_trained: bool = False  # the sentence is one of CosyVoice 3's instruct_list


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
        return _WORDINGS[type(self), self]


class Dialect(StrEnum):
    """The dialects of CosyVoice 2's Table 1, plus Wuhanese (``experimental``: README only),
    then the rest of CosyVoice 3's instruct_list."""

    CANTONESE = "cantonese"
    SICHUANESE = "sichuanese"
    SHANGHAINESE = "shanghainese"
    ZHENGZHOU = "zhengzhou"
    CHANGSHA = "changsha"
    TIANJIN = "tianjin"
    WUHAN = "wuhan"
    NORTHEASTERN = "northeastern"
    GANSU = "gansu"
    GUIZHOU = "guizhou"
    HENAN = "henan"
    HUBEI = "hubei"
    HUNAN = "hunan"
    JIANGXI = "jiangxi"
    MINNAN = "minnan"
    NINGXIA = "ningxia"
    SHANXI = "shanxi"
    SHAANXI = "shaanxi"
    SHANDONG = "shandong"
    YUNNAN = "yunnan"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[type(self), self]


class SpeakingRate(StrEnum):
    """The speaking rates of the paper's Table 1, plus ``normal``, which renders nothing."""

    VERY_SLOW = "very_slow"
    SLOW = "slow"
    NORMAL = "normal"
    FAST = "fast"
    VERY_FAST = "very_fast"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[type(self), self]


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
        return _WORDINGS[type(self), self]


class Volume(StrEnum):
    """CosyVoice 3's two volume instructions, plus ``normal``, which renders nothing."""

    SOFT = "soft"
    NORMAL = "normal"
    LOUD = "loud"

    @property
    def wording(self) -> Wording:
        return _WORDINGS[type(self), self]


StyleValue = Emotion | Dialect | SpeakingRate | Persona | Volume

_D3 = "请用{}表达。"  # CosyVoice 3's dialect sentence
_E3 = "请非常{}地说一句话。"  # ... emotion sentence
# keyed by (kind, member): StrEnum members equal their strings, so SpeakingRate.NORMAL ==
# Volume.NORMAL == "normal" would share one key
_WORDINGS: dict[tuple[type, StyleValue], Wording] = {
    (Emotion, Emotion.HAPPY): Wording(
        "高兴", "Happy", "happily", ("开心",), cv3=_E3.format("开心"), cv3_trained=True
    ),
    (Emotion, Emotion.SAD): Wording(
        "悲伤", "Sad", "sadly", ("伤心",), cv3=_E3.format("伤心"), cv3_trained=True
    ),
    (Emotion, Emotion.SURPRISED): Wording(
        "惊讶", "Surprised", "with surprise", cv3=_E3.format("惊讶")
    ),
    (Emotion, Emotion.ANGRY): Wording(
        "愤怒", "Angry", "angrily", ("生气",), cv3=_E3.format("生气"), cv3_trained=True
    ),
    (Emotion, Emotion.FEARFUL): Wording(
        "恐惧", "Fearful", "fearfully", ("害怕",), cv3=_E3.format("害怕")
    ),
    (Emotion, Emotion.DISGUSTED): Wording(
        "厌恶", "Disgusted", "with disgust", cv3=_E3.format("厌恶")
    ),
    (Emotion, Emotion.CALM): Wording("冷静", "Calm", "calmly", ("平静",), cv3=_E3.format("冷静")),
    (Emotion, Emotion.SERIOUS): Wording("严肃", "Serious", "seriously", cv3=_E3.format("严肃")),
    (Dialect, Dialect.CANTONESE): Wording(
        "粤语", "Cantonese", None, ("广东话",), cv3=_D3.format("广东话"), cv3_trained=True
    ),
    (Dialect, Dialect.SICHUANESE): Wording("四川话", "Sichuanese", None, cv3_trained=True),
    (Dialect, Dialect.SHANGHAINESE): Wording("上海话", "Shanghainese", None, cv3_trained=True),
    (Dialect, Dialect.ZHENGZHOU): Wording("郑州话", "Zhengzhou", None),
    (Dialect, Dialect.CHANGSHA): Wording("长沙话", "Changsha", None),
    (Dialect, Dialect.TIANJIN): Wording("天津话", "Tianjin", None, cv3_trained=True),
    (Dialect, Dialect.WUHAN): Wording("武汉话", "Wuhan", None, experimental=True),
    (Dialect, Dialect.NORTHEASTERN): Wording(
        "东北话", "Northeastern", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.GANSU): Wording("甘肃话", "Gansu", None, experimental=True, cv3_trained=True),
    (Dialect, Dialect.GUIZHOU): Wording(
        "贵州话", "Guizhou", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.HENAN): Wording("河南话", "Henan", None, experimental=True, cv3_trained=True),
    (Dialect, Dialect.HUBEI): Wording("湖北话", "Hubei", None, experimental=True, cv3_trained=True),
    (Dialect, Dialect.HUNAN): Wording("湖南话", "Hunan", None, experimental=True, cv3_trained=True),
    (Dialect, Dialect.JIANGXI): Wording(
        "江西话", "Jiangxi", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.MINNAN): Wording(
        "闽南话", "Minnan (Hokkien)", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.NINGXIA): Wording(
        "宁夏话", "Ningxia", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.SHANXI): Wording(
        "山西话", "Shanxi", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.SHAANXI): Wording(
        "陕西话", "Shaanxi", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.SHANDONG): Wording(
        "山东话", "Shandong", None, experimental=True, cv3_trained=True
    ),
    (Dialect, Dialect.YUNNAN): Wording(
        "云南话", "Yunnan", None, experimental=True, cv3_trained=True
    ),
    (SpeakingRate, SpeakingRate.VERY_SLOW): Wording(
        "非常慢速",
        "Very slow",
        "at a very slow pace",
        cv3="请用尽可能慢地语速说一句话。",
        cv3_trained=True,
    ),
    (SpeakingRate, SpeakingRate.SLOW): Wording(
        "慢速", "Slow", "at a slow pace", cv3="请用稍慢的语速说一句话。"
    ),
    (SpeakingRate, SpeakingRate.NORMAL): Wording("正常", "Normal", None, ("正常语速",)),
    (SpeakingRate, SpeakingRate.FAST): Wording(
        "快速", "Fast", "at a fast pace", cv3="请用稍快的语速说一句话。"
    ),
    (SpeakingRate, SpeakingRate.VERY_FAST): Wording(
        "非常快速",
        "Very fast",
        "at a very fast pace",
        cv3="请用尽可能快地语速说一句话。",
        cv3_trained=True,
    ),
    (Persona, Persona.MYSTERIOUS): Wording(
        "神秘", "Mysterious", "in the role of a mysterious character"
    ),
    (Persona, Persona.FIERCE): Wording("凶猛", "Fierce", "in the role of a fierce character"),
    (Persona, Persona.CURIOUS): Wording("好奇", "Curious", "in the role of a curious character"),
    (Persona, Persona.ELEGANT): Wording("优雅", "Elegant", "in the role of an elegant character"),
    (Persona, Persona.LONELY): Wording("孤独", "Lonely", "in the role of a lonely character"),
    (Persona, Persona.ROBOT): Wording(
        "机器人",
        "Robot",
        "in the role of a robot",
        cv3="你可以尝试用机器人的方式解答吗？",
        cv3_trained=True,
    ),
    (Persona, Persona.PEPPA): Wording(
        "小猪佩奇",
        "Peppa Pig",
        "in the role of Peppa Pig",
        cv3="我想体验一下小猪佩奇风格，可以吗？",
        cv3_trained=True,
    ),
    (Volume, Volume.SOFT): Wording(
        "轻柔",
        "Soft",
        "softly",
        ("小声",),
        experimental=True,
        cv3="Please say a sentence in a very soft voice.",
        cv3_trained=True,
    ),
    (Volume, Volume.NORMAL): Wording("正常音量", "Normal", None),
    (Volume, Volume.LOUD): Wording(
        "响亮",
        "Loud",
        "loudly",
        ("大声",),
        experimental=True,
        cv3="Please say a sentence as loudly as possible.",
        cv3_trained=True,
    ),
}

# VoiceStyle's fields, in rendering order, with the enum each one takes
_SLOTS: dict[str, type[StyleValue]] = {
    "persona": Persona,
    "dialect": Dialect,
    "emotion": Emotion,
    "rate": SpeakingRate,
    "volume": Volume,
}
_NOTHING = (SpeakingRate.NORMAL, Volume.NORMAL)  # values that ask for nothing


class Choice(NamedTuple):
    """One entry of a GUI menu."""

    value: str  # what VoiceStyle.parse accepts, e.g. "very_fast"
    zh: str  # Chinese label, e.g. "非常快速"
    en: str  # English label, e.g. "Very fast"
    experimental: bool  # not among the instructions the backend's release was trained on


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
    owners = [o for o, k in _SLOTS.items() if o != slot and _lookup(k, name) is not None]
    if owners:
        raise ConfigError(
            f"{name!r} is a value for {' and '.join(owners)}, not for {slot}; {valid}"
        )
    raise ConfigError(f"unknown {slot} {name!r}; {valid}")


@dataclass(frozen=True)
class VoiceStyle:
    """How to speak: at most one emotion, dialect, speaking rate, persona and volume
    (None: unset)."""

    emotion: Emotion | None = None
    dialect: Dialect | None = None
    rate: SpeakingRate | None = None
    persona: Persona | None = None
    volume: Volume | None = None

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
        volume: str | None = None,
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
            volume=_parse_slot("volume", volume),
        )

    def _spoken(self) -> list[StyleValue]:
        """The set values that change the instruction, in rendering order."""
        values = (getattr(self, slot) for slot in _SLOTS)
        return [v for v in values if v is not None and v not in _NOTHING]


def instruction_is_empty(style: VoiceStyle) -> bool:
    """True when the style asks for nothing, so no instruction is rendered (``normal`` rate
    and volume count as nothing)."""
    return not style._spoken()


def check_backend(cosyvoice: int) -> None:
    if cosyvoice not in BACKENDS:
        raise ConfigError(f"no instruction wording for CosyVoice {cosyvoice}; choose 2 or 3")


def check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ConfigError(f"unknown instruction language {language!r}; choose one of: zh, en")


def check_style(style: VoiceStyle, language: str = "zh", cosyvoice: int = 2) -> None:
    """Raise ConfigError when ``style`` cannot be worded in ``language`` for CosyVoice
    ``cosyvoice`` (the module's rules; CosyVoice 3 words dialects in Chinese whatever the
    language)."""
    check_language(language)
    check_backend(cosyvoice)
    if cosyvoice == 2 and language == "en" and style.dialect is not None:
        raise ConfigError(
            f"the dialect {style.dialect.value} ({style.dialect.wording.zh}) needs a Chinese "
            'instruction (language="zh"): CosyVoice 2 learned dialects from Chinese wording only'
        )


def trained(value: StyleValue, cosyvoice: int = 2) -> bool:
    """Whether the ``cosyvoice`` release was trained on an instruction asking for ``value``
    (``normal`` rate and volume, which render nothing, count as trained)."""
    check_backend(cosyvoice)
    if value in _NOTHING:
        return True
    if cosyvoice == 2:
        return not value.wording.experimental
    return value.wording.cv3_trained


def _cv3_sentence(value: StyleValue) -> str:
    """CosyVoice 3's sentence for ``value``: the release's own, else the same pattern."""
    w = value.wording
    if w.cv3 is not None:
        return w.cv3
    match value:
        case Dialect():
            return _D3.format(w.zh)
        case Persona():
            return f"我想体验一下{w.zh}风格，可以吗？"
    raise AssertionError(f"{value!r} has no CosyVoice 3 sentence")  # every other has one


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
        case Volume():
            return f"用{word}的声音"


def render_instruction(style: VoiceStyle, language: Language = "zh", cosyvoice: int = 2) -> str:
    """The instruction for ``style``, ending with ``<|endofprompt|>``; "" for no style.

    Parts come in a fixed order: persona, dialect, emotion, rate, volume. For CosyVoice 2,
    ``VoiceStyle(Emotion.HAPPY, Dialect.SICHUANESE, SpeakingRate.FAST)`` renders as
    ``用四川话，用高兴的情感，用快速的语速说这句话<|endofprompt|>`` in Chinese, and
    ``Speak happily, at a fast pace.<|endofprompt|>`` without the dialect in English. For
    CosyVoice 3 it is the release's sentences, ``请用四川话表达。请非常开心地说一句话。...``
    (the LM prompt puts the system sentence first: see ``voice_prompt.lm_prompt``).

    Raises ConfigError when the style breaks one of the module's rules.
    """
    check_style(style, language, cosyvoice)
    spoken = style._spoken()
    if not spoken:
        return ""
    if cosyvoice == 3:
        text = ""
        for sentence in map(_cv3_sentence, spoken):
            if text and (text[-1].isascii() or sentence[0].isascii()):
                text += " "
            text += sentence
        return text + END_OF_PROMPT
    if language == "zh":
        return "，".join(_zh_phrase(v) for v in spoken) + "说这句话" + END_OF_PROMPT
    return "Speak " + ", ".join(v.wording.en_phrase for v in spoken) + "." + END_OF_PROMPT


def choices(cosyvoice: int = 2) -> dict[str, tuple[Choice, ...]]:
    """Menu entries for each VoiceStyle field (``"persona"``, ``"dialect"``, ``"emotion"``,
    ``"rate"``, ``"volume"``), in enum order, with the values the ``cosyvoice`` release was
    not trained on marked experimental; a GUI adds its own "none" entry."""
    return {
        slot: tuple(
            Choice(m.value, m.wording.zh, m.wording.en, not trained(m, cosyvoice)) for m in kind
        )
        for slot, kind in _SLOTS.items()
    }
