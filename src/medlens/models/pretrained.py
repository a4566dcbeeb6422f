"""Pretrained weights for contrastive encoders, loaded by the libraries that publish them.

* The whole model (``encoder.pretrained``) goes through open_clip's ``create_model``/``load_checkpoint``,
  which converts third-party layouts and stretches the text positional embedding to a longer context.
  A source is an open_clip pretrained tag of the model (``openai``), ``hf-hub:<repo>`` (the open_clip
  weights file of a Hub repo: ``timm/ViT-B-16-SigLIP`` holds the ``webli`` weights of open_clip's
  ``ViT-B-16-SigLIP``), ``local-dir:<folder>`` (an open_clip folder such as a medlens encoder) or a file.
* The vision tower alone (``encoder.pretrained_image``, timm towers) goes through ``timm.create_model``:
  a timm tag (``vit_base_patch16_dinov3.lvd1689m``), ``hf-hub:<repo>`` or a file. timm converts Meta's
  DINOv3 layout and resamples position embeddings to the tower's input size.
* The text tower alone (``encoder.pretrained_text_model`` + ``encoder.pretrained_text``) is copied from
  an open_clip model with the same text architecture (OpenAI CLIP ViT-B/32's for seed 000), its
  positional embedding resized to the context length with open_clip's ``resize_text_pos_embed``.

Every mismatch is a :class:`~medlens.errors.ConfigError`: open_clip only logs a tower that failed to
load and trains on from random weights.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

from torch import nn

from medlens.errors import ConfigError

__all__ = ["resolve_weights", "check_tower_sources", "load_image_tower", "load_text_tower", "local_dir"]

logger = logging.getLogger(__name__)

HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"
# open_clip's own preference order for the weights file of a folder (factory._find_checkpoint_in_dir)
_FOLDER_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
_SOURCES = "an open_clip tag of the model, hf-hub:<repo>, local-dir:<folder> or a weights file"


def refuse_pickle(e: BaseException, source: str, key: str) -> None:
    """Raise ConfigError naming ``key`` when ``e`` is torch.load's ``weights_only`` refusal of ``source`` (timm
    wraps it in a RuntimeError): a pickle of more than tensors, refused unrun, is not a download problem."""
    while e is not None and not isinstance(e, pickle.UnpicklingError):
        e = e.__cause__
    if e is not None:
        raise ConfigError(
            f"'{source}' holds a pickle of more than tensors, which medlens never unpickles "
            "(torch.load with weights_only refused it)",
            key=key,
            expected="weights as safetensors, or a checkpoint that holds tensors only",
        ) from e


def local_dir(source: str | None) -> Path | None:
    """The folder of a ``local-dir:`` source, else None."""
    return Path(source[len(LOCAL_DIR) :]).expanduser() if source and source.startswith(LOCAL_DIR) else None


def resolve_weights(source: str | None, *, key: str) -> str | None:
    """The local weights file behind ``source``, or ``source`` itself when it is an open_clip tag.

    Args:
        source: a tag, ``hf-hub:<repo>``, ``local-dir:<folder>`` or a file path; None for random init.
        key: the config key it came from, for errors.

    Returns:
        None, a path to an existing file, or the tag (open_clip resolves tags of the model it builds).

    Raises:
        ConfigError: the Hub repo is not reachable or cached, the folder holds no weights, or a path
            that names a weights file does not exist.
    """
    if source is None:
        return None
    if source.startswith(HF_HUB):
        from open_clip.pretrained import download_pretrained_from_hf

        try:
            return download_pretrained_from_hf(source[len(HF_HUB) :])
        except (FileNotFoundError, RuntimeError, OSError) as e:
            raise ConfigError(
                f"cannot fetch open_clip weights from '{source}' ({e})",
                key=key,
                expected="a Hub repo with open_clip_model.safetensors or open_clip_pytorch_model.bin, "
                "reachable or in the Hugging Face cache",
            ) from e
    folder = local_dir(source)
    if folder is not None:
        found = next((folder / name for name in _FOLDER_WEIGHTS if (folder / name).is_file()), None)
        if found is None:
            raise ConfigError(
                f"no weights in '{folder}'", key=key, expected=f"one of {', '.join(_FOLDER_WEIGHTS)}"
            )
        return str(found)
    path = Path(source).expanduser()
    if path.is_file():
        return str(path)
    if path.suffix in _WEIGHT_SUFFIXES or "/" in source:
        raise ConfigError(f"weights file '{source}' not found", key=key, expected=_SOURCES)
    return source


def check_tower_sources(
    model_cfg: dict, pretrained_image: str | None, text_model: str | None, text_source: str | None
) -> None:
    """Reject tower sources that cannot fit ``model_cfg``, before anything is built or downloaded.

    Raises:
        ConfigError: an image source for a non-timm tower or a tag of another architecture; a text
            source without its model (or the reverse); a donor with another text tower or activation.
    """
    import open_clip

    if pretrained_image:
        arch = model_cfg["vision_cfg"].get("timm_model_name")
        if arch is None:
            raise ConfigError(
                "only a timm vision tower takes separate weights",
                key="encoder.pretrained_image",
                expected="an open_clip model whose vision_cfg names timm_model_name, or encoder.pretrained",
            )
        _check_timm_source(pretrained_image, arch)
    if not (text_model or text_source):
        return
    if not text_model or not text_source:
        raise ConfigError(
            "pretrained_text and pretrained_text_model go together",
            key="encoder.pretrained_text",
            expected="both set (e.g. ViT-B-32-quickgelu and openai) or both unset",
        )
    donor_cfg = open_clip.get_model_config(text_model)
    if donor_cfg is None:
        raise ConfigError(
            f"unknown open_clip model '{text_model}'",
            key="encoder.pretrained_text_model",
            expected=f"one of {', '.join(open_clip.list_models())}",
        )
    # QuickGELU vs GELU is invisible in the weights: a mismatch computes silently wrong features
    if donor_cfg.get("quick_gelu", False) != model_cfg.get("quick_gelu", False):
        raise ConfigError(
            f"'{text_model}' uses quick_gelu={donor_cfg.get('quick_gelu', False)}, the encoder "
            f"quick_gelu={model_cfg.get('quick_gelu', False)}",
            key="encoder.pretrained_text_model",
            expected="a donor with the same activation (OpenAI weights need a -quickgelu model)",
        )
    ours, theirs = model_cfg["text_cfg"], donor_cfg["text_cfg"]
    differ = sorted(
        k for k in set(ours) | set(theirs) if k != "context_length" and ours.get(k) != theirs.get(k)
    )
    if differ or model_cfg.get("custom_text", False) != donor_cfg.get("custom_text", False):
        raise ConfigError(
            f"the text tower of '{text_model}' differs from the encoder's in "
            f"{', '.join(differ) or 'custom_text'}",
            key="encoder.pretrained_text_model",
            expected="a model with the same text_cfg (only context_length may differ)",
        )


def _check_timm_source(source: str, arch: str) -> None:
    import timm

    if Path(source).expanduser().is_file() or source.startswith(HF_HUB) or source.split(".")[0] == arch:
        return
    raise ConfigError(
        f"'{source}' is not a weights file or a tag of the tower's architecture '{arch}'",
        key="encoder.pretrained_image",
        expected=f"one of {', '.join(timm.list_pretrained(arch)) or arch + '.<tag>'}, "
        "hf-hub:<repo> or a file",
    )


def load_image_tower(model: nn.Module, source: str, *, key: str = "encoder.pretrained_image") -> None:
    """Load pretrained weights into ``model``'s timm vision trunk through ``timm.create_model``.

    The donor is built by timm at the trunk's current input size, so timm's checkpoint filter does
    the layout conversion and the position-embedding resampling; the projection head stays as it is.

    Raises:
        ConfigError: the tower is not a timm model, the tag names another architecture, timm cannot
            load the source, or the weights do not fit the trunk.
    """
    import timm

    trunk = model.visual.trunk  # check_tower_sources has made sure the tower is a timm model
    arch = trunk.pretrained_cfg["architecture"]
    _check_timm_source(source, arch)
    kwargs = {"pretrained": True, "num_classes": 0}
    name, path = source, Path(source).expanduser()
    if path.is_file():
        name, kwargs["pretrained_cfg_overlay"] = arch, {"file": str(path)}
    if isinstance(getattr(trunk, "global_pool", None), str):
        kwargs["global_pool"] = trunk.global_pool
    if hasattr(getattr(trunk, "patch_embed", None), "img_size"):
        kwargs["img_size"] = trunk.patch_embed.img_size
    try:
        donor = timm.create_model(name, **kwargs)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as e:
        refuse_pickle(e, source, key)
        raise ConfigError(
            f"timm cannot load '{source}' ({e})",
            key=key,
            expected="a timm tag or hf-hub:<repo> reachable or cached, or a weights file",
        ) from e
    # the classifier is never part of a contrastive tower: a missing one is a fresh layer, as in timm
    classifier = trunk.pretrained_cfg.get("classifier") or "head"
    missing, unexpected = trunk.load_state_dict(donor.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith(classifier + ".")]
    if missing or unexpected:
        raise ConfigError(
            f"'{source}' does not fit the vision tower {arch}: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}) weights",
            key=key,
            expected=f"weights of {arch}",
        )
    logger.info("vision tower %s: weights from %s", arch, source)


def load_text_tower(
    model: nn.Module, text_model: str, source: str, *, key: str = "encoder.pretrained_text"
) -> None:
    """Copy the text tower of open_clip's ``text_model`` with ``source`` weights into ``model``.

    Args:
        model: the encoder being built (:func:`check_tower_sources` has accepted the pair).
        text_model: an open_clip model name, e.g. ``ViT-B-32-quickgelu``.
        source: the donor's weights (tag, ``hf-hub:``, ``local-dir:`` or file).
        key: the config key, for errors.

    Raises:
        ConfigError: the donor cannot be built, or its text weights do not fit.
    """
    import open_clip
    from open_clip.model import resize_text_pos_embed

    try:
        donor = open_clip.create_model(text_model, pretrained=resolve_weights(source, key=key))
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as e:
        refuse_pickle(e, source, key)
        raise ConfigError(
            f"cannot build '{text_model}' with weights '{source}' ({e})", key=key, expected=_SOURCES
        ) from e
    target, donated = model.state_dict(), donor.state_dict()
    text_keys = [k for k in target if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")]
    absent = [k for k in text_keys if k not in donated]
    wrong = [k for k in text_keys if k in donated and not _fits(k, donated[k], target[k])]
    if absent or wrong:
        raise ConfigError(
            f"the text tower of '{text_model}' differs from the encoder's: {len(absent)} weights absent "
            f"(e.g. {absent[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})",
            key="encoder.pretrained_text_model",
            expected="a model with the same text_cfg",
        )
    state = {k: donated[k] for k in text_keys}
    resize_text_pos_embed(state, model)  # linear interpolation to the encoder's context length
    model.load_state_dict(state, strict=False)
    logger.info("text tower: weights of %s from %s", text_model, source)


def _fits(key: str, donated, target) -> bool:
    """Same shape; only a positional embedding may differ in length (resize_text_pos_embed stretches it)."""
    if "positional_embedding" in key:
        return donated.shape[-1] == target.shape[-1]
    return donated.shape == target.shape
