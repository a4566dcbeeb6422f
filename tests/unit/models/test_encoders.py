"""The seed encoder presets: their architectures at full size (built on the meta device, no memory) and
at tiny width through the same code path, their recipes, and the experiments that select them."""

from __future__ import annotations

import pytest
import torch
import yaml

from helpers.towers import HYBRID_CHANGES, register_twin
from medlens.config import EncoderConfig, from_dict, load_experiment, resolve_preset
from medlens.errors import ConfigError
from medlens.models.encoders import create_encoder
from medlens.train.losses import ContrastiveLoss

NO_WEIGHTS = {
    "pretrained": None,
    "pretrained_image": None,
    "pretrained_text_model": None,
    "pretrained_text": None,
}


def _preset(name: str, **overrides) -> EncoderConfig:
    return from_dict(EncoderConfig, resolve_preset("encoder", {"preset": name, **overrides}, source="test"))


def test_hybrid_preset_is_dinov3_b16_and_clip_b32_text_joined_by_a_768_to_512_bridge():
    from open_clip.transformer import QuickGELU

    model, model_cfg, preprocess_cfg = create_encoder(
        _preset("hybrid_dinov3_clip", **NO_WEIGHTS), device="meta"
    )
    trunk = model.visual.trunk
    assert trunk.pretrained_cfg["architecture"] == "vit_base_patch16_dinov3" and trunk.num_features == 768
    assert trunk.patch_embed.patch_size == (16, 16) and trunk.patch_embed.img_size == (224, 224)
    assert trunk.global_pool == "token"  # DINOv3's CLS token is its global feature
    bridge = model.visual.head.proj
    assert (bridge.in_features, bridge.out_features, bridge.bias) == (768, 512, None)
    # CLIP ViT-B/32's text tower: 12 x 512, 8 heads, 77 positions, 49,408 BPE tokens, QuickGELU (OpenAI)
    assert (
        model.transformer.width,
        model.transformer.layers,
        model.transformer.resblocks[0].attn.num_heads,
    ) == (512, 12, 8)
    assert model.positional_embedding.shape == (77, 512) and model.token_embedding.num_embeddings == 49408
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert model.text_projection.shape == (512, 512)
    out = model(
        torch.empty(2, 3, 224, 224, device="meta"), torch.zeros(2, 77, dtype=torch.long, device="meta")
    )
    assert out["image_features"].shape == out["text_features"].shape == (2, 512)
    assert model.logit_scale.shape == () and "logit_bias" not in out
    assert model_cfg["init_logit_scale"] == pytest.approx(2.6593, abs=1e-4)  # log(1 / 0.07)
    assert preprocess_cfg["mean"] == [0.485, 0.456, 0.406] and preprocess_cfg["interpolation"] == "bicubic"


def test_siglip_preset_is_b16_at_448_px_with_sigmoid_loss_parameters():
    model, model_cfg, preprocess_cfg = create_encoder(_preset("siglip_base", **NO_WEIGHTS), device="meta")
    trunk = model.visual.trunk
    assert trunk.pretrained_cfg["architecture"] == "vit_base_patch16_siglip_224"
    assert trunk.patch_embed.img_size == (448, 448) and trunk.pos_embed.shape == (1, 28 * 28, 768)
    assert model.text.positional_embedding.shape == (64, 768) and model.text.vocab_size == 32000
    out = model(
        torch.empty(2, 3, 448, 448, device="meta"), torch.zeros(2, 64, dtype=torch.long, device="meta")
    )
    assert out["image_features"].shape == out["text_features"].shape == (2, 768)
    assert out["logit_bias"].shape == ()
    assert model_cfg["init_logit_bias"] == -10.0 and model_cfg["init_logit_scale"] == pytest.approx(2.302585)
    assert (
        preprocess_cfg["mean"] == preprocess_cfg["std"] == [0.5, 0.5, 0.5]
    )  # SigLIP reads [-1, 1], not [0, 1]


def test_hybrid_at_tiny_width_trains_every_tower_through_the_same_code_path(tmp_path):
    name = register_twin(tmp_path, "medlens-dinov3-b16-clip-b32", "medlens-test-hybrid-train", HYBRID_CHANGES)
    cfg = EncoderConfig(model=name, image_size=32, context_length=24, per_device_train_batch_size=4)
    model, _, _ = create_encoder(cfg)
    assert (model.visual.head.proj.in_features, model.visual.head.proj.out_features) == (192, 64)
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(1, 400, (4, 24))
    out = model(images, tokens)
    loss = ContrastiveLoss("clip")(out["image_features"], out["text_features"], out["logit_scale"])[
        "contrastive_loss"
    ]
    loss.backward()
    silent = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    # the register tokens' and the padding tokens' rows may get no gradient; every layer must
    assert all(n in ("visual.trunk.reg_token", "token_embedding.weight") for n in silent), silent


def test_seed_experiments_select_their_presets_with_the_seed_numbers(repo):
    schema = repo / "workflow" / "schemas" / "experiment.schema.yaml"
    defined = set(yaml.safe_load((repo / "config" / "config.yaml").read_text())["datasets"])
    hybrid = load_experiment(repo / "config" / "experiments" / "hybrid_dinov3_clip.yaml", schema_path=schema)
    siglip = load_experiment(repo / "config" / "experiments" / "siglip_base.yaml", schema_path=schema)
    for exp in (hybrid, siglip):
        assert set(exp.datasets) | set(exp.evaluate.external_datasets) <= defined
        assert exp.encoder.hflip is False
    h = hybrid.encoder
    assert (
        h.preset,
        h.optim,
        h.learning_rate,
        h.momentum,
        h.weight_decay,
        h.per_device_train_batch_size,
        h.max_steps,
    ) == ("hybrid_dinov3_clip", "sgd", 1e-4, 0.9, 0.0, 64, 25000)
    assert (h.loss, h.init_temperature, h.context_length, h.image_size, h.eval_steps) == (
        "clip",
        0.07,
        77,
        224,
        500,
    )
    assert hybrid.evaluate.external_datasets == ["chexpert"]
    s = siglip.encoder
    assert (s.preset, s.loss, s.image_size, s.context_length, s.init_logit_bias) == (
        "siglip_base",
        "siglip",
        448,
        64,
        -10.0,
    )
    assert (
        s.optim,
        s.learning_rate,
        s.per_device_train_batch_size,
        s.gradient_accumulation_steps,
        s.num_train_epochs,
        s.warmup_ratio,
        s.lr_scheduler_type,
        s.max_grad_norm,
    ) == ("adamw_torch", 1e-4, 8, 8, 2.0, 0.1, "cosine", 1.0)
    assert s.metric_for_best_model == "val/loss" and s.max_steps is None and s.warmup_steps is None
    assert set(siglip.datasets) == {"knee_mendeley", "pad_ufes_20", "slake"}


def test_normalisation_can_be_set_and_is_checked():
    model, _, preprocess_cfg = create_encoder(
        EncoderConfig(image_size=32, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    )
    assert preprocess_cfg["mean"] == [0.5, 0.4, 0.3] and preprocess_cfg["std"] == [0.2, 0.2, 0.2]
    assert create_encoder(EncoderConfig(image_size=32))[2]["mean"] == [
        0.48145466,
        0.4578275,
        0.40821073,
    ]  # CLIP's
    with pytest.raises(
        ConfigError, match=r"encoder\.image_std: .*; expected three numbers \(R, G, B\), all positive"
    ):
        create_encoder(EncoderConfig(image_size=32, image_std=[0.2, 0.0, 0.2]))


def test_texts_are_encoded_without_their_padding_where_that_cannot_change_a_feature_or_gradient():
    from medlens.models.encoders import create_tokenizer, skip_text_padding

    cfg = _preset("tiny")
    model, model_cfg, _ = create_encoder(cfg)
    tokenizer = create_tokenizer(cfg, model_cfg)
    tokens = tokenizer(["Small left pleural effusion.", "Heart size is normal. The lungs are clear."])
    assert tokens.shape[1] == cfg.context_length and tokens[:, 20:].eq(0).all()  # mostly padding
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)

    def features_and_grads():
        model.zero_grad()
        out = model(images, tokens)
        (out["text_features"] * torch.arange(out["text_features"].shape[1])).sum().backward()
        return out["text_features"].detach(), {
            n: p.grad.clone()
            for n, p in model.named_parameters()
            if p.grad is not None and n != "positional_embedding"
        }

    full, full_grads = features_and_grads()
    assert skip_text_padding(model)
    seen = []
    model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    cut, cut_grads = features_and_grads()
    assert seen == [int(tokens.ne(0).sum(1).max())]  # the tower ran on the longest text only
    torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-5)
    for name, grad in full_grads.items():  # equal to float rounding (a millionth of the largest entry)
        assert (cut_grads[name] - grad).abs().max() <= 1e-5 * grad.abs().max(), name


def test_towers_where_padding_matters_keep_open_clip_text_encoding(tmp_path):
    from medlens.models.encoders import skip_text_padding

    # SigLIP's text tower is not causal and pools the last position: padding is part of its input
    model, _, _ = create_encoder(_preset("siglip_base", **NO_WEIGHTS), device="meta")
    assert not skip_text_padding(model)
    assert "encode_text" not in vars(model)


@pytest.mark.parametrize("mode", ["squash", "shortest"])
def test_resize_mode_reaches_the_folder_and_stock_open_clip_repeats_it(tmp_path, mode):
    import numpy as np
    import open_clip
    from PIL import Image
    from torchvision.transforms import functional as TF

    from medlens.models.encoders import image_transform, save_encoder

    cfg = EncoderConfig(image_size=32, context_length=24, resize_mode=mode)
    model, model_cfg, preprocess_cfg = create_encoder(cfg)
    save_encoder(model, tmp_path / "enc", model_cfg, preprocess_cfg)
    _, _, stock = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'enc'}")
    # a wide film: a centre crop loses its left and right quarters, a squash keeps them
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :16] = 255
    image = Image.fromarray(pixels)
    ours = image_transform(preprocess_cfg, train=False)(image)
    torch.testing.assert_close(stock(image), ours)
    squashed = TF.resize(image, [32, 32], interpolation=TF.InterpolationMode.BICUBIC)
    left_edge_white = ours[:, :, 0].mean() > ours[:, :, -1].mean()
    assert left_edge_white == (mode == "squash")
    if mode == "squash":
        expected = TF.normalize(TF.to_tensor(squashed), preprocess_cfg["mean"], preprocess_cfg["std"])
        torch.testing.assert_close(ours, expected)


def test_the_siglip_preset_squashes_as_siglip_does():
    _, _, preprocess_cfg = create_encoder(_preset("siglip_base", **NO_WEIGHTS), device="meta")
    assert preprocess_cfg["resize_mode"] == "squash"
    _, _, preprocess_cfg = create_encoder(_preset("hybrid_dinov3_clip", **NO_WEIGHTS), device="meta")
    assert preprocess_cfg["resize_mode"] == "shortest"  # seed 000: "cropped/resized to 224px"


def test_the_seed_002_datasets_keep_its_text_bounds(repo):
    # 002: "Text length > 5 chars", "Text length < 1000 chars"
    datasets = yaml.safe_load((repo / "config" / "config.yaml").read_text())["datasets"]
    for name in ("knee_mendeley", "pad_ufes_20", "slake"):
        assert (datasets[name]["min_text_chars"], datasets[name]["max_text_chars"]) == (6, 999), name
