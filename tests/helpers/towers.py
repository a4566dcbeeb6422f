"""Tiny-width twins of the seed encoder architectures, a tiny tokenizer and an offline Hugging Face cache.

A twin is the shipped open_clip config (``models/open_clip_configs/<name>.json``) with only its widths,
depths and sizes shrunk, so building and loading it runs the code the full-size preset runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from helpers.bpe import byte_level_bpe
from medlens.models.registry import OPEN_CLIP_CONFIGS_DIR, register_open_clip_configs

TINY_TEXT = {"width": 64, "heads": 2, "layers": 2, "context_length": 24}

# timm's smallest DINOv3 (192-d): the 768->512 bridge of the preset becomes 192->64
HYBRID_CHANGES = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "timm_model_name": "vit_tiny_patch16_dinov3_qkvb"},
    "text_cfg": TINY_TEXT,
}
TIMM_TINY = {  # a timm tower trained away from its native 224 px, as the siglip_base preset is (448)
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": "vit_tiny_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "token",
        "timm_proj": "linear",
    },
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
# the donor of the text tower: an open_clip CLIP (quick_gelu, like OpenAI's ViT-B-32) with the same text tower
CLIP_DONOR_CFG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {**TINY_TEXT, "vocab_size": 49408},
}
# a ViT with learned absolute position embeddings at 224 px, like SigLIP's webli tower (no projection: 192-d)
SIGLIP_CHANGES = {
    "embed_dim": 192,
    "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224"},
    "text_cfg": {"width": 64, "heads": 2, "layers": 2, "hf_tokenizer_name": "medlens-test/tiny-sig"},
}


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def register_config(folder: Path, name: str, model_cfg: dict) -> str:
    """Write ``model_cfg`` as ``<folder>/<name>.json`` and add it to open_clip's registry."""
    import open_clip

    register_open_clip_configs()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(path)
    return name


def register_twin(folder: Path, shipped: str, name: str, changes: dict) -> str:
    """Register a tiny twin of the shipped config ``shipped`` under ``name``."""
    base = json.loads((OPEN_CLIP_CONFIGS_DIR / f"{shipped}.json").read_text())
    return register_config(folder, name, _merge(base, changes))


def make_tokenizer(folder: Path, corpus: list[str]):
    """A byte-level BPE tokenizer trained offline and saved as a Hugging Face tokenizer folder."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, ["<pad>", "</s>", "<unk>"], vocab_size=300),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.save_pretrained(folder)
    return fast


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face cache laid out as huggingface_hub writes it.

    ``config.json`` is recorded as absent (``.no_exist``), as the Hub client records a 404, so that
    offline lookups of it fail fast instead of being taken for a network error.
    """
    revision = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / ".no_exist" / revision).mkdir(parents=True, exist_ok=True)
    (repo / ".no_exist" / revision / "config.json").touch()
    return snapshot
