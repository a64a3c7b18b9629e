"""The window's settings, persisted as JSON in the platformdirs config folder.

A corrupt or unreadable file never stops the app: the defaults are used, the bad file is kept
beside it (``settings.json.bad``) and ``notice`` says what happened, for the window to show.
Writes are atomic (a temporary file renamed over the old one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path

from platformdirs import user_config_dir

APP = "minmo-assistant"


class TalkMode(StrEnum):
    HANDS_FREE = "hands-free"
    PUSH_TO_TALK = "push-to-talk"


@dataclass
class Settings:
    input_device: str | None = None
    output_device: str | None = None
    device: str = "auto"  # compute: auto, cpu, cuda
    llm_dir: str | None = None
    llm_url: str | None = None  # a remote OpenAI-compatible server instead
    llm_model: str | None = None
    echo_cancellation: bool = True
    turn_policy: str = "smart-turn"  # smart-turn, silence, duplex
    talk_mode: str = TalkMode.HANDS_FREE.value
    system_prompt: str = ""
    emotion: str | None = None
    dialect: str | None = None
    rate: str | None = None
    persona: str | None = None
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
    return Settings(**values, extra=extra), None


def _fits(f, value) -> bool:
    kinds = {"str": str, "bool": bool}
    base = str(f.type).split(" ")[0]
    if value is None:
        return "None" in str(f.type)
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
