"""Where models live by default: ``$MINMO_MODELS_DIR`` or the user's data folder."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

from minmo_core.errors import CheckpointError

APP_NAME = "minmo-assistant"


def models_dir() -> Path:
    return Path(os.environ.get("MINMO_MODELS_DIR") or Path(user_data_dir(APP_NAME)) / "models")


def default_model_folder(env_var: str, name: str) -> Path:
    """``$env_var`` when set, else ``models_dir() / name``."""
    return Path(os.environ.get(env_var) or models_dir() / name)


def model_folder(given: str | Path | None, env_var: str, name: str, flag: str) -> Path:
    """The folder a command was given, else the default; a missing default is an error
    saying where it looked and how to point elsewhere (a given folder is checked by its
    loader, which names what is wrong with it)."""
    if given is not None:
        return Path(given)
    folder = default_model_folder(env_var, name)
    if not folder.is_dir():
        raise CheckpointError(f"no {name} folder at {folder}; pass {flag} DIR or set {env_var}")
    return folder
