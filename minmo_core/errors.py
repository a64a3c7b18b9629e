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
