"""Choosing how a run computes from the config and the hardware: its numeric precision (training, and loading a
model in the half precision it will run in) and whether its model is compiled."""

from __future__ import annotations

import logging

import torch

__all__ = ["resolve_precision", "resolve_compile"]

logger = logging.getLogger(__name__)


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU.

    A half precision asked for on a machine without a GPU falls back to fp32 with one warning.
    The device is read from torch, never from ``CUDA_VISIBLE_DEVICES`` (which SLURM sets even on
    nodes whose driver torch cannot use; environment.md).
    """
    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            logger.warning("precision %s requested but no GPU is available; training in fp32", precision)
            return "fp32"
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_compile(setting: str, *, auto: bool = True) -> bool:
    """Whether to ``torch.compile`` the model: ``always``/``never`` as said; ``auto`` on a CUDA GPU that Triton
    supports (compute capability 7.0 or newer), if ``auto`` allows it for this model.

    On CPU, compiling a step takes a minute and gains little for the small models trained there.
    """
    if setting != "auto":
        return setting == "always"
    return auto and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (7, 0)
