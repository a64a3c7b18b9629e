"""Where models live by default: ``$MINMO_MODELS_DIR`` or the user's data folder."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

APP_NAME = "minmo-assistant"


def models_dir() -> Path:
    return Path(os.environ.get("MINMO_MODELS_DIR") or Path(user_data_dir(APP_NAME)) / "models")


def default_model_folder(env_var: str, name: str) -> Path:
    """``$env_var`` when set, else ``models_dir() / name``."""
    return Path(os.environ.get(env_var) or models_dir() / name)
