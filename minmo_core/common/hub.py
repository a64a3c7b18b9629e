"""The model hub's address and reachability (downloads: minmo_core/manager/download.py).

The hub is probed once before a download starts, so an offline machine gets one message at
once instead of minutes of retries. ``HF_ENDPOINT`` (a mirror) is read at call time.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from urllib.parse import urlsplit

from huggingface_hub import constants

from minmo_core.errors import CheckpointError, reason

PROBE_TIMEOUT_S = 5.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def check_reachable(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise CheckpointError at once when the hub cannot be reached (offline, no DNS,
    refused, or HF_HUB_OFFLINE set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError("HF_HUB_OFFLINE is set: unset it to download models")
    url = url or endpoint()
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise CheckpointError(f"the model hub address {url!r} is not a URL (check HF_ENDPOINT)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise CheckpointError(
            f"cannot reach the model hub at {url} ({reason(err)}); check the internet connection, "
            "or set HF_ENDPOINT to a mirror"
        ) from err


@contextmanager
def _quiet_hub_logs():
    """huggingface_hub logs every retry as a warning; our own message says what failed."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
