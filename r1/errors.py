"""Errors users can act on, each with a documented process exit code.

Exit codes of the `r1` command:
    0  success
    1  unexpected internal error (a bug: please report it)
    2  bad configuration or usage (unknown key, wrong type, impossible value, bad recipe)
    3  bad data (missing directory, empty dataset, unreadable or malformed annotation file)
    4  training aborted (too many non-finite losses in a row)
    5  missing optional capability (e.g. TensorRT without an NVIDIA GPU)
    6  `r1 data inspect --strict` found problems (listed in the report)

Every exit code the `r1` command returns comes from this file: an error class's `exit_code`.
"""


class R1Error(Exception):
    """Base class: `str(err)` is the one line shown to the user."""

    exit_code = 1


class ConfigError(R1Error):
    exit_code = 2


class DataError(R1Error):
    exit_code = 3


class TrainingAborted(R1Error):
    exit_code = 4


class Unavailable(R1Error):
    exit_code = 5


class TuneFailed(R1Error):
    """`r1 tune`: no trial completed, or its worker processes failed."""
    exit_code = 1


class FindingsFound(R1Error):
    """`r1 data inspect --strict` found problems (the report lists them)."""
    exit_code = 6


class NonFiniteOutput(DataError):
    """A model produced NaN or infinite outputs (broken weights, or a preprocessing std of 0)."""
