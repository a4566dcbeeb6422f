"""Stopping a training run cleanly on SLURM's warning, and the metrics log a resumed run continues.

SLURM sends SIGTERM (or SIGUSR1) before preemption or the time limit; every trainer finishes its step,
writes a checkpoint and raises :class:`TrainingInterrupted`, so that the job fails and its rerun resumes.
A resumed run repeats the steps logged after its checkpoint; :func:`truncate_metrics` drops those rows
first, so ``metrics.csv`` holds each step once.
"""

from __future__ import annotations

import csv
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.errors import MedlensError

__all__ = ["TrainingInterrupted", "StopSignals", "truncate_metrics"]


class TrainingInterrupted(MedlensError):
    """Raised after a checkpoint was saved on SIGTERM/SIGUSR1; the job fails and is resumed on rerun."""


class StopSignals:
    """Remembers SIGTERM/SIGUSR1 until the step ends; a context manager, so handlers exist only while training."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def truncate_metrics(path: Path, step: int | None, columns: Sequence[str]) -> None:
    """Rewrite ``metrics.csv`` with ``columns``, keeping the rows up to ``step`` (none when ``step`` is None)."""
    rows = []
    if step is not None and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
