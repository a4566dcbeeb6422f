"""Learning-rate schedules as pure functions of the optimizer step (nanoGPT's ``get_lr``, open_clip's ``scheduler(step)``)."""

from __future__ import annotations

import math

from medlens.config import EncoderConfig

__all__ = ["lr_at", "warmup_steps"]


def warmup_steps(cfg: EncoderConfig, total_steps: int) -> int:
    """``cfg.warmup_steps``, or ``warmup_ratio`` of the run when it is unset."""
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total_steps)
    return int(round(cfg.warmup_ratio * total_steps))


def lr_at(step: int, cfg: EncoderConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) in a run of ``total_steps`` steps."""
    warmup = warmup_steps(cfg, total_steps)
    # 1) linear warmup from lr/warmup to lr
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    # 2) after warmup: constant, or cosine decay to 0 at the last step
    if cfg.lr_scheduler_type == "constant":
        return cfg.learning_rate
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * cfg.learning_rate * (1.0 + math.cos(math.pi * min(1.0, progress)))
