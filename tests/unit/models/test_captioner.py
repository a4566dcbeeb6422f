"""The captioner: built from an encoder folder, overfits a few reports, KV cache changes nothing, round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.encoders import save_tiny_open_clip
from medlens.config import DecoderConfig, TrainerConfig
from medlens.models.captioner import Captioner, build_captioner, caption_transform, load_vision_encoder
from medlens.train.decoder import CaptionCollator, train_bpe_tokenizer

REPORTS = [
    "FINDINGS: The heart is enlarged. No pleural effusion. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Small left pleural effusion. Heart size is normal. IMPRESSION: Left pleural effusion.",
    "FINDINGS: Lungs are clear. No pneumothorax. IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: A 12 mm nodule in the right upper lobe. IMPRESSION: Right upper lobe nodule.",
]


def images() -> list[Image.Image]:
    """Four images told apart by where a bright block sits (as findings differ by place, not by brightness)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        arr = rng.random((32, 32)) * 40
        r, c = divmod(i, 2)
        arr[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] += 180
        out.append(Image.fromarray(arr.astype(np.uint8)).convert("RGB"))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    enc = save_tiny_open_clip(tmp_path_factory.mktemp("enc") / "encoder")
    tok = train_bpe_tokenizer(REPORTS * 3, vocab_size=300)
    # no dropout, as in the demo preset: memorising four reports is then a clean test of the wiring
    cfg = DecoderConfig(
        hidden_size=64, num_layers=2, num_heads=2, max_length=64, dropout=0.0, trainer=TrainerConfig()
    )
    torch.manual_seed(0)
    model = build_captioner(cfg, tok, enc)
    return enc, tok, cfg, model


def batch(model, tok):
    transform = caption_transform(model.config, train=False)
    items = [{"pixel_values": transform(im), "text": t} for im, t in zip(images(), REPORTS, strict=True)]
    return CaptionCollator(tok, 64)(items)


def test_tower_weights_come_from_the_encoder(setup):
    import open_clip

    enc, _, _, model = setup
    reference = open_clip.create_model(f"local-dir:{enc}").visual.state_dict()
    for key, value in model.visual.state_dict().items():
        torch.testing.assert_close(value, reference[key])


def test_labels_mask_padding_only(setup):
    _, tok, _, model = setup
    b = batch(model, tok)
    assert (b["labels"] == -100).sum() == (b["attention_mask"] == 0).sum()
    assert (b["input_ids"][:, 0] == tok.bos_token_id).all()
    lengths = b["attention_mask"].sum(1)
    assert all(b["input_ids"][i, lengths[i] - 1] == tok.eos_token_id for i in range(4))


def test_overfits_a_handful_of_reports_and_cache_changes_nothing(setup, tmp_path):
    _, tok, _, model = setup
    b = batch(model, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(400):
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cached = model.generate(b["pixel_values"], max_new_tokens=60, use_cache=True)
    uncached = model.generate(b["pixel_values"], max_new_tokens=60, use_cache=False)
    assert torch.equal(cached, uncached)
    texts = [t.strip() for t in tok.batch_decode(cached, skip_special_tokens=True)]
    assert texts == REPORTS
    beams = tok.batch_decode(
        model.generate(b["pixel_values"], max_new_tokens=60, num_beams=3), skip_special_tokens=True
    )
    assert [t.strip() for t in beams] == REPORTS

    model.save_pretrained(tmp_path / "dec")
    again = Captioner.from_pretrained(tmp_path / "dec").eval()
    assert torch.equal(again.generate(b["pixel_values"], max_new_tokens=60), cached)

    model.save_vision_encoder(tmp_path / "encoder_final")
    tower, preprocess = load_vision_encoder(tmp_path / "encoder_final")
    with torch.no_grad():
        torch.testing.assert_close(tower(b["pixel_values"]), model.visual(b["pixel_values"]))
    assert preprocess["size"] == 32


def test_frozen_tower_gets_no_gradient(setup):
    enc, tok, cfg, _ = setup
    from dataclasses import replace

    model = build_captioner(replace(cfg, freeze_vision=True), tok, enc)
    model(**batch(model, tok)).loss.backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert model.bridge[0].weight.grad is not None


def test_a_frozen_resnet_tower_keeps_its_batchnorm_statistics_while_the_captioner_trains(setup):
    """The Trainer calls ``model.train()``; a frozen tower must still normalise with the encoder's running
    statistics, not each batch's, and must not overwrite them."""
    from dataclasses import replace

    _, tok, cfg, _ = setup
    model = build_captioner(
        replace(cfg, init_from_encoder=False, vision_model="medlens-tiny-resnet", freeze_vision=True), tok
    )
    before = {k: v.clone() for k, v in model.visual.state_dict().items() if "running" in k}
    assert before  # the ResNet tower has BatchNorm
    model.train()
    assert model.training and not model.visual.training and model.decoder.training
    model(**batch(model, tok)).loss.backward()
    for key, value in model.visual.state_dict().items():
        if key in before:
            torch.testing.assert_close(value, before[key])
    model.eval()
    first = model.encode(batch(model, tok)["pixel_values"][:1])
    model.train()  # the tower's output does not depend on the mode or on the rest of the batch
    torch.testing.assert_close(model.encode(batch(model, tok)["pixel_values"])[:1], first)


@pytest.mark.parametrize(
    "preprocess_cfg",
    [
        None,  # the encoder's own (open_clip's defaults: bicubic, shortest side, OpenAI mean/std)
        {"size": 48, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3},
        {"size": 32, "resize_mode": "squash"},
    ],
)
def test_the_image_processor_gives_the_pixels_of_the_captioners_transform(setup, tmp_path, preprocess_cfg):
    from transformers import AutoImageProcessor

    from medlens.models.captioner import clip_image_processor

    preprocess_cfg = preprocess_cfg or setup[3].config.preprocess_cfg
    clip_image_processor(preprocess_cfg).save_pretrained(tmp_path)
    # not square, not the model's size: resize, crop (or squash) and normalisation all matter
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    want = caption_transform(type(setup[3].config)(preprocess_cfg=preprocess_cfg), train=False)(image)
    std = torch.tensor(preprocess_cfg.get("std", [0.26862954, 0.26130258, 0.27577711])).view(3, 1, 1)
    pil = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    torch.testing.assert_close(pil(images=image, return_tensors="pt")["pixel_values"][0], want)
    # transformers' default backend keeps the resized image in floats: within one grey level of open_clip's
    default = AutoImageProcessor.from_pretrained(tmp_path)
    got = default(images=image, return_tensors="pt")["pixel_values"][0]
    assert got.shape == want.shape
    assert ((got - want).abs() * std).max() <= 1.01 / 255


def test_where_the_crop_offsets_round_differently_the_image_processor_crops_one_pixel_over(tmp_path):
    """torchvision's CenterCrop rounds half an odd excess to even, transformers' floors it: 70x90 resized to
    40x51 is cropped from column 6 by open_clip and from column 5 by the processor (documented in
    clip_image_processor); the pixels are otherwise the same."""
    from transformers import AutoImageProcessor

    from medlens.models.captioner import CaptionerConfig, clip_image_processor

    clip_image_processor({"size": 40}).save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    want = caption_transform(CaptionerConfig(preprocess_cfg={"size": 40}), train=False)(image)
    got = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")(images=image, return_tensors="pt")
    got = got["pixel_values"][0]
    assert not torch.allclose(got, want)
    torch.testing.assert_close(got[:, :, 1:], want[:, :, :-1])


def test_padding_resize_modes_get_no_image_processor():
    from medlens.models.captioner import clip_image_processor

    assert (
        clip_image_processor({"size": 32, "resize_mode": "longest"}) is None
    )  # CLIPImageProcessor cannot pad
    assert clip_image_processor({"size": (32, 48)}) is None  # nor crop to a rectangle after a shortest resize


def test_generation_stops_at_the_decoders_last_position_with_a_warning(setup, caplog):
    _, _, _, model = setup
    pixels = caption_transform(model.config, train=False)(images()[0])[None]
    with caplog.at_level("WARNING"):
        # past the last position, generation used to fail in GPT-2's embedding
        ids = model.eval().generate(pixels, max_new_tokens=500)
    assert ids.shape[1] <= model.decoder.config.n_positions - 1
    assert "generating at most 63 tokens" in caplog.text


def test_a_saved_captioner_loads_for_generation_without_transformers_doubting_it(setup, tmp_path):
    # AutoTokenizer used to read config.json through AutoConfig, which does not know medlens_captioner and
    # logged "... may not be compatible": every evaluate_decoder log carried it
    import logging

    from medlens.models.generation import save_generation_config
    from medlens.models.generator import CaptionerGenerator

    _, tok, cfg, model = setup
    model.save_pretrained(tmp_path / "dec")
    tok.save_pretrained(tmp_path / "dec")
    save_generation_config(tmp_path / "dec", cfg.generation, eos_token_id=tok.eos_token_id)
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger("transformers").addHandler(handler)
    try:
        generator = CaptionerGenerator.from_dir(tmp_path / "dec")
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [m for m in messages if "model of type" in m], messages
    assert generator.tokenizer.eos_token_id == tok.eos_token_id


def test_a_captioner_folders_code_never_runs_and_a_planted_pickle_is_refused_naming_the_folder(
    setup, tmp_path
):
    # the folder's captioner_modeling.py (named by config.json's auto_map) is for stock transformers; medlens
    # loads its own Captioner. Weights as a pickle (pytorch_model.bin) are refused by weights_only, as a
    # DataError naming the folder (was an UnpicklingError traceback from `medlens generate`)
    import json

    from medlens.errors import DataError
    from medlens.models.generation import save_generation_config
    from medlens.models.generator import load_generator

    _, tok, cfg, model = setup
    folder = tmp_path / "dec"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    save_generation_config(folder, cfg.generation, eos_token_id=tok.eos_token_id)
    (folder / "medlens.json").write_text(json.dumps({"kind": "captioner"}))
    ran = tmp_path / "ran"
    code = folder / "captioner_modeling.py"
    code.write_text(f"open({str(ran)!r}, 'w').close()\n" + code.read_text())
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    load_generator(folder)
    assert not ran.exists()

    class Planted:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    (folder / "model.safetensors").unlink()
    torch.save({"decoder.lm_head.weight": Planted()}, folder / "pytorch_model.bin")
    with pytest.raises(
        DataError, match=r"holds a pickle of more than tensors, which medlens never unpickles"
    ):
        load_generator(folder)
    assert not ran.exists()


def test_a_captioner_starts_from_a_timm_tower_trained_away_from_its_native_size(tmp_path):
    # siglip_base's tower reads 448 px, not timm's native 224: open_clip built the tower at 224, so the
    # trained position embeddings did not load and the tower refused the images (a traceback in train_decoder)
    import json

    import open_clip
    from safetensors.torch import save_file

    from helpers.towers import TIMM_TINY as timm_tiny
    from medlens.models.encoders import _set_timm_input_size

    (tmp_path / "medlens-test-timm-captioner.json").write_text(json.dumps(timm_tiny))
    open_clip.add_model_config(tmp_path / "medlens-test-timm-captioner.json")
    torch.manual_seed(0)
    trained = open_clip.create_model("medlens-test-timm-captioner")
    _set_timm_input_size(trained, 32)  # as train_encoder trains it
    folder = tmp_path / "encoder"
    folder.mkdir()
    weights = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(weights, folder / "open_clip_model.safetensors")
    preprocess = {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": timm_tiny, "preprocess_cfg": preprocess})
    )
    tok = train_bpe_tokenizer(REPORTS * 3, vocab_size=300)
    cfg = DecoderConfig(hidden_size=64, num_layers=2, num_heads=2, max_length=64, trainer=TrainerConfig())
    model = build_captioner(cfg, tok, folder).eval()
    for name, value in model.visual.state_dict().items():  # the trained tower, not a fresh one
        assert torch.equal(value, weights[f"visual.{name}"]), name
    pixels = torch.rand(2, 3, 32, 32)
    ids = torch.tensor([[tok.bos_token_id, 5, 6], [tok.bos_token_id, 7, 8]])
    with torch.no_grad():
        logits = model(pixel_values=pixels, input_ids=ids).logits
    model.save_pretrained(tmp_path / "dec")  # and the folder loads again at the same size
    again = Captioner.from_pretrained(tmp_path / "dec").eval()
    with torch.no_grad():
        assert torch.equal(again(pixel_values=pixels, input_ids=ids).logits, logits)
