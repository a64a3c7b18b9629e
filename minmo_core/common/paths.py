"""Where models live by default: ``$MINMO_MODELS_DIR`` or the user's data folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from platformdirs import user_data_dir

from minmo_core.errors import CheckpointError

APP_NAME = "minmo-assistant"


def models_dir() -> Path:
    return Path(os.environ.get("MINMO_MODELS_DIR") or Path(user_data_dir(APP_NAME)) / "models")


def registered_folder(name: str) -> Path | None:
    """Where ``minmo models import`` registered the release ``name``, if it did."""
    try:
        entry = json.loads((models_dir() / "registry.json").read_text(encoding="utf-8"))[name]
        return Path(entry["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_model_folder(env_var: str, name: str) -> Path:
    """``$env_var`` when set, else the imported folder, else ``models_dir() / name``."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    return registered_folder(name) or models_dir() / name


def model_folder(given: str | Path | None, env_var: str, name: str, flag: str) -> Path:
    """The folder a command was given, else the default; a missing default is an error
    saying where it looked and how to point elsewhere (a given folder is checked by its
    loader, which names what is wrong with it)."""
    if given is not None:
        return Path(given)
    folder = default_model_folder(env_var, name)
    if not folder.is_dir():
        raise CheckpointError(
            f"no {name} folder at {folder}; `minmo models download PACK` fetches it (see "
            f"`minmo models plan`), or pass {flag} DIR or set {env_var}"
        )
    return folder
