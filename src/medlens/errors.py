"""Error types raised by medlens.

Messages follow one shape so a user can find the fault: ``<file>: <key or row>: <problem>; expected <what>``.
"""

from __future__ import annotations

__all__ = ["MedlensError", "ConfigError", "DataError", "MetricNotComputed"]


class MedlensError(Exception):
    """Base class of every error medlens raises on purpose."""


def _format(where: str | None, what: str | None, problem: str, expected: str | None) -> str:
    parts = [p for p in (where, what) if p]
    message = ": ".join([*parts, problem])
    return f"{message}; expected {expected}" if expected else message


class ConfigError(MedlensError):
    """A configuration value is missing, unknown or out of range.

    Args:
        problem: what is wrong, e.g. ``unknown 'vit_b'``.
        file: the configuration file (or ``<dict>`` when built in code).
        key: the dotted key path, e.g. ``encoder.preset``.
        expected: the allowed values or range.
    """

    def __init__(
        self, problem: str, *, file: str | None = None, key: str | None = None, expected: str | None = None
    ):
        self.file, self.key, self.problem, self.expected = file, key, problem, expected
        super().__init__(_format(file, key, problem, expected))


class DataError(MedlensError):
    """Input data cannot be used: a file, row or column is not what the source format promises.

    Args:
        problem: what is wrong.
        file: the file being read.
        row: the row id or line number.
        column: the column or field.
        expected: what the format requires.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        row: str | int | None = None,
        column: str | None = None,
        expected: str | None = None,
    ):
        self.file, self.row, self.column, self.problem, self.expected = file, row, column, problem, expected
        where = None
        if row is not None or column is not None:
            where = " ".join(
                x
                for x in (f"row {row}" if row is not None else "", f"column '{column}'" if column else "")
                if x
            )
        super().__init__(_format(file, where, problem, expected))


class MetricNotComputed(MedlensError):
    """A report metric cannot be computed here (its model cannot load, or ran out of memory); the message is
    the reason, which ``score_reports`` records instead of failing the job and losing the other metrics."""
