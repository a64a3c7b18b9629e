"""Errors that carry a one-line message naming the problem, for the CLI and the GUI."""


class MinMoError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""


class AudioError(MinMoError):
    """An audio file or buffer that cannot be used (not audio, empty, silent, too long...)."""


class CheckpointError(MinMoError):
    """A model folder or checkpoint that is missing, truncated, tampered with or malformed."""


class ConfigError(MinMoError):
    """A setting or option that is invalid."""


class MissingDependencyError(MinMoError):
    """An optional package or program that a command needs is not installed."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (its type name if it has none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def reason(err: BaseException) -> str:
    """Why an OS or network call failed: the system's words when it gave any."""
    return getattr(err, "strerror", None) or first_line(err)


def is_out_of_memory(err: BaseException) -> bool:
    """A GPU out-of-memory error (torch's own type, or its message from other layers)."""
    import sys

    torch = sys.modules.get("torch")  # never imports torch just to ask
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or "out of memory" in str(err)
