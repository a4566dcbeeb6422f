"""Where encoder and decoder presets and medlens's open_clip model configs are found.

Architectures are data, as in open_clip: each medlens model is one JSON file in
``models/open_clip_configs/`` (names start with ``medlens-`` and never contain "siglip", because
open_clip switches to a tokenizer that downloads when a *name* contains it; environment.md). They are
registered once with ``open_clip.add_model_config``. A preset is a commented YAML recipe in
``models/presets/<kind>/<name>.yaml``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from medlens.config import PRESETS_DIR

__all__ = [
    "OPEN_CLIP_CONFIGS_DIR",
    "register_open_clip_configs",
    "list_encoder_presets",
    "list_decoder_presets",
]

OPEN_CLIP_CONFIGS_DIR = Path(__file__).resolve().parent / "open_clip_configs"


@functools.cache
def register_open_clip_configs() -> list[str]:
    """Add medlens's model configs to open_clip's registry (idempotent); returns their names."""
    import open_clip

    open_clip.add_model_config(OPEN_CLIP_CONFIGS_DIR)
    return sorted(p.stem for p in OPEN_CLIP_CONFIGS_DIR.glob("*.json"))


def _list(kind: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS_DIR / kind).glob("*.yaml"))


def list_encoder_presets() -> list[str]:
    """Names accepted by ``encoder.preset``."""
    return _list("encoder")


def list_decoder_presets() -> list[str]:
    """Names accepted by ``decoder.preset``."""
    return _list("decoder")
