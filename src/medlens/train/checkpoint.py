"""Resumable training checkpoints as data: safetensors and JSON, never a pickle.

A checkpoint is a folder written atomically (never over the previous one until complete) that holds
everything needed to resume exactly and to audit the run (nanoGPT's rule): the model
(``model.safetensors``), the optimizer, grad-scaler and RNG states (their tensors in
``state.safetensors``, the rest in ``state.json``), the :class:`TrainState` counters, the full resolved
config with its hash, and the medlens version. Loading reads tensors with safetensors and structure
with ``json``, so a checkpoint someone else wrote can hold no code; a folder written for another
config is recognised by its hash and not resumed (:func:`checkpoint_config_diff`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medlens import __version__
from medlens.errors import MedlensError
from medlens.io import atomic_dir, moved_aside, sha256_file, write_json

__all__ = [
    "TrainState",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_info",
    "checkpoint_config_diff",
    "discard_checkpoint",
    "claim_trainer_checkpoints",
    "resume_config",
    "config_hash",
    "rng_states",
    "restore_rng_states",
    "to_tensors",
    "from_tensors",
]

logger = logging.getLogger(__name__)

_MODEL, _STATE, _INFO = "model.safetensors", "state.safetensors", "state.json"


@dataclasses.dataclass
class TrainState:
    """Counters of a training run (open_clip_train's TrainState)."""

    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # image-text pairs seen, all processes together
    best_metric: float | None = None  # value of the config's best_metric at the best step
    best_step: int | None = None


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a resolved config's canonical JSON: what a checkpoint belongs to."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


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


def to_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """A JSON-able skeleton of ``obj`` with every tensor and array moved into ``tensors`` by key.

    Handles what optimizer, scaler and RNG states are made of: dicts (any keys), lists, tuples, tensors,
    numpy arrays and scalars. :func:`from_tensors` rebuilds the same object.
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {
            "__ndarray__": to_tensors(
                torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj), tensors, prefix
            ),
            "dtype": str(obj.dtype),
        }
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [to_tensors(k, tensors, prefix), to_tensors(v, tensors, prefix)] for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [to_tensors(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [to_tensors(v, tensors, prefix) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def from_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The object :func:`to_tensors` took apart."""
    if isinstance(skeleton, list):
        return [from_tensors(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__ndarray__" in skeleton:
        return from_tensors(skeleton["__ndarray__"], tensors).numpy().astype(skeleton["dtype"])
    if "__tuple__" in skeleton:
        return tuple(from_tensors(v, tensors) for v in skeleton["__tuple__"])
    return {from_tensors(k, tensors): from_tensors(v, tensors) for k, v in skeleton["__dict__"]}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    scaler: Any = None,
) -> None:
    """Write a resumable checkpoint folder at ``path`` atomically (a kill mid-write leaves the old one)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = to_tensors(
        {
            "optimizer": optimizer.state_dict(),
            "rng": rng_states(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        },
        tensors,
    )
    info = {
        "state": dataclasses.asdict(state),
        "config": config,
        "config_sha256": config_hash(config),
        "medlens_version": __version__,
        "skeleton": skeleton,
    }
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / _MODEL))
        save_file(tensors, str(tmp / _STATE))
        (tmp / _INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    logger.info("checkpoint saved at step %d: %s", state.step, path)


def _folder(path: str | os.PathLike) -> Path | None:
    """The checkpoint folder to read: ``path``, or the previous one a kill during replacement left behind."""
    path = Path(path)
    for candidate in (path, *moved_aside(path)):
        if (candidate / _INFO).is_file():
            return candidate
    return None


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """``state.json`` of the checkpoint at ``path`` (None when there is none)."""
    folder = _folder(path)
    if folder is None:
        return None
    try:
        return json.loads((folder / _INFO).read_text())
    except (OSError, ValueError) as e:
        raise MedlensError(
            f"{folder / _INFO}: cannot read the resume checkpoint ({e}); delete {folder} to start over"
        ) from e


def checkpoint_config_diff(info: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between a checkpoint's config and ``config`` (empty: same config)."""
    if info.get("config_sha256") == config_hash(config):
        return []

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    old, new = flat(info.get("config") or {}), flat(json.loads(json.dumps(config, default=str)))
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>")) or [
        "(config hash)"
    ]


def load_checkpoint(
    path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None
) -> TrainState:
    """Restore model, optimizer, scaler and RNG states from the folder at ``path``; returns the counters.

    Raises:
        MedlensError: naming the checkpoint when it cannot be read or does not fit the model (the message
            says how to start over).
    """
    folder = _folder(path)
    if folder is None:
        raise MedlensError(f"{path}: no resume checkpoint ({_INFO} missing)")
    info = read_checkpoint_info(folder)
    try:
        skeleton = from_tensors(info["skeleton"], load_file(str(folder / _STATE)))
        model.load_state_dict(load_file(str(folder / _MODEL)))
        optimizer.load_state_dict(skeleton["optimizer"])
    except Exception as e:  # noqa: BLE001 - any unreadable or mismatched checkpoint gets the same advice
        raise MedlensError(
            f"{folder}: cannot resume from this checkpoint ({e}); delete {folder} to start over"
        ) from e
    if scaler is not None and skeleton.get("scaler") is not None:
        scaler.load_state_dict(skeleton["scaler"])
    restore_rng_states(skeleton["rng"])
    return TrainState(**info["state"])


def discard_checkpoint(path: str | os.PathLike) -> None:
    """Remove a checkpoint folder medlens wrote (and the previous copy a kill may have left)."""
    path = Path(path)
    for folder in (path, *moved_aside(path)):
        if (folder / _INFO).is_file():
            shutil.rmtree(folder)


def resume_config(
    config: dict[str, Any],
    run_only: tuple[str, ...],
    inputs: dict[str, str | os.PathLike | None] | None = None,
) -> dict[str, Any]:
    """What a checkpoint belongs to: ``config`` without the dotted keys in ``run_only`` (settings of how a
    run is carried out: workers, logging and checkpoint intervals, scheduler requests, which a resumed run
    may change), plus the SHA-256 of each input file under ``inputs`` (new data is a new run)."""
    out = json.loads(json.dumps(config, default=str))
    if inputs:
        out["inputs"] = {
            name: sha256_file(path) if path is not None and Path(path).is_file() else None
            for name, path in inputs.items()
        }
    for dotted in run_only:
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def claim_trainer_checkpoints(
    ckpt_dir: str | os.PathLike, config: dict[str, Any], *, key_prefix: str
) -> bool:
    """Whether a Hugging Face Trainer run in ``ckpt_dir`` resumes: True when it holds ``checkpoint-*``
    folders written for ``config``.

    ``run.json`` records the config the folder's checkpoints belong to. Checkpoints of another config (an
    edit after an interrupted run), or of a run that recorded none, are removed with a warning naming the
    differing keys, and so is the metrics log that went with them; the run then starts over. The Trainer
    reads its own checkpoints with ``torch.load(weights_only=True)``, which refuses code.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_path = ckpt_dir / "run.json"
    checkpoints = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    info = json.loads(run_path.read_text()) if run_path.is_file() else None
    if checkpoints:
        changed = checkpoint_config_diff(info, config) if info is not None else ["(no run.json)"]
        if not changed:
            return True
        logger.warning(
            "not resuming the checkpoints in %s: they were written for other settings (%s differ); "
            "starting over",
            ckpt_dir,
            ", ".join(f"{key_prefix}.{k}" for k in changed),
        )
        for folder in checkpoints:
            shutil.rmtree(folder, ignore_errors=True)
    (ckpt_dir / "metrics.csv").unlink(missing_ok=True)
    write_json({"config": config, "config_sha256": config_hash(config)}, run_path, indent=1)
    return False
