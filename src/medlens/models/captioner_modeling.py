"""The captioner's model classes, in a module that imports only torch, transformers and open_clip.

``save_pretrained`` copies this file into every captioner folder and names its classes in ``config.json``
(``auto_map``; transformers' ``register_for_auto_class``), so the folder loads and generates with stock
transformers and no medlens::

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)

medlens itself loads folders with :class:`Captioner` from its own installed code, never the folder's copy
(nothing medlens loads from disk runs code). Building a captioner from an experiment's settings, and its
transforms, live in :mod:`medlens.models.captioner`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel

__all__ = ["CaptionerConfig", "Captioner", "build_vision_tower", "vision_tokens"]

logger = logging.getLogger(__name__)


class CaptionerConfig(PretrainedConfig):
    """Architecture of a :class:`Captioner`.

    Args:
        vision_cfg: open_clip ``vision_cfg`` of the image tower (as in ``open_clip_config.json``).
        embed_dim: open_clip embedding size (needed to rebuild the tower's projection).
        vision_width: channels of the tower's tokens.
        preprocess_cfg: open_clip ``preprocess_cfg`` (size, mean, std, interpolation).
        decoder: keyword arguments of ``transformers.GPT2Config`` (``add_cross_attention`` is forced on).
        freeze_vision: keep the tower's weights fixed during training.
        num_image_tokens: tokens the tower yields per image (prefix + patches).
    """

    model_type = "medlens_captioner"

    def __init__(
        self,
        vision_cfg: dict | None = None,
        embed_dim: int = 0,
        vision_width: int = 0,
        preprocess_cfg: dict | None = None,
        decoder: dict | None = None,
        freeze_vision: bool = False,
        num_image_tokens: int = 0,
        **kwargs: Any,
    ):
        self.vision_cfg = vision_cfg or {}
        self.embed_dim = embed_dim
        self.vision_width = vision_width
        self.preprocess_cfg = preprocess_cfg or {}
        self.decoder = {**(decoder or {}), "add_cross_attention": True}
        self.freeze_vision = freeze_vision
        self.num_image_tokens = num_image_tokens
        super().__init__(**kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> CaptionerConfig:
        # transformers takes an attribute named ``decoder`` for a text sub-config; here it is GPT-2's keyword
        # arguments, and the token ids generation needs are on this config
        return self


def build_vision_tower(embed_dim: int, vision_cfg: dict[str, Any]) -> nn.Module:
    """open_clip's image tower for ``vision_cfg``, at its ``image_size``.

    open_clip's TimmModel builds a timm trunk at timm's native size whatever ``image_size`` says, so a tower
    trained at another size (siglip_base's 448 px) would neither load its position embeddings nor take its
    images: the trunk is resized here, as medlens's encoder loader does.
    """
    from open_clip.model import _build_vision_tower  # open_clip's own tower builder (as CoCa uses it)

    visual = _build_vision_tower(embed_dim, vision_cfg)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "set_input_size"):
        trunk.set_input_size(img_size=vision_cfg.get("image_size", 224))
    return visual


def vision_tokens(visual: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Final-block tokens of an open_clip image tower, prefix (class) tokens first.

    Args:
        visual: ``model.visual`` of an open_clip model (its own ViT or a timm tower).
        pixel_values: [B, 3, H, W] normalised images.

    Returns:
        [B, T, C] tokens after the tower's final norm.
    """
    out = visual.forward_intermediates(
        pixel_values,
        indices=1,
        normalize_intermediates=True,
        intermediates_only=True,
        output_fmt="NCHW",
        output_extra_tokens=True,
    )
    spatial = out["image_intermediates"][-1].flatten(2).transpose(1, 2)  # [B, H*W, C]
    prefix = out.get("image_intermediates_prefix")
    if prefix is not None and prefix[-1] is not None and prefix[-1].shape[1] > 0:
        return torch.cat([prefix[-1], spatial], dim=1)
    return spatial


class Captioner(PreTrainedModel, GenerationMixin):
    """Image tower -> linear bridge -> GPT-2 decoder cross-attending to the image tokens."""

    config_class = CaptionerConfig
    main_input_name = "pixel_values"
    base_model_prefix = "captioner"
    supports_gradient_checkpointing = True

    def __init__(self, config: CaptionerConfig):
        super().__init__(config)
        self.visual = build_vision_tower(config.embed_dim, config.vision_cfg)
        dec_cfg = GPT2Config(**config.decoder)
        # tower width -> decoder width; the norm gives cross-attention unit-scale keys from the first step
        self.bridge = nn.Sequential(
            nn.Linear(config.vision_width, dec_cfg.n_embd), nn.LayerNorm(dec_cfg.n_embd)
        )
        # where each image token sits: GPT-2's cross-attention has no positions of its own, and a tower
        # trained from scratch carries little, so findings that differ by place (left vs right) need it
        self.image_pos = nn.Parameter(torch.zeros(1, config.num_image_tokens, dec_cfg.n_embd))
        self.decoder = GPT2LMHeadModel(dec_cfg)
        if config.freeze_vision:
            self.visual.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # the tower and GPT-2 initialise themselves; only the bridge's linear layer is ours
        bridge = getattr(self, "bridge", None)
        if bridge is not None and module is bridge[0]:
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        if module is self:
            nn.init.normal_(self.image_pos, std=0.02)

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.config.freeze_vision:
            # a frozen tower stays in eval mode: BatchNorm (ResNet towers) would otherwise normalise with
            # each batch's statistics and overwrite the running ones the encoder was evaluated with
            self.visual.eval()
        return self

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, T, n_embd] tokens the decoder attends to."""
        if self.config.freeze_vision:
            with torch.no_grad():
                tokens = vision_tokens(self.visual, pixel_values)
        else:
            tokens = vision_tokens(self.visual, pixel_values)
        return self.bridge(tokens) + self.image_pos  # [B, T, n_embd]

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Cross-entropy over report tokens (GPT-2 shifts ``labels`` itself; -100 is ignored).

        ``kwargs`` reach GPT-2's loss: the Trainer passes ``num_items_in_batch`` (the target tokens of the whole
        accumulated step) and then leaves the loss unscaled, so the loss must be divided by it here.
        """
        return self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=self.encode(pixel_values),
            labels=labels,
            return_dict=True,
            **kwargs,
        )

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, **generate_kwargs: Any) -> torch.Tensor:
        """Generate report token ids (starting after the BOS token) for a batch of images.

        ``generate_kwargs`` go to ``GenerationMixin.generate`` (``max_new_tokens``, ``num_beams``,
        ``repetition_penalty``, ``no_repeat_ngram_size``, ``use_cache``...) and override the model's
        ``generation_config`` (its folder's ``generation_config.json``: the decoding its evaluation used).
        """
        enc = self.encode(pixel_values)
        bos = self.decoder.config.bos_token_id
        input_ids = torch.full((enc.shape[0], 1), bos, dtype=torch.long, device=enc.device)
        config = copy.deepcopy(generate_kwargs.pop("generation_config", None) or self.generation_config)
        for name in ("pad_token_id", "eos_token_id"):  # a folder written before generation_config.json
            if getattr(config, name) is None:
                setattr(config, name, getattr(self.decoder.config, name))
        model_kwargs = config.update(**generate_kwargs)  # what is not a decoding setting goes to the model
        # GPT-2 has no positions past n_positions: a longer max_new_tokens would fail in its embedding
        room = self.decoder.config.n_positions - input_ids.shape[1]
        if config.max_new_tokens is not None and config.max_new_tokens > room:
            logger.warning(
                "max_new_tokens %d is more than the decoder's %d positions allow; generating at most %d tokens",
                config.max_new_tokens,
                self.decoder.config.n_positions,
                room,
            )
            config.max_new_tokens = room
        out = self.decoder.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            encoder_hidden_states=enc,
            generation_config=config,
            **model_kwargs,
        )
        return out[:, 1:]

    def save_vision_encoder(self, path) -> None:
        """Write the image tower alone (seed 004's ``encoder_final``) for frozen-feature probes."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.visual.state_dict().items()}, path / "vision.safetensors"
        )
        (path / "config.json").write_text(
            json.dumps(
                {
                    "embed_dim": self.config.embed_dim,
                    "vision_cfg": self.config.vision_cfg,
                    "vision_width": self.config.vision_width,
                    "preprocess_cfg": self.config.preprocess_cfg,
                },
                indent=2,
            )
            + "\n"
        )


CaptionerConfig.register_for_auto_class()
Captioner.register_for_auto_class("AutoModel")
