"""gpunn's own error types: one base class, so callers (and the CLI) can catch them all.

Each message says what was expected, what came, and what to do about it.
"""


class GpunnError(Exception):
    """Base of every error gpunn raises for bad input or an unusable environment."""


class DataError(GpunnError, ValueError):
    """A data file is missing, corrupt or of the wrong shape; the message names the file."""


class ModelFileError(GpunnError, ValueError):
    """A saved model cannot be loaded (missing, corrupt, another architecture or version)."""


class ConfigError(GpunnError, ValueError):
    """A network or training setting is out of range or inconsistent."""
