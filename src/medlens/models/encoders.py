"""Contrastive image-text encoders: built, saved and loaded through open_clip.

A trained encoder folder is open_clip's ``local-dir:`` layout (``open_clip_config.json`` holding
``model_cfg`` + ``preprocess_cfg``, and ``open_clip_model.safetensors``), so
``open_clip.create_model("local-dir:results/<exp>/encoder")`` works on it. :func:`load_encoder`
wraps such a folder with the one preprocessing function training used (:func:`image_transform`),
so evaluation and the ``medlens`` command can never drift from training.
"""
# long: every encoder family's open_clip build, save and load, and the one preprocessing they all use

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.config import EncoderConfig
from medlens.errors import ConfigError

__all__ = [
    "create_encoder",
    "create_encoder_for_training",
    "encoder_model_card",
    "stock_loading_code",
    "TrainableEncoder",
    "create_tokenizer",
    "image_transform",
    "save_encoder",
    "load_encoder",
    "check_encoder_folder",
    "Encoder",
    "CLIP_MEAN",
    "CLIP_STD",
    "skip_text_padding",
]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation (seed 000 asks for it)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME, WEIGHTS_NAME = "open_clip_config.json", "open_clip_model.safetensors"


def _set_timm_input_size(model: nn.Module, size: int) -> None:
    """open_clip's TimmModel does not pass ``image_size`` to timm (environment.md, pitfall 1): resize the trunk."""
    trunk = getattr(model.visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "set_input_size"):
        trunk.set_input_size(img_size=size)  # interpolates the position embeddings


def _encode_text_unpadded(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` on the tokens up to the batch's longest text.

    open_clip pads every text to ``context_length`` and runs the tower over all of it. In a causal text
    tower pooled at the end-of-text token, padding after that token cannot change the pooled feature, so
    cutting it is exact (to float rounding) and saves what it cost: on the demo's sampled sentences a
    batch's longest text fills 88 of 128 positions, and the text tower is two thirds of the step.
    """
    from open_clip.model import text_global_pool

    n = max(1, int(text.ne(0).sum(1).max()))  # open_clip's BPE pads with 0, after the end-of-text token
    text = text[:, :n]
    cast_dtype = self.transformer.get_cast_dtype()
    x = self.token_embedding(text).to(cast_dtype) + self.positional_embedding[:n].to(cast_dtype)
    x = self.transformer(x, attn_mask=self.attn_mask[:n, :n])
    x = text_global_pool(self.ln_final(x), text, self.text_pool_type)
    if self.text_projection is not None:
        x = (
            self.text_projection(x)
            if isinstance(self.text_projection, nn.Linear)
            else x @ self.text_projection
        )
    return nn.functional.normalize(x, dim=-1) if normalize else x


def skip_text_padding(model: nn.Module) -> bool:
    """Make ``model`` encode texts without their padding (:func:`_encode_text_unpadded`) where that is exact.

    Only open_clip's own ``CLIP`` with a causal BPE text tower pooled at the end-of-text token (argmax of
    the ids) qualifies; other towers (Hugging Face text models, SigLIP's last-token pooling, CoCa) are
    left as they are. The weights and state dict are untouched; ``model.forward`` picks the method up,
    so it also holds under DDP. Training uses it; :func:`load_encoder` does not, because the cut depends
    on the input's values, which an ONNX trace would freeze. Returns whether it applied.
    """
    import types

    from open_clip.model import CLIP

    ok = (
        type(model) is CLIP
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) == "argmax"
    )
    if ok:
        model.encode_text = types.MethodType(_encode_text_unpadded, model)
    return ok


def _model_cfg(cfg: EncoderConfig) -> dict[str, Any]:
    """The open_clip model config of ``cfg.model`` with the experiment's size, context and bias applied."""
    import open_clip

    from medlens.models.registry import register_open_clip_configs

    register_open_clip_configs()
    base = open_clip.get_model_config(cfg.model)
    if base is None:
        raise ConfigError(
            f"unknown open_clip model '{cfg.model}'",
            key="encoder.model",
            expected=f"one of {', '.join(open_clip.list_models())}",
        )
    model_cfg = copy.deepcopy(base)
    model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    model_cfg["text_cfg"]["context_length"] = cfg.context_length
    model_cfg["init_logit_scale"] = math.log(1.0 / cfg.init_temperature)
    if cfg.loss == "siglip":
        model_cfg["init_logit_bias"] = cfg.init_logit_bias if cfg.init_logit_bias is not None else -10.0
    return model_cfg


def create_encoder(
    cfg: EncoderConfig,
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Build the encoder of ``cfg``: random init, whole-model weights, or separate tower weights.

    Args:
        cfg: encoder settings; ``model`` names an open_clip config; ``pretrained`` (whole model),
            ``pretrained_image`` (timm vision tower) and ``pretrained_text_model``/``pretrained_text``
            (text tower) name weights (:mod:`medlens.models.pretrained`).
        device: where the model is built; ``"meta"`` builds the architecture without memory (no weights).

    Returns:
        ``(model, model_cfg, preprocess_cfg)``: the open_clip model, the config that rebuilds it and
        the preprocessing it expects (both are written by :func:`save_encoder`).

    Raises:
        ConfigError: unknown model, weights that cannot be loaded or do not fit, bad normalisation.
    """
    import open_clip

    from medlens.models import pretrained
    from medlens.models.remote_code import refuse_remote_code

    refuse_remote_code()  # an hf-hub: or local-dir: text tower's config may name code of its own
    model_cfg = _model_cfg(cfg)
    pretrained.check_tower_sources(
        model_cfg, cfg.pretrained_image, cfg.pretrained_text_model, cfg.pretrained_text
    )
    kwargs = {k: model_cfg[k] for k in ("init_logit_scale", "init_logit_bias") if k in model_cfg}
    weights = pretrained.resolve_weights(cfg.pretrained, key="encoder.pretrained")
    try:
        # timm towers load at their native size; create_model then resizes them (set_input_size).
        # Built under the device context, so "meta" never allocates or initialises weights.
        with torch.device(device):
            model = open_clip.create_model(
                cfg.model,
                pretrained=weights,
                force_image_size=cfg.image_size,
                force_context_length=cfg.context_length,
                output_dict=True,
                device=device,
                **kwargs,
            )
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as e:
        pretrained.refuse_pickle(e, str(cfg.pretrained), "encoder.pretrained")
        raise ConfigError(
            f"cannot build '{cfg.model}' with pretrained={cfg.pretrained!r} ({e})",
            key="encoder.pretrained",
            expected="an open_clip pretrained tag, hf-hub:<repo>, local-dir:<folder> or a checkpoint "
            "file reachable from here (set HF_HUB_OFFLINE=1 to fail fast offline)",
        ) from e
    _set_timm_input_size(model, cfg.image_size)
    if cfg.pretrained_image:
        pretrained.load_image_tower(model, cfg.pretrained_image)
    if cfg.pretrained_text:
        pretrained.load_text_tower(model, cfg.pretrained_text_model, cfg.pretrained_text)
    if cfg.reset_logit_scale:  # seed 002 restarts temperature and bias even from pretrained weights
        with torch.no_grad():
            model.logit_scale.fill_(model_cfg["init_logit_scale"])
            if getattr(model, "logit_bias", None) is not None:
                model.logit_bias.fill_(model_cfg["init_logit_bias"])
    mean, std = _normalisation(cfg, model)
    preprocess_cfg = {
        "size": cfg.image_size,
        "mode": "RGB",
        "mean": mean,
        "std": std,
        "interpolation": "bicubic",
        "resize_mode": cfg.resize_mode,
    }
    return model, model_cfg, preprocess_cfg


def _normalisation(cfg: EncoderConfig, model: nn.Module) -> tuple[list[float], list[float]]:
    """``image_mean``/``image_std``, else the timm tower's own statistics (pretrained_cfg), else CLIP's."""
    trunk_cfg = getattr(getattr(model.visual, "trunk", None), "pretrained_cfg", None) or {}
    mean = cfg.image_mean or list(trunk_cfg.get("mean", CLIP_MEAN))
    std = cfg.image_std or list(trunk_cfg.get("std", CLIP_STD))
    for key, value in (("image_mean", mean), ("image_std", std)):
        if len(value) != 3 or (key == "image_std" and min(value) <= 0):
            raise ConfigError(
                f"{value} is not a per-channel {key[6:]}",
                key=f"encoder.{key}",
                expected="three numbers (R, G, B)" + (", all positive" if key == "image_std" else ""),
            )
    return [float(v) for v in mean], [float(v) for v in std]


def create_tokenizer(cfg: EncoderConfig, model_cfg: dict[str, Any]):
    """The tokenizer of the text tower: open_clip's BPE, or the Hugging Face tokenizer the model config names.

    A Hugging Face tokenizer is read from ``cfg.tokenizer``, else from a ``local-dir:`` weights folder that
    holds one, else from the config's ``hf_tokenizer_name`` (e.g. ``timm/ViT-B-16-SigLIP``). open_clip's
    ``get_tokenizer`` is not used for those: it looks the name up on the Hub only.

    Raises:
        ConfigError: the tokenizer cannot be loaded, or ``tokenizer`` is set for a BPE text tower.
    """
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from medlens.models.pretrained import local_dir
    from medlens.models.remote_code import refuse_remote_code

    text_cfg = model_cfg["text_cfg"]
    if not text_cfg.get("hf_tokenizer_name"):
        if cfg.tokenizer:
            raise ConfigError(
                f"'{cfg.model}' uses open_clip's BPE tokenizer",
                key="encoder.tokenizer",
                expected="null (only text towers with hf_tokenizer_name take a Hugging Face tokenizer)",
            )
        return open_clip.get_tokenizer(cfg.model, context_length=cfg.context_length)
    folder = local_dir(cfg.pretrained)
    source = cfg.tokenizer or (
        str(folder)
        if folder and (folder / "tokenizer_config.json").is_file()
        else text_cfg["hf_tokenizer_name"]
    )
    refuse_remote_code()
    try:
        return HFTokenizer(
            source,
            context_length=cfg.context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **{**text_cfg.get("tokenizer_kwargs", {}), "trust_remote_code": False},
        )
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load the tokenizer '{source}' ({e})",
            key="encoder.tokenizer",
            expected="a Hugging Face tokenizer id reachable or cached, or a local folder",
        ) from e


# how open_clip's evaluation transform fits an image to the square, per preprocess_cfg["resize_mode"]
_RESIZE_WORDS = {
    "shortest": "shortest side to size, centre crop",
    "longest": "longest side to size, padded",
    "squash": "both sides to size, no crop",
}


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


@dataclass
class TrainableEncoder:
    """What a trainer needs of an encoder, from :func:`create_encoder_for_training`."""

    model: nn.Module  # open_clip model, towers locked as configured
    model_cfg: dict[str, Any]  # open_clip model config (saved with the weights)
    preprocess_cfg: dict[str, Any]  # open_clip preprocessing config (size, mean, std, ...)
    tokenizer: Any  # text -> token ids [B, context_length]
    train_transform: Any  # PIL image -> tensor, with the random crop
    eval_transform: Any  # PIL image -> tensor, deterministic


def set_up_for_training(model, cfg: EncoderConfig) -> bool:
    """Lock towers, switch on gradient checkpointing and skip text padding as ``cfg`` says, in place; returns
    whether the text tower runs on each batch's longest text (:func:`skip_text_padding`)."""
    if cfg.lock_image:
        model.lock_image_tower(unlocked_groups=cfg.lock_image_unlocked_groups)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=cfg.lock_text_unlocked_layers)
    if cfg.gradient_checkpointing:
        model.set_grad_checkpointing(True)
    return skip_text_padding(model)


def create_encoder_for_training(cfg: EncoderConfig) -> TrainableEncoder:
    """The model, tokenizer and transforms of ``cfg`` ready for training, in one call.

    Towers are locked through open_clip's ``lock_*_tower`` (LiT; the last N groups/layers may stay
    trainable), gradient checkpointing is switched on when asked, and the text tower runs on each
    batch's longest text where that is exact (:func:`skip_text_padding`).
    """
    model, model_cfg, preprocess_cfg = create_encoder(cfg)
    if set_up_for_training(model, cfg):
        logger.info(
            "text tower runs on each batch's longest text, not the whole context (exact for this tower)"
        )
    return TrainableEncoder(
        model,
        model_cfg,
        preprocess_cfg,
        create_tokenizer(cfg, model_cfg),
        image_transform(preprocess_cfg, train=True, crop_scale=cfg.random_crop_scale),
        image_transform(preprocess_cfg, train=False),
    )


def save_encoder(
    model: nn.Module,
    path: str | os.PathLike,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    tokenizer: Any = None,
) -> None:
    """Write ``model`` (or ``state_dict``) in open_clip's ``local-dir:`` layout.

    A Hugging Face tokenizer is saved beside the weights: open_clip's ``get_tokenizer("local-dir:...")``
    reads it from that folder, so the encoder reloads offline.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2) + "\n"
    )
    if model_cfg["text_cfg"].get("hf_tokenizer_name") and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(path))


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


def check_encoder_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it holds an encoder's open_clip config and weights (a check of file names only,
    for commands that would first do other work with the folder).

    Raises:
        ConfigError: when it does not (a decoder folder, a results folder, a typo).
    """
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        # a typo is told as such, not as a folder that lacks an encoder's files
        found = "" if path.is_dir() else " (a file)" if path.exists() else " (it does not exist)"
        raise ConfigError(
            f"'{path}' is not an encoder folder{found}",
            expected=f"{CONFIG_NAME} and {WEIGHTS_NAME} in it "
            "(results/<experiment>/encoder written by train_encoder)",
        )
    return path


def load_encoder(path: str | os.PathLike, *, device: str | torch.device | None = None) -> Encoder:
    """Load an encoder folder written by ``train_encoder`` (or any open_clip ``local-dir:`` folder).

    Raises:
        ConfigError: when the folder lacks the open_clip config or weights.
        DataError: naming the file when the config or weights are damaged or do not fit each other, or the
            folder asks to run its own code (an ``auto_map``), which medlens never does.
    """
    import open_clip
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medlens.errors import DataError
    from medlens.io import read_json
    from medlens.models.remote_code import refuse_remote_code

    path = check_encoder_folder(path)
    expected = "open_clip's local-dir config: {'model_cfg': {'vision_cfg': ..., 'text_cfg': ...}, 'preprocess_cfg': ...}"
    saved = read_json(path / CONFIG_NAME, expected=expected)
    model_cfg, preprocess_cfg = saved.get("model_cfg"), saved.get("preprocess_cfg") or {}
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict):
        raise DataError("no model_cfg with a vision_cfg", file=str(path / CONFIG_NAME), expected=expected)
    refuse_remote_code()
    try:
        # weights are loaded after the timm trunk is resized, so position embeddings match
        model = open_clip.create_model(f"local-dir:{path}", load_weights=False, output_dict=True)
        _set_timm_input_size(model, model_cfg["vision_cfg"].get("image_size", 224))
        # open_clip passes the config's tokenizer_kwargs to transformers; the caller's override them
        hf_tokenizer = bool((model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name"))
        tokenizer = open_clip.get_tokenizer(
            f"local-dir:{path}", **({"trust_remote_code": False} if hf_tokenizer else {})
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise DataError(
            f"open_clip cannot build the model this folder describes ({type(e).__name__}: {e})",
            file=str(path / CONFIG_NAME),
            expected=expected + ", with no code of its own to run",
        ) from e
    try:
        model.load_state_dict(load_file(path / WEIGHTS_NAME))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise DataError(
            f"the weights cannot be loaded into the model {CONFIG_NAME} describes ({e})",
            file=str(path / WEIGHTS_NAME),
            expected="the safetensors file train_encoder wrote with this config, complete",
        ) from e
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Encoder(
        model.to(device).eval(),
        tokenizer,
        image_transform(preprocess_cfg, train=False),
        model_cfg,
        preprocess_cfg,
        device,
    )


def stock_loading_code(model_cfg: dict[str, Any], folder: str = ".") -> list[str]:
    """Lines of Python that load the folder with open_clip alone, model, transforms and tokenizer.

    open_clip builds a timm tower at the timm model's own input size whatever ``image_size`` says (its
    ``TimmModel`` does not pass it on), so a tower trained at another size is resized before its weights load.
    """
    lines = ["import open_clip", f'folder = "{folder}"  # this folder']
    size = model_cfg["vision_cfg"].get("image_size")
    timm_name = model_cfg["vision_cfg"].get("timm_model_name")
    native = _timm_native_size(timm_name) if timm_name else None
    if native is not None and size is not None and native != size:
        lines += [
            "from safetensors.torch import load_file",
            'model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", load_weights=False)',
            f"model.visual.trunk.set_input_size(img_size={size})  # open_clip builds timm towers at {native} px",
            'model.load_state_dict(load_file(f"{folder}/open_clip_model.safetensors"))',
        ]
    else:
        lines.append('model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")')
    lines.append('tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")')
    return lines


def _timm_native_size(name: str) -> int | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else None


def encoder_model_card(
    info: dict[str, Any], preprocess_cfg: dict[str, Any], model_cfg: dict[str, Any], steps: int
) -> str:
    """The folder's ``README.md``: a Hugging Face model card (front matter from :mod:`medlens.models.card`)
    saying what was trained on what, what it is not for, how to load it, its input and prompts (``info`` is
    ``medlens.json``)."""
    from medlens.models.card import (
        card_metadata,
        evaluation_section,
        render_model_card,
        training_data_section,
    )

    cfg = info["config"]
    zs = info.get("zero_shot") or {}
    data = card_metadata(
        "open_clip",
        info.get("preprocessing"),
        library_name="open_clip",
        base_model=[cfg.get(k) for k in ("pretrained", "pretrained_image", "pretrained_text")],
        tags=["clip", "image-text"],
    )
    body = [
        f"# medlens encoder: preset `{cfg['preset']}` (open_clip `{cfg['model']}`)",
        "",
        "A contrastive image-text encoder trained by medlens (`train_encoder`). Load it with open_clip alone "
        "(or `medlens.models.encoders.load_encoder`):",
        "",
        "```python",
        *stock_loading_code(model_cfg),
        "```",
        "",
        *training_data_section(info.get("preprocessing")),
        *evaluation_section(
            None,
            "`evaluate_encoder` writes this model's zero-shot AUC, retrieval recall and linear-probe scores, "
            "with their protocol, to `results/<experiment>/eval/encoder.json`; `medlens export` puts them in "
            "its card's model-index",
        ),
        "## Training",
        "",
        f"- trained: {info['steps']} of {steps} steps, {info['samples_seen']:,} pairs seen; {info['n_train']} train / "
        f"{info['n_val']} validation pairs; loss `{cfg['loss']}`, optimizer `{cfg['optim']}` learning rate {cfg['learning_rate']}",
        f"- weights: `open_clip_model.safetensors` = {info['weights']['open_clip_model.safetensors']} "
        f"(step {info['best_step']}, {info['best_metric']} = {info['best_value']}); `last.safetensors` = final step",
        f"- input: {preprocess_cfg['size']} px RGB, {preprocess_cfg['interpolation']} resize "
        f"({_RESIZE_WORDS[preprocess_cfg.get('resize_mode', 'shortest')]}), mean "
        f"{preprocess_cfg['mean']}, std {preprocess_cfg['std']} (grey X-rays are replicated to 3 channels)",
        f"- text: context length {model_cfg['text_cfg']['context_length']} tokens; embedding size {model_cfg['embed_dim']}",
        f"- zero-shot prompts: set `{zs.get('templates', 'chexzero')}` (resources/prompts/) for labels "
        f"{', '.join(zs.get('labels', []))}",
        f"- final validation: {json.dumps(info['final_validation'])}",
        f"- medlens {info['medlens_version']}",
    ]
    return render_model_card(data, body)
