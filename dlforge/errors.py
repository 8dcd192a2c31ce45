"""User-facing errors.

Every error a person can cause (a bad config key, a broken CSV, a tampered checkpoint) is a `DlforgeError`: the CLI
prints its message on one line and exits with code 2, with no traceback unless `--debug` is given. The message names
the file and line, the config key or the field that is wrong, and what was expected.
"""


class DlforgeError(Exception):
    """An error caused by the user's input; its message is one line meant for a person."""

    exit_code = 2


class ConfigError(DlforgeError):
    """A config key that is unknown, of the wrong type or out of range."""


class DataError(DlforgeError):
    """Data that is missing, malformed or unusable for the task."""


class CheckpointError(DlforgeError):
    """A checkpoint or model folder that is missing, altered, or does not match its config."""


class TrainingError(DlforgeError):
    """Training cannot go on (for example a NaN loss under `nan_policy: stop`)."""
