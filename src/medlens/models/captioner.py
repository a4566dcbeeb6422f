"""The LAPVQA-style captioner (seed 004): a ViT producing patch tokens + a causal decoder with cross-attention.

The vision tower is an open_clip tower (the same architecture ``train_encoder`` trains, so it can
start from the encoder's weights: the pipeline's encoder->decoder edge). Its last-block tokens,
taken through open_clip's ``forward_intermediates`` (one call for open_clip ViTs and timm towers),
are projected to the decoder width. The decoder is Hugging Face's GPT-2 with cross-attention, so
generation (KV cache, greedy, beam search, repetition controls) is ``GenerationMixin``'s.
The whole model is a ``PreTrainedModel``: ``save_pretrained``/``from_pretrained`` work and the
Trainer can train it. Its classes live in :mod:`medlens.models.captioner_modeling`, which every saved folder
carries so that stock transformers loads it; this module builds one from an experiment's settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.config import DecoderConfig
from medlens.errors import ConfigError
from medlens.models.captioner_modeling import Captioner, CaptionerConfig, build_vision_tower, vision_tokens

__all__ = [
    "CaptionerConfig",
    "Captioner",
    "vision_tokens",
    "build_captioner",
    "caption_transform",
    "clip_image_processor",
    "load_vision_encoder",
    "ImageTower",
]

logger = logging.getLogger(__name__)


def load_vision_encoder(path) -> tuple[nn.Module, dict]:
    """Rebuild an image tower saved by :meth:`Captioner.save_vision_encoder`; returns (tower, preprocess_cfg)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medlens.errors import DataError
    from medlens.io import read_json

    path = Path(path)
    cfg = read_json(path / "config.json", expected="the image tower's config train_decoder wrote")
    try:
        visual = build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
        visual.load_state_dict(load_file(path / "vision.safetensors"))
        return visual.eval(), cfg["preprocess_cfg"]
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        # a damaged or foreign folder: named, not a traceback from open_clip or safetensors
        raise DataError(
            f"the image tower cannot be loaded ({type(e).__name__}: {e})",
            file=str(path),
            expected="config.json and vision.safetensors as train_decoder wrote them, complete",
        ) from e


def caption_transform(config: CaptionerConfig, *, train: bool):
    """open_clip's image transform for the tower's preprocessing config (the same one the encoder used).

    Training adds open_clip's default light random-resized crop; no flip (a flip moves the heart).
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**config.preprocess_cfg), is_train=train)


def clip_image_processor(preprocess_cfg: dict[str, Any]):
    """A ``transformers.CLIPImageProcessor`` giving the pixels of open_clip's evaluation transform for
    ``preprocess_cfg``, or None where it has no equivalent.

    ``shortest`` (resize the short side, centre-crop; every medlens encoder) and ``squash`` map onto it;
    ``longest`` pads to a square, which CLIPImageProcessor cannot, and neither can it crop a non-square size
    after a shortest-side resize. open_clip resizes PIL images with PIL, as the PIL backend does
    (``backend="pil"``: the same pixels); transformers' default torchvision backend keeps the resized image in
    floats where PIL rounds it to 8 bits, so its pixels differ by up to one grey level. One difference remains
    in both: where the resized side exceeds the crop by an odd number of pixels, torchvision's centre crop
    rounds the half to even and transformers' floors it, so the crop can sit one pixel further left or up
    (never for square images, such as the phantoms). Both are tested.
    """
    from open_clip.transform import PreprocessCfg
    from transformers import CLIPImageProcessor
    from transformers.image_utils import PILImageResampling

    pp = PreprocessCfg(**preprocess_cfg)
    height, width = (pp.size, pp.size) if isinstance(pp.size, int) else pp.size
    resample = {
        "bicubic": PILImageResampling.BICUBIC,
        "bilinear": PILImageResampling.BILINEAR,
        "nearest": PILImageResampling.NEAREST,
    }.get(pp.interpolation)
    if resample is None:
        return None
    common = {
        "do_convert_rgb": True,
        "resample": resample,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pp.mean),
        "image_std": list(pp.std),
    }
    if pp.resize_mode == "shortest" and height == width:
        return CLIPImageProcessor(
            size={"shortest_edge": height},
            do_center_crop=True,
            crop_size={"height": height, "width": width},
            **common,
        )
    if pp.resize_mode == "squash":
        return CLIPImageProcessor(size={"height": height, "width": width}, do_center_crop=False, **common)
    return None


def _open_clip_model_cfg(cfg: DecoderConfig, encoder_dir) -> tuple[dict, dict, nn.Module | None]:
    """(model_cfg, preprocess_cfg, trained tower or None) from the encoder folder or an open_clip config name."""
    import open_clip

    if encoder_dir is not None:
        from medlens.models.encoders import load_encoder

        # the encoder stages' own loader: a timm tower trained away from its native size is resized before its
        # weights load (open_clip alone failed on them), and a damaged folder is a DataError naming the file
        encoder = load_encoder(encoder_dir, device="cpu")
        return encoder.model_cfg, encoder.preprocess_cfg, encoder.model.visual
    from medlens.models.registry import register_open_clip_configs

    register_open_clip_configs()
    model_cfg = open_clip.get_model_config(cfg.vision_model)
    if model_cfg is None:
        raise ConfigError(
            f"unknown open_clip model '{cfg.vision_model}'",
            key="decoder.vision_model",
            expected=f"one of {', '.join(open_clip.list_models())}",
        )
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return model_cfg, {"size": size}, None


def build_captioner(cfg: DecoderConfig, tokenizer, encoder_dir=None) -> Captioner:
    """A :class:`Captioner` for ``cfg``: tower from the trained encoder (or a fresh one), fresh GPT-2 decoder.

    Args:
        cfg: decoder settings (``hidden_size``, ``num_layers``, ``num_heads``, ``max_length``, ...).
        tokenizer: the report tokenizer (its size and special ids configure the decoder).
        encoder_dir: ``train_encoder``'s output when ``init_from_encoder`` is set.
    """
    model_cfg, preprocess_cfg, trained_visual = _open_clip_model_cfg(
        cfg, encoder_dir if cfg.init_from_encoder else None
    )
    vision_cfg = dict(model_cfg["vision_cfg"])
    if cfg.image_size is not None:
        vision_cfg["image_size"] = cfg.image_size
        preprocess_cfg = {**preprocess_cfg, "size": cfg.image_size}
    probe = build_vision_tower(model_cfg["embed_dim"], vision_cfg)
    size = vision_cfg.get("image_size", 224)
    with torch.no_grad():
        _, n_tokens, width = vision_tokens(probe.eval(), torch.zeros(1, 3, size, size)).shape
    config = CaptionerConfig(
        vision_cfg=vision_cfg,
        embed_dim=model_cfg["embed_dim"],
        vision_width=width,
        preprocess_cfg=preprocess_cfg,
        freeze_vision=cfg.freeze_vision,
        num_image_tokens=n_tokens,
        decoder={
            "vocab_size": len(tokenizer),
            "n_positions": cfg.max_length,
            "n_embd": cfg.hidden_size,
            "n_layer": cfg.num_layers,
            "n_head": cfg.num_heads,
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.dropout,
            # GPT-2's tanh GELU as torch's one fused kernel: the same function as "gelu_new", which spends
            # a fifth of a CPU training step on its separate elementwise ops
            "activation_function": "gelu_pytorch_tanh",
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Captioner(config)
    if trained_visual is not None:
        missing, unexpected = model.visual.load_state_dict(trained_visual.state_dict(), strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"the encoder's image tower does not fit the captioner (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})",
                key="decoder.image_size",
                expected="the encoder's own image size when init_from_encoder is true",
            )
        logger.info("captioner image tower initialised from %s", encoder_dir)
    return model


class ImageTower:
    """``encode_images`` of a bare open_clip image tower (the captioner's ``decoder/encoder_final``): unit-norm
    pooled features, as open_clip's ``encode_image``, for probes and the out-of-distribution score."""

    def __init__(self, tower_dir: str | os.PathLike):
        from medlens.models.encoders import image_transform

        visual, preprocess_cfg = load_vision_encoder(tower_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.visual = visual.to(self.device).eval()
        self.transform = image_transform(preprocess_cfg, train=False)

    @torch.no_grad()
    def encode_images(self, images: list[Any]) -> torch.Tensor:
        pixels = torch.stack([self.transform(im) for im in images]).to(self.device)
        return torch.nn.functional.normalize(self.visual(pixels), dim=-1)  # [B, D]
