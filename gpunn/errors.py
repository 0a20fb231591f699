"""gpunn's own error types: one base class, so callers (and the CLI) can catch them all.

Each message says what was expected, what came, and what to do about it.
"""


class GpunnError(Exception):
    """Base of every error gpunn raises for bad input or an unusable environment.

    ``exit_code`` is the status ``gpunn`` exits with for it (2: bad input or environment).
    """

    exit_code = 2


class DataError(GpunnError, ValueError):
    """A data file is missing, corrupt or of the wrong shape; the message names the file."""


class ModelFileError(GpunnError, ValueError):
    """A saved model cannot be loaded (missing, corrupt, another architecture or version)."""


class ConfigError(GpunnError, ValueError):
    """A network or training setting is out of range or inconsistent."""


class CheckpointError(GpunnError, ValueError):
    """A checkpoint cannot be written or read (disk full, read-only, corrupt, wrong run).

    A failed write leaves the previous checkpoint in place; the message names it.
    """


class TrainingDiverged(GpunnError, ArithmeticError):
    """Training produced a non-finite cost or weight; the CLI exits with status 3.

    ``epoch`` and ``batch`` (1-based, within the epoch; None when found at an epoch's end)
    say where, ``eta`` the learning rate then. The network keeps its last finite weights.
    """

    exit_code = 3

    def __init__(self, message: str, epoch: int, batch: int | None, eta: float):
        super().__init__(message)
        self.epoch, self.batch, self.eta = epoch, batch, eta
