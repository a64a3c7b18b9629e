"""The window's settings, persisted as JSON in the platformdirs config folder.

A corrupt or unreadable file never stops the app: the defaults are used, the bad file is kept
beside it (``settings.json.bad``) and ``notice`` says what happened, for the window to show.
Writes are atomic (a temporary file renamed over the old one). A value of the wrong type, or
outside a field's ``choices``, is dropped on loading (the default stands); keys this version
does not know are kept in ``extra`` and written back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from platformdirs import user_config_dir

from app.audio.events import AEC_BACKENDS, AudioSettings

APP = "minmo-assistant"

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bfloat16", "float16", "float32", "int8", "int4")
LLM_BACKENDS = ("local", "remote")
TURN_POLICIES = ("smart-turn", "silence", "duplex")
VOICE_RELEASES = ("cosyvoice2", "cosyvoice3")  # minmo_core.engine.stack.VOICE_RELEASES
VOICE_LMS = ("standard", "rl")  # minmo_core.engine.stack.VOICE_LMS: CosyVoice 3's LM
CHUNK_SCHEDULES = ("fixed", "growing")  # token2wav's (minmo_core.voice.token2wav.SCHEDULES)
BARGEIN_SENSITIVITIES = ("low", "medium", "high")
VAD_SENSITIVITIES = (0, 1, 2, 3)  # webrtcvad aggressiveness: 3 calls the least audio speech
BARGEIN_MIN_SPEECH_MS = {"high": 60, "medium": 100, "low": 200}  # speech that interrupts


class TalkMode(StrEnum):
    HANDS_FREE = "hands-free"
    PUSH_TO_TALK = "push-to-talk"


def _one_of(default: object, choices: tuple) -> object:
    return field(default=default, metadata={"choices": choices})


@dataclass
class Settings:
    input_device: str | None = None
    output_device: str | None = None
    device: str = _one_of("auto", DEVICES)  # compute device
    precision: str = _one_of("auto", PRECISIONS)
    pack: str | None = None  # the chosen model pack's name; None: the planner's choice
    models_dir: str | None = None  # where models live; None: the default folder
    llm_dir: str | None = None
    llm_backend: str = _one_of("local", LLM_BACKENDS)  # remote: llm_url, not llm_dir
    llm_url: str | None = None  # a remote OpenAI-compatible server instead
    llm_model: str | None = None
    echo_cancellation: bool = True
    aec_backend: str = _one_of("auto", AEC_BACKENDS)  # which echo canceller (app.audio.aec)
    vad_sensitivity: int = _one_of(2, VAD_SENSITIVITIES)
    bargein_sensitivity: str = _one_of("medium", BARGEIN_SENSITIVITIES)
    turn_policy: str = _one_of("smart-turn", TURN_POLICIES)
    talk_mode: str = _one_of(TalkMode.HANDS_FREE.value, tuple(TalkMode))
    system_prompt: str = ""  # empty: the engine's default
    voice_release: str = _one_of("cosyvoice2", VOICE_RELEASES)  # which CosyVoice speaks
    voice_lm: str = _one_of("standard", VOICE_LMS)  # CosyVoice 3's: llm.pt, or RL-tuned llm.rl.pt
    chunk_schedule: str = _one_of("fixed", CHUNK_SCHEDULES)  # speech chunks: MinMo's 15 or growing
    save_audio: bool = False  # keep the conversation's audio in the history too
    emotion: str | None = None
    dialect: str | None = None
    rate: str | None = None
    persona: str | None = None
    volume: str | None = None
    voice: str | None = None  # a saved voice's name
    extra: dict = field(default_factory=dict)  # keys of newer versions, kept as they were


def settings_path() -> Path:
    root = os.environ.get("MINMO_CONFIG_DIR") or user_config_dir(APP)
    return Path(root) / "settings.json"


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """(settings, notice): the notice says why the defaults are used, or None."""
    path = path or settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings(), None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return Settings(), _set_aside(path, f"it could not be read ({type(err).__name__})")
    if not isinstance(raw, dict):
        return Settings(), _set_aside(path, "it is not a settings object")
    known = {f.name: f for f in fields(Settings)}
    values, extra = {}, {}
    for key, value in raw.items():
        if key not in known or key == "extra":
            extra[key] = value
        elif _fits(known[key], value):
            values[key] = value
    if "llm_backend" not in raw and values.get("llm_url"):  # written before the choice existed
        values["llm_backend"] = "remote"
    return Settings(**values, extra=extra), None


def _fits(f, value) -> bool:
    kinds = {"str": str, "bool": bool, "int": int}
    base = str(f.type).split(" ")[0]
    if value is None:
        return "None" in str(f.type)
    if base == "int" and isinstance(value, bool):  # True is an int to Python, not to us
        return False
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        return False
    return isinstance(value, kinds.get(base, object))


def _set_aside(path: Path, why: str) -> str:
    bad = path.with_name(path.name + ".bad")
    try:
        path.replace(bad)
        kept = f"; it was kept as {bad}"
    except OSError:
        kept = ""
    return f"The settings file {path} was not usable: {why}. Default settings are in use{kept}."


def save_settings(settings: Settings, path: Path | None = None) -> None:
    path = path or settings_path()
    data = asdict(settings)
    extra = data.pop("extra")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**extra, **data}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def validate(settings: Settings) -> list[str]:
    """What is wrong with ``settings``, one line each (empty when nothing is)."""
    problems = []
    for f in fields(Settings):
        choices = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if choices is not None and (value not in choices or isinstance(value, bool)):
            listed = ", ".join(str(c) for c in choices)
            problems.append(f"{f.name} is {value!r}; it must be one of {listed}")
    if settings.llm_backend == "remote":
        url = (settings.llm_url or "").strip()
        if not url:
            problems.append(
                "the remote LLM needs a server URL (for example http://localhost:8000/v1)"
            )
        elif not is_http_url(url):
            problems.append(f"the server URL {url!r} is not an http:// or https:// address")
    for name in ("models_dir", "llm_dir"):
        folder = getattr(settings, name)
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            problems.append(f"{folder} is a file, not a folder")
    return problems


def is_http_url(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def audio_settings(settings: Settings) -> AudioSettings:
    """What the audio path takes from the user's settings (the rest keep their defaults)."""
    return AudioSettings(
        input_device=settings.input_device,
        output_device=settings.output_device,
        echo_cancellation=settings.echo_cancellation,
        aec_backend=settings.aec_backend,
        vad_aggressiveness=settings.vad_sensitivity,
        bargein_min_speech_ms=BARGEIN_MIN_SPEECH_MS[settings.bargein_sensitivity],
    )
