"""A decoder folder's decoding settings as its ``generation_config.json``, in transformers' format: a stock
``generate()`` on the folder decodes as ``evaluate_decoder`` did, and medlens reads the same file back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medlens.config import GenerationConfig, from_dict
from medlens.errors import ConfigError

__all__ = ["GENERATION_FILE", "save_generation_config", "read_generation_config"]

GENERATION_FILE = "generation_config.json"


def save_generation_config(
    folder: str | os.PathLike, generation: GenerationConfig, *, base: Any = None, **token_ids: Any
) -> None:
    """Write ``generation`` as the folder's ``generation_config.json`` (greedy or beam search, never sampling).

    Args:
        folder: the decoder folder being written.
        generation: the decoding settings (``decoder.generation``).
        base: the model's own ``transformers.GenerationConfig`` (a VLM's: its stop tokens and defaults), kept
            where ``generation`` does not set a value.
        token_ids: ``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ``decoder_start_token_id`` (None ones
            are left out).
    """
    import copy

    from transformers import GenerationConfig as HFGenerationConfig

    config = copy.deepcopy(base) if base is not None else HFGenerationConfig()
    # max_length would cap max_new_tokens when it is the smaller; transformers' default (20) is what a stock
    # generate() stopped at before this file existed
    config.max_length = None
    # medlens decodes greedily or by beam search: a base model's sampling settings (Llama 3.2 Vision ships
    # temperature 0.6, top_p 0.9) would contradict do_sample=False, which transformers refuses to save
    for key in ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"):
        if hasattr(config, key):
            setattr(config, key, None)
    config.update(
        **generation.generate_kwargs(),
        do_sample=False,
        **{k: v for k, v in token_ids.items() if v is not None},
    )
    config.validate(strict=True)
    config.save_pretrained(str(folder))


def read_generation_config(folder: str | os.PathLike) -> GenerationConfig | None:
    """The decoding settings of a decoder folder's ``generation_config.json``; None when it has none.

    Keys the file leaves out take transformers' defaults (it writes only what differs from them).

    Raises:
        ConfigError: naming the file when it is not JSON or holds a wrong value.
    """
    path = Path(folder) / GENERATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON ({e})", file=str(path)) from e
    if not isinstance(data, dict):  # data.get below would be an AttributeError traceback
        raise ConfigError(
            f"a JSON {type(data).__name__}, not an object", file=str(path), expected="decoding settings"
        )
    settings = {
        "num_beams": 1,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }  # transformers' defaults
    settings.update({k: data[k] for k in (*settings, "max_new_tokens") if data.get(k) is not None})
    if "max_new_tokens" not in settings:
        raise ConfigError(
            "no max_new_tokens", file=str(path), key="max_new_tokens", expected="the longest output in tokens"
        )
    return from_dict(GenerationConfig, settings, source=str(path))
