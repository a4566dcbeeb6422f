"""Progress a user can watch in a rule's log: one line per logging step with the rate and the time left.

Every trainer writes the same line through the ``logging`` module (so it lands in the rule's log file,
never only on Snakemake's console): ``step 120/2000 (6%) | loss 1.2340 | lr 3.0e-04 | 41.2 samples/s |
eta 12m30s``. The Hugging Face Trainer's own printer (a ``print`` of each log dict when its progress bar is
off, as it is in a log file) is replaced by :class:`TrainerProgress`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

__all__ = ["Eta", "format_duration", "TrainerProgress"]

logger = logging.getLogger(__name__)


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


class TrainerProgress(TrainerCallback):
    """The Trainer's logs as medlens progress lines, and a summary after each evaluation."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self.eta: Eta | None = None
        self._last: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.eta = Eta(state.max_steps, state.global_step)
        self._last = (state.global_step, time.perf_counter())

    def on_log(self, args, state, control, logs: Mapping[str, Any] | None = None, **kwargs):
        if not state.is_world_process_zero or not logs or self.eta is None:
            return
        if "eval_loss" in logs:
            logger.info("eval at step %d: val/loss %.4f", state.global_step, logs["eval_loss"])
            return
        if "loss" not in logs:
            return
        now = time.perf_counter()
        step0, t0 = self._last or (state.global_step, now)
        rate = (state.global_step - step0) * self.samples_per_step / max(now - t0, 1e-9)
        self._last = (state.global_step, now)
        parts = [
            f"step {state.global_step}/{state.max_steps} ({100 * state.global_step / max(state.max_steps, 1):.0f}%)",
            f"loss {logs['loss']:.4f}",
        ]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if "grad_norm" in logs:
            parts.append(f"grad norm {logs['grad_norm']:.3f}")
        parts += [f"{rate:.1f} samples/s", self.eta(state.global_step)]
        logger.info(" | ".join(parts))
