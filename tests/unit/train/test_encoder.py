"""train_encoder: accumulation keeps all negatives, exact resume, outputs open_clip can load."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

from helpers.pairs import write_pairs
from medlens.config import EncoderConfig, ZeroShotConfig
from medlens.models.encoders import load_encoder
from medlens.train import encoder as enc
from medlens.train.checkpoint import read_checkpoint_info
from medlens.train.contrastive import train_step
from medlens.train.encoder import TrainingInterrupted, train_encoder

TINY = dict(
    image_size=32,
    context_length=24,
    per_device_train_batch_size=8,
    warmup_steps=2,
    logging_steps=2,
    dataloader_num_workers=0,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.parquet", n=100)


def _batch(n, seed):
    import open_clip

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    tok = open_clip.get_tokenizer("medlens-tiny", context_length=24)
    texts = tok([f"report number {seed}-{i} left effusion" for i in range(n)])
    return images, texts


def test_accumulated_step_has_the_gradients_of_one_big_batch():
    from accelerate import Accelerator

    from medlens.models.encoders import create_encoder
    from medlens.train.losses import ContrastiveLoss

    model, _, _ = create_encoder(EncoderConfig(**{**TINY, "gradient_accumulation_steps": 2}))
    twin = copy.deepcopy(model)
    acc = Accelerator(cpu=True)
    loss_fn = ContrastiveLoss("clip")
    a, b = _batch(4, 1), _batch(4, 2)
    loss_accum = train_step(model, loss_fn, [a, b], acc)
    loss_big = train_step(twin, loss_fn, [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))], acc)
    assert loss_accum == pytest.approx(loss_big, rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def _weights(path):
    return load_file(path / "last.safetensors")


def test_interrupted_run_resumes_and_ends_with_the_same_weights(pairs, tmp_path, monkeypatch):
    cfg = EncoderConfig(**TINY, max_steps=6, eval_steps=3, save_steps=3, seed=3)
    full = train_encoder(cfg, pairs, tmp_path / "full")
    assert full.steps == 6

    real_lr_at = enc.lr_at

    def lr_with_preemption(step, c, total):
        if step == 4:  # SLURM's warning arrives during step 5: it finishes, checkpoints and stops
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_lr_at(step, c, total)

    monkeypatch.setattr(enc, "lr_at", lr_with_preemption)
    with pytest.raises(TrainingInterrupted, match="step 5/6"):
        train_encoder(cfg, pairs, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()
    ckpt = read_checkpoint_info(tmp_path / "resumed.ckpt" / "last")
    assert ckpt["state"]["step"] == 5 and ckpt["config"]["seed"] == 3
    monkeypatch.setattr(enc, "lr_at", real_lr_at)

    resumed = train_encoder(cfg, pairs, tmp_path / "resumed")
    assert resumed.steps == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    with open(tmp_path / "resumed" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]]
    assert steps == [2, 4, 6]  # the rows before the interruption are kept, none repeated
    assert not (tmp_path / "resumed.ckpt").exists()


def _interrupt_at(monkeypatch, at_step):
    real_lr_at = enc.lr_at

    def lr_with_preemption(step, c, total):
        if step == at_step:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_lr_at(step, c, total)

    monkeypatch.setattr(enc, "lr_at", lr_with_preemption)
    return real_lr_at


def test_a_compiled_run_computes_the_eager_model_resumes_exactly_and_saves_plain_weights(
    pairs, tmp_path, monkeypatch, caplog
):
    compiled = EncoderConfig(**TINY, max_steps=4, eval_steps=2, save_steps=2, seed=3, compile="always")
    with caplog.at_level("INFO", logger="medlens.train.encoder"):
        train_encoder(compiled, pairs, tmp_path / "full")
    assert "compiled (torch.compile)" in caplog.text
    assert re.search(r"torch.compile: the first step took \d+\.\ds, compiling included", caplog.text)
    train_encoder(dataclasses.replace(compiled, compile="never"), pairs, tmp_path / "eager")
    # the folder is the plain model's (no torch.compile prefixes), loadable as ever
    full, eager = _weights(tmp_path / "full"), _weights(tmp_path / "eager")
    assert full.keys() == eager.keys() and not any("_orig_mod" in k for k in full)
    for k in full:  # the compiled graph computes the same model, up to the order of float operations
        assert torch.allclose(full[k], eager[k], atol=1e-4), k
    load_encoder(tmp_path / "full")

    real_lr_at = _interrupt_at(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted, match="step 2/4"):
        train_encoder(compiled, pairs, tmp_path / "resumed")
    monkeypatch.setattr(enc, "lr_at", real_lr_at)
    assert train_encoder(compiled, pairs, tmp_path / "resumed").steps == 4
    resumed = _weights(tmp_path / "resumed")
    for k in full:
        assert torch.allclose(full[k], resumed[k], atol=1e-6), k


@pytest.mark.parametrize(
    "edit", [{"seed": 4}, {"learning_rate": 2e-3}, {"image_size": 48}], ids=["seed", "lr", "image_size"]
)
def test_an_edit_after_a_kill_starts_over_instead_of_resuming_the_old_run(
    pairs, tmp_path, monkeypatch, caplog, edit
):
    cfg = EncoderConfig(**TINY, max_steps=6, eval_steps=3, save_steps=3, seed=3)
    real_lr_at = _interrupt_at(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted, match="step 3/6"):
        train_encoder(cfg, pairs, tmp_path / "run")
    monkeypatch.setattr(enc, "lr_at", real_lr_at)

    edited = dataclasses.replace(cfg, **edit)
    with caplog.at_level("INFO", logger="medlens.train.encoder"):
        result = train_encoder(edited, pairs, tmp_path / "run")
    assert result.steps == 6
    key = next(iter(edit))
    assert (
        f"not resuming {tmp_path / 'run.ckpt' / 'last'}: it was written for other settings (encoder.{key} "
        "differ); starting over" in caplog.text
    )
    assert "resuming from" not in caplog.text
    fresh = train_encoder(edited, pairs, tmp_path / "fresh")  # the edited run, never interrupted
    assert fresh.steps == 6
    a, b = _weights(tmp_path / "fresh"), _weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_edit_of_how_the_run_is_carried_out_still_resumes(pairs, tmp_path, monkeypatch, caplog):
    cfg = EncoderConfig(**TINY, max_steps=6, eval_steps=3, save_steps=3, seed=3)
    real_lr_at = _interrupt_at(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted):
        train_encoder(cfg, pairs, tmp_path / "run")
    monkeypatch.setattr(enc, "lr_at", real_lr_at)
    with caplog.at_level("INFO", logger="medlens.train.encoder"):
        train_encoder(dataclasses.replace(cfg, logging_steps=1, save_steps=2), pairs, tmp_path / "run")
    assert f"resuming from {tmp_path / 'run.ckpt' / 'last'} at step 3" in caplog.text


def test_output_folder_loads_with_open_clip_and_records_the_run(pairs, tmp_path):
    import open_clip

    from medlens.models.encoders import load_encoder

    cfg = EncoderConfig(
        **TINY, max_steps=4, eval_steps=2, save_steps=4, metric_for_best_model="val/zero_shot_auc"
    )
    result = train_encoder(cfg, pairs, tmp_path / "enc", zero_shot=ZeroShotConfig(templates="report"))
    out = tmp_path / "enc"
    assert {
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "last.safetensors",
        "metrics.csv",
        "README.md",
        "medlens.json",
    } <= {p.name for p in out.iterdir()}
    model = open_clip.create_model(f"local-dir:{out}", output_dict=True)
    assert model.visual.image_size == (32, 32)
    info = json.loads((out / "medlens.json").read_text())
    assert info["steps"] == 4 and info["best_metric"] == "val/zero_shot_auc"
    assert result.best_step in (2, 4) and 0.0 <= result.final["val/zero_shot_auc"] <= 1.0
    encoder = load_encoder(out)
    from PIL import Image

    feats = encoder.encode_images([Image.new("L", (50, 40), 30), Image.new("RGB", (20, 20))])
    assert feats.shape == (2, 128) and torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    with open(out / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"step", "train/loss", "lr", "logit_scale", "val/loss", "val/zero_shot_auc"} <= set(header)
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # a Hugging Face model card, front matter included
    assert (card.data.library_name, card.data.pipeline_tag) == ("open_clip", "zero-shot-image-classification")
    assert card.data.datasets == ["toy"] and "chest-xray" in card.data.tags
    assert (
        card.data.license == "other"
    )  # no prepared record of the toy data's adapter: its licence is unknown
    assert "not a medical device" in card.text and "eval/encoder.json" in card.text


def test_too_few_pairs_for_one_batch_is_a_clear_error(pairs, tmp_path):
    from medlens.errors import DataError

    with pytest.raises(DataError, match="global batch of 512"):
        train_encoder(
            EncoderConfig(**{**TINY, "per_device_train_batch_size": 512}, max_steps=2), pairs, tmp_path / "e"
        )


@pytest.mark.slow  # a run in one process and one in two (two more interpreters): ~30 s on two idle cores
def test_two_gloo_processes_train_the_weights_one_process_trains(pairs, tmp_path):
    """Ranks split each global micro-batch, gather features for the loss and average gradients (DDP):
    with accumulation, validation and checkpoints on the way, the result is the single-process run's."""
    from helpers.two_process import launch

    fields = {
        **TINY,
        "gradient_accumulation_steps": 2,
        "max_steps": 3,
        "eval_steps": 2,
        "save_steps": 2,
        "seed": 5,
    }
    single = train_encoder(EncoderConfig(**fields), pairs, tmp_path / "one")
    launch(
        "train",
        json.dumps({**fields, "per_device_train_batch_size": TINY["per_device_train_batch_size"] // 2}),
        str(pairs),
        str(tmp_path / "two"),
    )
    assert single.steps == 3
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in one:
        assert torch.allclose(one[k], two[k], atol=2e-5), k
    rows = []
    for run in ("one", "two"):
        with open(tmp_path / run / "metrics.csv") as f:
            rows.append([(r["step"], r["train/loss"], r["val/loss"]) for r in csv.DictReader(f)])
    assert len(rows[0]) == len(rows[1]) == 4  # train and validation rows at steps 2 and 3
    for a, b in zip(*rows, strict=True):
        assert a[0] == b[0]
        for x, y in zip(a[1:], b[1:], strict=True):
            assert (x == y == "") or float(x) == pytest.approx(float(y), rel=1e-4)
    assert not (tmp_path / "two.ckpt").exists()


def test_lit_locking_leaves_the_last_groups_trainable():
    from medlens.models.encoders import create_encoder_for_training

    # open_clip's groups end with the projection, then the last block
    cfg = EncoderConfig(
        **TINY, lock_image=True, lock_image_unlocked_groups=2, lock_text=True, lock_text_unlocked_layers=2
    )
    model = create_encoder_for_training(cfg).model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    last_image, last_text = len(model.visual.transformer.resblocks) - 1, len(model.transformer.resblocks) - 1
    assert {"visual.proj", "text_projection", "logit_scale"} <= trainable
    assert f"visual.transformer.resblocks.{last_image}.attn.in_proj_weight" in trainable
    assert f"visual.transformer.resblocks.{last_image - 1}.attn.in_proj_weight" not in trainable
    assert f"transformer.resblocks.{last_text}.attn.in_proj_weight" in trainable
    assert f"transformer.resblocks.{last_text - 1}.attn.in_proj_weight" not in trainable
    assert "token_embedding.weight" not in trainable and "visual.conv1.weight" not in trainable


def test_the_progress_line_says_how_long_is_left(pairs, tmp_path, caplog):
    from medlens.train.progress import format_duration

    assert [format_duration(s) for s in (7, 750, 11_100)] == ["7s", "12m30s", "3h05m"]
    with caplog.at_level("INFO", logger="medlens.train.encoder"):
        train_encoder(EncoderConfig(**TINY, max_steps=4, eval_steps=4, save_steps=4), pairs, tmp_path / "e")
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert steps and all(
        re.search(r"samples/s \| data [\d.]+s batch [\d.]+s \| eta \d+(m\d\ds|s)$", s) for s in steps
    )


def test_report_to_tensorboard_writes_the_training_curves_offline(pairs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = EncoderConfig(**TINY, max_steps=4, eval_steps=2, save_steps=4, report_to=["tensorboard"])
    train_encoder(cfg, pairs, tmp_path / "run" / "encoder")
    events = sorted((tmp_path / "run" / "tensorboard" / "encoder").glob("**/events.out.tfevents.*"))
    scalars = set().union(*(EventAccumulator(str(e.parent)).Reload().Tags()["scalars"] for e in events))
    assert {"train/loss", "lr", "val/loss"} <= scalars
