"""Resumable training checkpoints, written atomically and never over the previous one until complete.

A checkpoint holds everything needed to resume exactly and to audit the run (nanoGPT's rule):
model, optimizer and grad-scaler states, the :class:`TrainState` counters, the RNG states, the
full resolved config and the medlens version.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens import __version__
from medlens.errors import MedlensError
from medlens.io import atomic_path

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "rng_states", "restore_rng_states"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
    """Counters of a training run (open_clip_train's TrainState)."""

    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # image-text pairs seen, all processes together
    best_metric: float | None = None  # value of the config's best_metric at the best step
    best_step: int | None = None


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, config: dict[str, Any], scaler: Any = None) -> None:
    """Write a resumable checkpoint to ``path`` atomically (a kill mid-write leaves the old one intact)."""
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": dataclasses.asdict(state), "rng": rng_states(), "config": config, "medlens_version": __version__,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.info("checkpoint saved at step %d: %s", state.step, path)


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any = None) -> TrainState:
    """Restore model, optimizer, scaler and RNG states from ``path``; returns the saved counters.

    Raises:
        MedlensError: when the file cannot be read (the message says how to start over).
    """
    try:
        # our own file; it holds numpy RNG state, which the weights-only unpickler refuses
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise MedlensError(f"{path}: cannot read the resume checkpoint ({e}); delete it to start over") from e
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    restore_rng_states(payload["rng"])
    return TrainState(**payload["state"])
