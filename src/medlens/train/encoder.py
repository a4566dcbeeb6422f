"""``train_encoder``: contrastive image-text training of an open_clip model, step-based and resumable.

The loop follows open_clip_train and nanoGPT: a step schedule (:func:`medlens.train.schedules.lr_at`),
accelerate for device, precision and processes, gradient accumulation that keeps every
micro-batch of the optimizer step as negatives of every other (open_clip's ``--accum-freq``: features
of all micro-batches are computed first without gradients, then each micro-batch is recomputed with
gradients against that cache), periodic validation (loss and zero-shot AUC), best/last weights,
and a resumable checkpoint written on a schedule and when SLURM signals preemption (SIGTERM/SIGUSR1).

Resume state lives in ``<out_dir>.ckpt/`` (Snakemake removes an incomplete ``out_dir`` before a
rerun, but not that sibling); the finished encoder is written to ``out_dir`` atomically.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medlens import __version__, environment
from medlens.config import EncoderConfig, ZeroShotConfig, to_dict
from medlens.data.datasets import PairsDataset, StepBatchSampler, read_split
from medlens.errors import ConfigError, MedlensError
from medlens.io import atomic_dir, atomic_path
from medlens.precision import resolve_precision
from medlens.train.checkpoint import (
    TrainState,
    checkpoint_config_diff,
    discard_checkpoint,
    load_checkpoint,
    read_checkpoint_info,
    resume_config,
    save_checkpoint,
)
from medlens.train.losses import ContrastiveLoss
from medlens.train.schedules import lr_at
from medlens.train.signals import StopSignals, TrainingInterrupted, truncate_metrics

__all__ = [
    "train_encoder",
    "TrainResult",
    "TrainingInterrupted",
    "create_optimizer",
    "total_steps",
    "METRIC_COLUMNS",
]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "step",
    "epoch",
    "samples",
    "train/loss",
    "lr",
    "logit_scale",
    "logit_bias",
    "samples_per_s",
    "val/loss",
    "val/zero_shot_auc",
]


@dataclasses.dataclass
class TrainResult:
    steps: int
    best_step: int | None
    best_metric: float | None
    final: dict[str, float]


def total_steps(cfg: EncoderConfig, n_train: int, world_size: int) -> int:
    """Optimizer steps of the run: ``steps``, or ``epochs`` passes over the training pairs."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    if cfg.num_train_epochs is None:
        raise ConfigError(
            "neither max_steps nor num_train_epochs is set", key="encoder.max_steps", expected="one of them"
        )
    per_epoch = n_train // (cfg.per_device_train_batch_size * world_size * cfg.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.num_train_epochs * per_epoch))


def create_optimizer(model: torch.nn.Module, cfg: EncoderConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; norms, biases, embeddings' scalars and the logit scale/bias get no weight decay (open_clip's rule)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in params if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_" in n]
    ids = {id(p) for p in no_decay}
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": [p for _, p in params if id(p) not in ids], "weight_decay": cfg.weight_decay},
    ]
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum)
    # the fused kernel updates all tensors in one pass: ~6x faster than the per-tensor loop for medlens-tiny
    # on CPU (benchmarks/bench_encoder.py), and faster on GPUs too; the same AdamW update
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, fused=True
    )


class _MetricsCsv:
    """``metrics.csv`` with fixed columns; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        truncate_metrics(path, resume_step, METRIC_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRIC_COLUMNS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def _features(model, images, texts):
    out = model(images, texts)
    return out["image_features"], out["text_features"], out["logit_scale"], out.get("logit_bias")


def _train_step(model, loss_fn, micro_batches, accelerator) -> float:
    """Forward/backward of one optimizer step over its micro-batches; returns the loss."""
    if len(micro_batches) == 1:
        with accelerator.autocast():
            img, txt, scale, bias = _features(model, *micro_batches[0])
            loss = loss_fn(img, txt, scale, bias)["contrastive_loss"]
        accelerator.backward(loss)
        return loss.item()
    with torch.no_grad(), accelerator.autocast():  # 1) features of every micro-batch, as negatives
        cached = [_features(model, *mb)[:2] for mb in micro_batches]
    for j, mb in enumerate(micro_batches):  # 2) each micro-batch again, with gradients, against the cache
        last = j == len(micro_batches) - 1
        with accelerator.autocast(), accelerator.no_sync(model) if not last else contextlib.nullcontext():
            img, txt, scale, bias = _features(model, *mb)
            images = torch.cat([img if i == j else c[0] for i, c in enumerate(cached)])
            texts = torch.cat([txt if i == j else c[1] for i, c in enumerate(cached)])
            # the temperature (and bias) get their gradient once, not once per micro-batch as in open_clip
            if not last:
                scale, bias = scale.detach(), None if bias is None else bias.detach()
            loss = loss_fn(images, texts, scale, bias)["contrastive_loss"]
            accelerator.backward(loss)
    return loss.item()


@torch.no_grad()
def evaluate(
    model,
    loader,
    loss_fn,
    accelerator,
    targets: np.ndarray,
    zero_shot: ZeroShotConfig | None,
    tokenizer,
    eval_labels: list[str],
) -> dict[str, float]:
    """Validation loss (mean over batches) and zero-shot mean AUC over ``eval_labels`` (no CIs: a training signal).

    Runs on one process: ``model`` is the unwrapped model and ``loss_fn`` a single-process loss (a
    DDP forward or a gathering loss on one rank alone would wait forever for the others).
    """
    from sklearn.metrics import roc_auc_score

    from medlens.evaluate.zero_shot import zero_shot_logits

    model.eval()
    losses, feats = [], []
    for images, texts in loader:
        with accelerator.autocast():
            img, txt, scale, bias = _features(
                model, images.to(accelerator.device), texts.to(accelerator.device)
            )
            if img.shape[0] > 1:  # a single pair has no negatives: its loss says nothing
                losses.append(loss_fn(img, txt, scale, bias)["contrastive_loss"].item())
        feats.append(img.float().cpu().numpy())
    metrics = {"val/loss": float(np.mean(losses)) if losses else float("nan")}
    if zero_shot is not None and eval_labels:

        def encode_text(prompts: list[str]) -> np.ndarray:
            tokens = tokenizer(prompts).to(accelerator.device)
            return model.encode_text(tokens, normalize=True).float().cpu().numpy()

        logits = zero_shot_logits(np.concatenate(feats), encode_text, eval_labels, zero_shot.templates)
        log_odds = logits[..., 0] - logits[..., 1]
        metrics["val/zero_shot_auc"] = float(
            np.mean([roc_auc_score(targets[:, j], log_odds[:, j]) for j in range(len(eval_labels))])
        )
    model.train()
    return metrics


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if metric.endswith("auc") else value < best)


def _lock_towers(model, cfg: EncoderConfig) -> None:
    """LiT-style locking through open_clip's own ``lock_*_tower`` (last N groups/layers may stay trainable)."""
    if cfg.lock_image:
        model.lock_image_tower(unlocked_groups=cfg.lock_image_unlocked_groups)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=cfg.lock_text_unlocked_layers)


def _collate(tokenizer):
    def collate(batch):
        images, texts = zip(*batch, strict=True)
        return torch.stack(images), tokenizer(list(texts))

    return collate


def train_encoder(
    cfg: EncoderConfig,
    pairs_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    zero_shot: ZeroShotConfig | None = None,
) -> TrainResult:
    """Train the configured encoder on the train split of ``pairs.parquet``; validate on its val split.

    Args:
        cfg: the resolved encoder settings (preset + experiment overrides).
        pairs_path: ``results/{experiment}/data/pairs.parquet``.
        out_dir: ``results/{experiment}/encoder`` (open_clip ``local-dir:`` layout when done).
        zero_shot: prompts for the validation zero-shot AUC; None skips it.

    Returns:
        Steps run, the best step and metric, and the final validation metrics.

    Raises:
        TrainingInterrupted: after saving a checkpoint on SIGTERM/SIGUSR1.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from medlens.models.encoders import (
        create_encoder,
        create_tokenizer,
        image_transform,
        save_encoder,
        skip_text_padding,
    )

    precision = resolve_precision(cfg.precision)
    accelerator = Accelerator(
        mixed_precision={"fp32": "no"}.get(precision, precision), cpu=not torch.cuda.is_available()
    )
    set_seed(cfg.seed)
    out_dir, rank, world = Path(out_dir), accelerator.process_index, accelerator.num_processes
    ckpt_dir = out_dir.with_name(out_dir.name + ".ckpt")
    model, model_cfg, preprocess_cfg = create_encoder(cfg)
    _lock_towers(model, cfg)
    if skip_text_padding(model):
        logger.info(
            "text tower runs on each batch's longest text, not the whole context (exact for this tower)"
        )
    if cfg.gradient_checkpointing:
        model.set_grad_checkpointing(True)
    tokenizer = create_tokenizer(cfg, model_cfg)

    train_table = read_split(pairs_path, "train")
    val_table = read_split(pairs_path, "val", columns=("id", "image", "text", "labels"))
    steps = total_steps(cfg, train_table.num_rows, world)
    train_set = PairsDataset(
        train_table,
        image_transform(preprocess_cfg, train=True, crop_scale=cfg.random_crop_scale),
        hflip=cfg.hflip,
        text_sampling=cfg.text_sampling,
    )
    optimizer = create_optimizer(model, cfg)
    run = resume_config(
        to_dict(cfg), _RUN_ONLY, {"pairs": pairs_path}
    )  # what this run's checkpoints belong to
    with (
        accelerator.main_process_first()
    ):  # the main process discards a stale checkpoint before the others look
        state = _resume(ckpt_dir, run, model, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    sampler = StepBatchSampler(
        len(train_set),
        cfg.per_device_train_batch_size,
        steps,
        accum_steps=cfg.gradient_accumulation_steps,
        seed=cfg.seed,
        start_step=state.step,
        rank=rank,
        world_size=world,
    )
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=cfg.dataloader_num_workers,
        collate_fn=_collate(tokenizer),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
    val_loader = None
    if val_table.num_rows:
        val_set = PairsDataset(val_table, image_transform(preprocess_cfg, train=False))
        # the global batch: validation runs on one process, and its loss must not depend on how many train
        val_loader = DataLoader(
            val_set,
            batch_size=cfg.per_device_train_batch_size * world,
            num_workers=cfg.dataloader_num_workers,
            collate_fn=_collate(tokenizer),
        )
    val_labels = val_table["labels"].to_pylist()
    # labels with both classes in val (an AUC needs positives and negatives)
    eval_labels = [
        lab
        for lab in (zero_shot.labels if zero_shot else [])
        if 0 < sum(lab in row for row in val_labels) < len(val_labels)
    ]
    targets = np.array([[lab in row for lab in eval_labels] for row in val_labels], dtype=np.int64)
    loss_fn = ContrastiveLoss(cfg.loss, rank=rank, world_size=world)
    val_loss_fn = ContrastiveLoss(cfg.loss)  # validation runs on the main process alone
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    metrics_csv = (
        _MetricsCsv(ckpt_dir / "metrics.csv", state.step if state.step else None)
        if accelerator.is_main_process
        else None
    )
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("encoder config:\n%s", json.dumps(to_dict(cfg), indent=2))
    logger.info(
        "model %s: %s parameters (%s trainable); device %s, precision %s, %d process(es)",
        cfg.model,
        f"{n_params:,}",
        f"{n_train:,}",
        accelerator.device,
        precision,
        world,
    )
    logger.info(
        "pairs: train %d, val %d; %d steps of %d x %d x %d pairs",
        train_table.num_rows,
        val_table.num_rows,
        steps,
        cfg.per_device_train_batch_size,
        world,
        cfg.gradient_accumulation_steps,
    )

    unwrapped = accelerator.unwrap_model(model)
    last_metrics: dict[str, float] = {}
    eval_step = None  # the same on every rank (last_metrics is filled on the main process only)

    def validate_and_checkpoint(do_eval: bool) -> None:
        nonlocal last_metrics, eval_step
        eval_step = state.step if do_eval else eval_step
        if do_eval and val_loader is not None and accelerator.is_main_process:
            last_metrics = evaluate(
                unwrapped, val_loader, val_loss_fn, accelerator, targets, zero_shot, tokenizer, eval_labels
            )
            metrics_csv.write({"step": state.step, "samples": state.samples_seen, **last_metrics})
            logger.info(
                "eval at step %d: %s", state.step, " | ".join(f"{k} {v:.4f}" for k, v in last_metrics.items())
            )
            value = last_metrics.get(cfg.metric_for_best_model)
            if _is_better(value, state.best_metric, cfg.metric_for_best_model):
                state.best_metric, state.best_step = value, state.step
                save_encoder(unwrapped, ckpt_dir / "best", model_cfg, preprocess_cfg, tokenizer=tokenizer)
        if accelerator.is_main_process:
            save_checkpoint(
                ckpt_dir / "last",
                model=unwrapped,
                optimizer=optimizer,
                state=state,
                config=run,
                scaler=accelerator.scaler,
            )
        accelerator.wait_for_everyone()

    model.train()
    micro, ema, t_data, t0 = [], None, time.perf_counter(), time.perf_counter()
    with StopSignals() as signals:
        for images, texts in loader:
            micro.append((images.to(accelerator.device), texts.to(accelerator.device)))
            if len(micro) < cfg.gradient_accumulation_steps:
                continue
            data_time, t_step = time.perf_counter() - t_data, time.perf_counter()
            lr = lr_at(state.step, cfg, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _train_step(model, loss_fn, micro, accelerator)
            # one collective per step: the processes' loss shares (their mean is the global batch's loss)
            # and the stop flag, so that every rank stops at the same step
            shared = accelerator.reduce(
                torch.tensor([loss, float(signals.received is not None)], device=accelerator.device),
                reduction="sum",
            )
            loss, stop = shared[0].item() / world, shared[1].item() > 0
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # CLIP's clamp: the scale may not exceed 100
                unwrapped.logit_scale.clamp_(0, math.log(100))
            micro = []
            state.step += 1
            state.samples_seen += cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            if state.step % cfg.logging_steps == 0 or state.step == steps:
                batch_time = time.perf_counter() - t_step
                rate = (
                    cfg.per_device_train_batch_size
                    * cfg.gradient_accumulation_steps
                    * world
                    / max(1e-9, batch_time + data_time)
                )
                scale = float(unwrapped.logit_scale.detach().exp())
                bias = getattr(unwrapped, "logit_bias", None)
                logger.info(
                    "step %d/%d (%.0f%%) | loss %.4f (ema %.4f) | lr %.2e | scale %.2f | %.0f samples/s "
                    "| data %.3fs batch %.3fs",
                    state.step,
                    steps,
                    100 * state.step / steps,
                    loss,
                    ema,
                    lr,
                    scale,
                    rate,
                    data_time,
                    batch_time,
                )
                if accelerator.is_main_process:
                    metrics_csv.write(
                        {
                            "step": state.step,
                            "epoch": state.samples_seen / len(train_set),
                            "samples": state.samples_seen,
                            "train/loss": loss,
                            "lr": lr,
                            "logit_scale": scale,
                            "samples_per_s": rate,
                            "logit_bias": None if bias is None else float(bias.detach()),
                        }
                    )
            at_eval = state.step % cfg.eval_steps == 0 or state.step == steps
            if stop or at_eval or state.step % cfg.save_steps == 0:
                validate_and_checkpoint(do_eval=at_eval and not stop)
            if stop:
                raise TrainingInterrupted(
                    f"stopped by signal {signals.received} at step {state.step}/{steps}; "
                    f"checkpoint in {ckpt_dir / 'last'}; rerun to resume"
                )
            t_data = time.perf_counter()
    if state.step < steps:
        raise MedlensError(f"the data loader ended at step {state.step} of {steps}")
    if (
        eval_step != state.step
    ):  # resumed from a checkpoint taken after the last step: validate the final weights
        validate_and_checkpoint(do_eval=True)
    logger.info("trained %d steps in %.1fs", state.step, time.perf_counter() - t0)

    if accelerator.is_main_process:
        _write_output(
            out_dir,
            ckpt_dir,
            unwrapped,
            model_cfg,
            preprocess_cfg,
            tokenizer,
            cfg,
            state,
            last_metrics,
            n_train=train_table.num_rows,
            n_val=val_table.num_rows,
            zero_shot=zero_shot,
            steps=steps,
        )
        shutil.rmtree(
            ckpt_dir, ignore_errors=True
        )  # the encoder is in out_dir; resume state is no longer needed
    accelerator.wait_for_everyone()
    return TrainResult(state.step, state.best_step, state.best_metric, last_metrics)


# settings that change how a run is carried out, not what it computes: editing them keeps its checkpoint
_RUN_ONLY = ("resources", "dataloader_num_workers", "logging_steps", "save_steps")


def _resume(ckpt_dir: Path, run: dict[str, Any], model, optimizer) -> TrainState:
    """The state to start from: the checkpoint's when it was written for these settings, else a fresh one.

    A checkpoint of other settings (an edit after an interrupted run) is discarded with a warning naming
    the differing keys; resuming it would continue the old run under the new name.
    """
    info = read_checkpoint_info(ckpt_dir / "last")
    if info is None:
        return TrainState()
    changed = checkpoint_config_diff(info, run)
    if changed:
        logger.warning(
            "not resuming %s: it was written for other settings (%s differ); starting over",
            ckpt_dir / "last",
            ", ".join(f"encoder.{k}" for k in changed),
        )
        discard_checkpoint(ckpt_dir / "last")
        shutil.rmtree(ckpt_dir / "best", ignore_errors=True)
        return TrainState()
    state = load_checkpoint(ckpt_dir / "last", model=model, optimizer=optimizer)
    logger.info("resuming from %s at step %d", ckpt_dir / "last", state.step)
    return state


def _write_output(
    out_dir: Path,
    ckpt_dir: Path,
    model,
    model_cfg,
    preprocess_cfg,
    tokenizer,
    cfg: EncoderConfig,
    state: TrainState,
    final: dict[str, float],
    *,
    n_train: int,
    n_val: int,
    zero_shot: ZeroShotConfig | None,
    steps: int,
) -> None:
    """The finished folder: best weights as open_clip_model.safetensors, last weights, metrics, card."""
    from medlens.models.encoders import WEIGHTS_NAME, save_encoder

    best = ckpt_dir / "best" / WEIGHTS_NAME
    with atomic_dir(out_dir) as tmp:
        save_encoder(model, tmp, model_cfg, preprocess_cfg, tokenizer=tokenizer)
        os.replace(tmp / WEIGHTS_NAME, tmp / "last.safetensors")
        shutil.copy(best if best.exists() else tmp / "last.safetensors", tmp / WEIGHTS_NAME)
        shutil.copy(ckpt_dir / "metrics.csv", tmp / "metrics.csv")
        info = {
            "medlens_version": __version__,
            "kind": "open_clip",
            "config": to_dict(cfg),
            "steps": state.step,
            "samples_seen": state.samples_seen,
            "best_metric": cfg.metric_for_best_model,
            "best_value": state.best_metric,
            "best_step": state.best_step,
            "final_validation": final,
            "n_train": n_train,
            "n_val": n_val,
            "zero_shot": to_dict(zero_shot) if zero_shot else None,
            "weights": {
                WEIGHTS_NAME: f"best by {cfg.metric_for_best_model}" if best.exists() else "last",
                "last.safetensors": f"after step {state.step}",
            },
            "environment": environment.record(),
        }
        (tmp / "medlens.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        with atomic_path(tmp / "README.md") as card:
            card.write_text(_model_card(info, preprocess_cfg, model_cfg, steps))


def _model_card(
    info: dict[str, Any], preprocess_cfg: dict[str, Any], model_cfg: dict[str, Any], steps: int
) -> str:
    cfg = info["config"]
    zs = info.get("zero_shot") or {}
    return "\n".join(
        [
            f"# medlens encoder: preset `{cfg['preset']}` (open_clip `{cfg['model']}`)",
            "",
            "Load with `open_clip.create_model('local-dir:<this folder>')` or `medlens.models.encoders.load_encoder`.",
            "",
            f"- trained: {info['steps']} of {steps} steps, {info['samples_seen']:,} pairs seen; {info['n_train']} train / "
            f"{info['n_val']} validation pairs; loss `{cfg['loss']}`, optimizer `{cfg['optim']}` learning rate {cfg['learning_rate']}",
            f"- weights: `open_clip_model.safetensors` = {info['weights']['open_clip_model.safetensors']} "
            f"(step {info['best_step']}, {info['best_metric']} = {info['best_value']}); `last.safetensors` = final step",
            f"- input: {preprocess_cfg['size']} px RGB, {preprocess_cfg['interpolation']} resize, mean "
            f"{preprocess_cfg['mean']}, std {preprocess_cfg['std']} (grey X-rays are replicated to 3 channels)",
            f"- text: context length {model_cfg['text_cfg']['context_length']} tokens; embedding size {model_cfg['embed_dim']}",
            f"- zero-shot prompts: set `{zs.get('templates', 'chexzero')}` (resources/prompts/) for labels "
            f"{', '.join(zs.get('labels', []))}",
            f"- final validation: {json.dumps(info['final_validation'])}",
            f"- medlens {info['medlens_version']}",
            "",
        ]
    )
