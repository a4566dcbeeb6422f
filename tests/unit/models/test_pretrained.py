"""Pretrained weights load offline through the code the seed presets use, on tiny checkpoints saved here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers.towers import (
    CLIP_DONOR_CFG,
    HYBRID_CHANGES,
    SIGLIP_CHANGES,
    hub_snapshot,
    make_tokenizer,
    register_config,
    register_twin,
)
from medlens.config import EncoderConfig
from medlens.errors import ConfigError
from medlens.models.encoders import create_encoder, create_tokenizer, load_encoder, save_encoder

CORPUS = [
    "Left pleural effusion.",
    "Normal knee joint, Kellgren-Lawrence grade 0.",
    "What organ is shown? The liver.",
]


def _save(state: dict, path) -> str:
    save_file({k: v.detach().contiguous() for k, v in state.items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    return {
        "hybrid": register_twin(folder, "medlens-dinov3-b16-clip-b32", "medlens-test-hybrid", HYBRID_CHANGES),
        "donor": register_config(folder, "medlens-test-clip-donor", CLIP_DONOR_CFG),
        "folder": folder,
    }


def test_dinov3_and_clip_text_weights_load_into_the_hybrid_with_a_longer_context(configs, tmp_path):
    import open_clip
    import timm

    torch.manual_seed(1)
    dino = timm.create_model(
        "vit_tiny_patch16_dinov3_qkvb", num_classes=0
    )  # stands in for the LVD-1689M weights
    dino_file = _save(dino.state_dict(), tmp_path / "dinov3.safetensors")
    donor = open_clip.create_model(configs["donor"])  # stands in for OpenAI's ViT-B-32 (quickgelu)
    donor_file = _save(donor.state_dict(), tmp_path / "clip.safetensors")

    cfg = EncoderConfig(
        model=configs["hybrid"],
        image_size=32,
        context_length=48,
        pretrained_image=dino_file,
        pretrained_text_model=configs["donor"],
        pretrained_text=donor_file,
    )
    model, model_cfg, preprocess_cfg = create_encoder(cfg)

    for name, value in dino.state_dict().items():
        assert torch.equal(model.visual.trunk.state_dict()[name], value), name
    text = {k: v for k, v in donor.state_dict().items() if not k.startswith("visual.") and k != "logit_scale"}
    for name, value in text.items():
        if name != "positional_embedding":
            assert torch.equal(model.state_dict()[name], value), name
    # 24 pretrained positions stretched over 48 (open_clip's linear interpolation)
    stretched = F.interpolate(
        text["positional_embedding"].T[None], size=48, mode="linear", align_corners=False
    )[0].T
    assert model.positional_embedding.shape == (48, 64)
    assert torch.allclose(model.positional_embedding, stretched)
    assert model.visual.head.proj.weight.shape == (
        64,
        192,
    )  # the bridge is new: 192 -> 64 here, 768 -> 512 full size
    assert model_cfg["text_cfg"]["context_length"] == 48
    assert preprocess_cfg["mean"] == [0.485, 0.456, 0.406]  # DINOv3's own statistics
    tokens = open_clip.get_tokenizer(configs["hybrid"], context_length=48)(CORPUS)
    out = model(torch.randn(3, 3, 32, 32), tokens)
    assert out["image_features"].shape == out["text_features"].shape == (3, 64)


def test_tower_sources_that_do_not_fit_are_config_errors(configs):
    base = dict(model=configs["hybrid"], image_size=32, context_length=24)
    with pytest.raises(
        ConfigError,
        match=r"encoder\.pretrained_image: .*not a weights file or a tag of .*"
        r"vit_tiny_patch16_dinov3_qkvb",
    ):
        create_encoder(EncoderConfig(**base, pretrained_image="vit_base_patch16_dinov3.lvd1689m"))
    with pytest.raises(ConfigError, match=r"pretrained_text and pretrained_text_model go together"):
        create_encoder(EncoderConfig(**base, pretrained_text="openai"))
    gelu_donor = register_config(
        configs["folder"], "medlens-test-gelu-donor", {**CLIP_DONOR_CFG, "quick_gelu": False}
    )
    with pytest.raises(ConfigError, match=r"encoder\.pretrained_text_model: .*quick_gelu=False"):
        create_encoder(
            EncoderConfig(**base, pretrained_text_model=gelu_donor, pretrained_text="x.safetensors")
        )
    wide = register_config(
        configs["folder"],
        "medlens-test-wide-donor",
        {**CLIP_DONOR_CFG, "text_cfg": {**CLIP_DONOR_CFG["text_cfg"], "width": 96}},
    )
    with pytest.raises(
        ConfigError, match=r"text tower of 'medlens-test-wide-donor' differs from the encoder's in width"
    ):
        create_encoder(EncoderConfig(**base, pretrained_text_model=wide, pretrained_text="wide.safetensors"))
    with pytest.raises(
        ConfigError, match=r"encoder\.pretrained: weights file 'missing/w.safetensors' not found"
    ):
        create_encoder(EncoderConfig(**base, pretrained="missing/w.safetensors"))
    with pytest.raises(
        ConfigError, match=r"encoder\.pretrained: cannot fetch open_clip weights from 'hf-hub:"
    ):
        create_encoder(EncoderConfig(**base, pretrained="hf-hub:medlens-test/not-cached"))


def test_siglip_weights_and_tokenizer_load_from_a_cached_hub_repo_at_448_px(configs, tmp_path, monkeypatch):
    """The siglip_base path: hf-hub weights at 224 px, interpolated to 448 px, with the repo's tokenizer."""
    import huggingface_hub.constants
    from timm.layers import resample_abs_pos_embed

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = hub_snapshot(cache, "medlens-test/tiny-sig")
    vocab = len(make_tokenizer(snapshot, CORPUS * 20))
    changes = {**SIGLIP_CHANGES, "text_cfg": {**SIGLIP_CHANGES["text_cfg"], "vocab_size": vocab}}
    name = register_twin(configs["folder"], "medlens-sig-b16-448", "medlens-test-sig", changes)
    webli, _, _ = create_encoder(EncoderConfig(model=name, image_size=224, context_length=64, loss="siglip"))
    with torch.no_grad():  # learned values, as in the webli checkpoint
        webli.logit_scale.fill_(4.7)
        webli.logit_bias.fill_(-12.9)
    _save(webli.state_dict(), snapshot / "open_clip_model.safetensors")

    cfg = EncoderConfig(
        model=name,
        pretrained="hf-hub:medlens-test/tiny-sig",
        image_size=448,
        context_length=64,
        loss="siglip",
        init_temperature=0.1,
        init_logit_bias=-10.0,
        reset_logit_scale=True,
    )
    model, model_cfg, preprocess_cfg = create_encoder(cfg)
    saved = webli.state_dict()
    for key, value in model.state_dict().items():
        if key == "visual.trunk.pos_embed":  # 14 x 14 -> 28 x 28 grid (+ class token), resampled by timm
            assert value.shape == (1, 1 + 28 * 28, 192)
            assert torch.allclose(
                value, resample_abs_pos_embed(saved[key], new_size=(28, 28), num_prefix_tokens=1)
            )
        elif key not in ("logit_scale", "logit_bias"):
            assert torch.equal(value, saved[key]), key
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.logit_bias.item() == -10.0
    assert preprocess_cfg["size"] == 448 and preprocess_cfg["mean"] == [0.5, 0.5, 0.5]

    tokenizer = create_tokenizer(cfg, model_cfg)
    tokens = tokenizer(CORPUS)
    assert tokens.shape == (3, 64) and tokens.max() < vocab
    save_encoder(model, tmp_path / "enc", model_cfg, preprocess_cfg, tokenizer=tokenizer)
    assert (tmp_path / "enc" / "tokenizer.json").is_file()  # the folder reloads without the Hub
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty")
    )  # no Hub from here on
    encoder = load_encoder(tmp_path / "enc", device="cpu")
    assert torch.equal(encoder.tokenizer(CORPUS), tokens)
    with torch.no_grad():
        image = torch.randn(1, 3, 448, 448)
        assert torch.allclose(encoder.model.encode_image(image), model.encode_image(image), atol=1e-5)
    assert encoder.logit_bias == -10.0


def test_whole_model_weights_from_a_file_and_a_local_dir_extend_the_text_context(tmp_path):
    small = EncoderConfig(image_size=32, context_length=24)
    source, model_cfg, preprocess_cfg = create_encoder(small)
    save_encoder(source, tmp_path / "enc", model_cfg, preprocess_cfg)
    weights = tmp_path / "enc" / "open_clip_model.safetensors"
    for pretrained in (str(weights), f"local-dir:{tmp_path / 'enc'}"):
        model, _, _ = create_encoder(EncoderConfig(image_size=32, context_length=48, pretrained=pretrained))
        old = source.positional_embedding.detach()
        expected = F.interpolate(old.T[None], size=48, mode="linear", align_corners=False)[0].T
        assert torch.allclose(model.positional_embedding, expected)
        assert torch.equal(model.visual.conv1.weight, source.visual.conv1.weight)
        assert model.attn_mask.shape == (48, 48)  # the causal mask follows the new context
    with pytest.raises(ConfigError, match=r"encoder\.pretrained: no weights in"):
        create_encoder(EncoderConfig(image_size=32, pretrained=f"local-dir:{tmp_path}"))


def test_pretrained_weights_pickled_with_code_are_refused_naming_the_key_and_never_run(configs, tmp_path):
    # open_clip and timm read .pt/.bin checkpoints with torch.load(weights_only=True): the pickle is refused
    # unrun; the refusal is a ConfigError naming the key (was an UnpicklingError traceback in train_encoder)
    ran = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    planted = tmp_path / "weights.pt"
    torch.save({"state_dict": {"x": Planted()}}, planted)
    hybrid = dict(model=configs["hybrid"], image_size=32, context_length=24)
    for key, cfg in {
        "pretrained": EncoderConfig(image_size=32, context_length=24, pretrained=str(planted)),
        "pretrained_image": EncoderConfig(**hybrid, pretrained_image=str(planted)),
        "pretrained_text": EncoderConfig(
            **hybrid, pretrained_text_model=configs["donor"], pretrained_text=str(planted)
        ),
    }.items():
        with pytest.raises(ConfigError, match=rf"encoder\.{key}: .*holds a pickle of more than tensors"):
            create_encoder(cfg)
        assert not ran.exists()
