"""Progress a user can watch in a rule's log: one line per logging step with the rate and the time left.

Every trainer writes the same line through the ``logging`` module (so it lands in the rule's log file,
never only on Snakemake's console): ``step 120/2000 (6%) | loss 1.2340 | lr 3.0e-04 | 41.2 samples/s |
eta 12m30s``. The Hugging Face Trainer's own printer (a ``print`` of each log dict when its progress bar is
off, as it is in a log file) is replaced by :class:`medlens.train.trainer.TrainerProgress`.
"""

from __future__ import annotations

import time

__all__ = ["Eta", "format_duration"]


def format_duration(seconds: float) -> str:
    """``3h05m``, ``12m30s`` or ``45s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Eta:
    """Time left from the steps done since this process started (a resumed run does not count the steps it
    inherited, which took no time here)."""

    def __init__(self, total_steps: int, start_step: int = 0):
        self.total, self.start, self.t0 = total_steps, start_step, time.perf_counter()

    def __call__(self, step: int) -> str:
        done = step - self.start
        if done <= 0 or self.total <= 0:
            return "eta ?"
        rate = done / (time.perf_counter() - self.t0)
        return f"eta {format_duration((self.total - step) / rate)}"
