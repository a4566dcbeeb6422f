"""Loading a trained decoder folder and generating reports from images (evaluation and ``medlens generate``).

A decoder folder records its kind in ``medlens.json``; :func:`load_generator` returns an object
with one method, ``generate(images, prompts=None, **decoding) -> list[str]``, whatever the kind. Its
decoding settings are its ``generation_config.json`` (:mod:`medlens.models.generation`).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from medlens.config import GenerationConfig
from medlens.data.images import load_image
from medlens.errors import ConfigError, DataError
from medlens.models.generation import read_generation_config

__all__ = ["ReportGenerator", "CaptionerGenerator", "load_generator"]

logger = logging.getLogger(__name__)


class ReportGenerator(Protocol):
    reads_prompts: bool  # False: the prompt (a VQA question) is ignored

    def generate(
        self,
        images: Sequence[Any],
        prompts: Sequence[str] | None = None,
        generation: GenerationConfig = ...,
        batch_size: int = ...,
    ) -> list[str]: ...


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class CaptionerGenerator:
    """Reports from a medlens captioner folder (prompts are ignored: the captioner writes the whole report)."""

    model: Any
    tokenizer: Any
    transform: Any
    generation: GenerationConfig | None = None  # the folder's generation_config.json: the default decoding
    reads_prompts = False  # conditioned on the image alone

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> CaptionerGenerator:
        from transformers import AutoTokenizer

        from medlens.models.captioner import Captioner, caption_transform

        model = Captioner.from_pretrained(str(path)).to(_device()).eval()
        return cls(
            model,
            # the model's own config: AutoConfig does not know medlens_captioner (its code is the folder's,
            # not run here) and would warn that the checkpoint may not be compatible
            AutoTokenizer.from_pretrained(str(path), config=model.config, trust_remote_code=False),
            caption_transform(model.config, train=False),
            read_generation_config(path),
        )

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[Any],
        prompts: Sequence[str] | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """Generate one report per image (a path, bytes or PIL image; decoded like training data); ``generation``
        None: the folder's settings."""
        generation = generation or self.generation or GenerationConfig()
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixels = torch.stack([self.transform(load_image(im, grey=False)) for im in chunk]).to(
                self.model.device
            )
            ids = self.model.generate(pixels, **generation.generate_kwargs())
            out.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out


def load_generator(path: str | os.PathLike) -> ReportGenerator:
    """Load any decoder folder written by ``train_decoder``.

    Raises:
        ConfigError: when the folder is not a medlens decoder.
        DataError: naming the folder when its files are damaged or do not fit each other.
    """
    from safetensors import SafetensorError

    from medlens.io import read_json

    path = Path(path)
    info_path = path / "medlens.json"
    if not info_path.is_file():
        raise ConfigError(
            f"'{path}' is not a medlens decoder folder (no medlens.json)",
            expected="results/<experiment>/decoder written by train_decoder",
        )
    kind = read_json(info_path, expected="the JSON object train_decoder wrote").get("kind")
    if kind == "open_clip":  # an encoder folder has a medlens.json too
        raise ConfigError(
            f"'{path}' is an encoder folder, not a decoder folder",
            expected="results/<experiment>/decoder written by train_decoder (classify, embed and export take "
            "encoder folders)",
        )
    if kind not in ("captioner", "vlm"):
        raise ConfigError(
            f"unknown decoder kind {kind!r}", file=str(info_path), key="kind", expected="'captioner' or 'vlm'"
        )
    try:
        if kind == "captioner":
            return CaptionerGenerator.from_dir(path)
        from medlens.models.vlm import VLMGenerator

        return VLMGenerator.from_dir(path)
    except pickle.UnpicklingError as e:
        # weights (pytorch_model.bin, adapter_model.bin) pickled with more than tensors: torch.load's
        # weights_only refused them, so nothing ran; a traceback would hide which folder it was
        raise DataError(
            "the folder holds a pickle of more than tensors, which medlens never unpickles "
            "(torch.load with weights_only refused it)",
            file=str(path),
            expected="weights saved by train_decoder (safetensors); do not load this folder elsewhere either",
        ) from e
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        # the libraries' errors for a missing, truncated or mismatched file; medlens's own pass through
        raise DataError(
            f"the decoder cannot be loaded ({type(e).__name__}: {e})",
            file=str(path),
            expected="the folder train_decoder wrote, complete (weights, config, tokenizer or processor)",
        ) from e
