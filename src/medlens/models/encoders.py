"""Contrastive image-text encoders: built, saved and loaded through open_clip.

A trained encoder folder is open_clip's ``local-dir:`` layout (``open_clip_config.json`` holding
``model_cfg`` + ``preprocess_cfg``, and ``open_clip_model.safetensors``), so
``open_clip.create_model("local-dir:results/<exp>/encoder")`` works on it. :func:`load_encoder`
wraps such a folder with the one preprocessing function training used (:func:`image_transform`),
so evaluation and the ``medlens`` command can never drift from training.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.config import EncoderConfig
from medlens.errors import ConfigError

__all__ = ["create_encoder", "image_transform", "save_encoder", "load_encoder", "Encoder", "CLIP_MEAN", "CLIP_STD"]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation (seed 000 asks for it)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME, WEIGHTS_NAME = "open_clip_config.json", "open_clip_model.safetensors"


def _set_timm_input_size(model: nn.Module, size: int) -> None:
    """open_clip's TimmModel does not pass ``image_size`` to timm (environment.md, pitfall 1): resize the trunk."""
    trunk = getattr(model.visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "set_input_size"):
        trunk.set_input_size(img_size=size)  # interpolates the position embeddings


def _model_cfg(cfg: EncoderConfig) -> dict[str, Any]:
    """The open_clip model config of ``cfg.model`` with the experiment's size, context and bias applied."""
    import open_clip

    from medlens.models.registry import register_open_clip_configs

    register_open_clip_configs()
    base = open_clip.get_model_config(cfg.model)
    if base is None:
        raise ConfigError(f"unknown open_clip model '{cfg.model}'", key="encoder.model",
                          expected=f"one of {', '.join(open_clip.list_models())}")
    model_cfg = copy.deepcopy(base)
    model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    model_cfg["text_cfg"]["context_length"] = cfg.context_length
    model_cfg["init_logit_scale"] = math.log(1.0 / cfg.init_temperature)
    if cfg.loss == "siglip":
        model_cfg["init_logit_bias"] = cfg.init_logit_bias if cfg.init_logit_bias is not None else -10.0
    return model_cfg


def create_encoder(cfg: EncoderConfig) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Build the encoder of ``cfg`` (random init, or ``cfg.pretrained`` weights) on the CPU.

    Args:
        cfg: encoder settings; ``model`` names an open_clip config, ``pretrained`` an open_clip tag,
            ``hf-hub:``/``local-dir:`` source or a checkpoint file.

    Returns:
        ``(model, model_cfg, preprocess_cfg)``: the open_clip model, the config that rebuilds it and
        the preprocessing it expects (both are written by :func:`save_encoder`).

    Raises:
        ConfigError: unknown model, or pretrained weights that cannot be loaded.
    """
    import open_clip

    model_cfg = _model_cfg(cfg)
    kwargs = {k: model_cfg[k] for k in ("init_logit_scale", "init_logit_bias") if k in model_cfg}
    try:
        model = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, force_image_size=cfg.image_size,
                                       force_context_length=cfg.context_length, output_dict=True, **kwargs)
    except (RuntimeError, OSError, ValueError) as e:
        raise ConfigError(f"cannot build '{cfg.model}' with pretrained={cfg.pretrained!r} ({e})",
                          key="encoder.pretrained",
                          expected="an open_clip pretrained tag, hf-hub:<repo>, local-dir:<folder> or a checkpoint "
                                   "file reachable from here (set HF_HUB_OFFLINE=1 to fail fast offline)") from e
    _set_timm_input_size(model, cfg.image_size)
    preprocess_cfg = {"size": cfg.image_size, "mode": "RGB", "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                      "interpolation": "bicubic", "resize_mode": "shortest"}
    return model, model_cfg, preprocess_cfg


def image_transform(preprocess_cfg: dict[str, Any], *, train: bool, crop_scale: float = 1.0):
    """The image transform of an encoder: open_clip's own, from its ``preprocess_cfg``.

    Training adds open_clip's random-resized crop with scale ``(crop_scale, 1)`` (seed 000: images
    stored at 320 and randomly cropped to 224); there is never a flip here (a flip moves the heart;
    the laterality-aware flip lives in the dataset, where the text is at hand).
    """
    from open_clip.transform import AugmentationCfg, PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in preprocess_cfg.items()})
    aug = AugmentationCfg(scale=(crop_scale, 1.0)) if train else None
    return image_transform_v2(pp, is_train=train and crop_scale < 1.0, aug_cfg=aug)


def save_encoder(model: nn.Module, path: str | os.PathLike, model_cfg: dict[str, Any],
                 preprocess_cfg: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` (or ``state_dict``) in open_clip's ``local-dir:`` layout."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                               indent=2) + "\n")


@dataclass
class Encoder:
    """A trained encoder ready for inference: L2-normalised image and text features."""

    model: nn.Module
    tokenizer: Any
    transform: Any
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    device: torch.device

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def logit_bias(self) -> float | None:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.detach())

    @torch.no_grad()
    def encode_images(self, images: list[Any]) -> torch.Tensor:
        """[N, D] unit-norm features of PIL images (decode files with ``medlens.data.images.load_image``)."""
        pixels = torch.stack([self.transform(im) for im in images]).to(self.device)
        return self.model.encode_image(pixels, normalize=True)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, D] unit-norm features of texts (truncated to the model's context length)."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)


def load_encoder(path: str | os.PathLike, *, device: str | torch.device | None = None) -> Encoder:
    """Load an encoder folder written by ``train_encoder`` (or any open_clip ``local-dir:`` folder).

    Raises:
        ConfigError: when the folder lacks the open_clip config or weights.
    """
    import open_clip
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ConfigError(f"'{path}' is not an encoder folder", expected=f"{CONFIG_NAME} and {WEIGHTS_NAME} in it "
                          "(results/<experiment>/encoder written by train_encoder)")
    saved = json.loads((path / CONFIG_NAME).read_text())
    model_cfg, preprocess_cfg = saved["model_cfg"], saved.get("preprocess_cfg", {})
    # weights are loaded after the timm trunk is resized, so position embeddings match
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False, output_dict=True)
    _set_timm_input_size(model, model_cfg["vision_cfg"].get("image_size", 224))
    model.load_state_dict(load_file(path / WEIGHTS_NAME))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    return Encoder(model.to(device).eval(), tokenizer, image_transform(preprocess_cfg, train=False), model_cfg,
                   preprocess_cfg, device)
