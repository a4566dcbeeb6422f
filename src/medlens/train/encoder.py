"""``train_encoder``: contrastive image-text training of an open_clip model, step-based and resumable.

The loop follows open_clip_train and nanoGPT: a step schedule (:func:`medlens.train.schedules.lr_at`),
accelerate for device, precision and processes, gradient accumulation that keeps every
micro-batch of the optimizer step as negatives of every other (open_clip's ``--accum-freq``: features
of all micro-batches are computed first without gradients, then each micro-batch is recomputed with
gradients against that cache), periodic validation (loss and zero-shot AUC), best/last weights,
and a resumable checkpoint written on a schedule and when SLURM signals preemption (SIGTERM/SIGUSR1).

Resume state lives in ``<out_dir>.ckpt/`` (Snakemake removes an incomplete ``out_dir`` before a
rerun, but not that sibling); the finished encoder is written to ``out_dir`` atomically.

The module is longer than most (~450 lines) because the loop reads top to bottom beside the helpers it
names (setup, step, log, validate and checkpoint, output); the step's arithmetic is in ``contrastive.py``,
the optimizer and schedule in ``schedules.py``.
"""
# long: the contrastive training loop with its resume, preemption and validation, read top to bottom

from __future__ import annotations

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
from medlens.data.datasets import PairsDataset, StepBatchSampler
from medlens.data.mapped import map_split, open_mapped
from medlens.data.preprocessing import describe_training_images
from medlens.errors import MedlensError
from medlens.io import atomic_dir, atomic_path
from medlens.precision import resolve_compile, resolve_precision
from medlens.train.checkpoint import (
    TrainState,
    checkpoint_config_diff,
    discard_checkpoint,
    load_checkpoint,
    read_checkpoint_info,
    resume_config,
    save_checkpoint,
)
from medlens.train.contrastive import apply_update, train_step, validate
from medlens.train.losses import ContrastiveLoss
from medlens.train.progress import Eta
from medlens.train.schedules import create_optimizer, lr_at, total_steps
from medlens.train.signals import StopSignals, TrainingInterrupted, truncate_metrics

__all__ = ["train_encoder", "TrainResult", "TrainingInterrupted", "METRIC_COLUMNS"]

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


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if metric.endswith("auc") else value < best)


def _collate(tokenizer):
    def collate(batch):
        images, texts = zip(*batch, strict=True)
        return torch.stack(images), tokenizer(list(texts))

    return collate


@dataclasses.dataclass
class _Run:
    """Everything the step loop touches, built once by :func:`_setup`."""

    cfg: EncoderConfig
    accelerator: Any
    parts: Any  # medlens.models.encoders.TrainableEncoder
    model: torch.nn.Module  # prepared by accelerate (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    loss_fn: ContrastiveLoss
    steps: int
    state: TrainState
    ckpt_dir: Path
    resume: dict[str, Any]  # what this run's checkpoints belong to
    n_train: int
    n_val: int
    zero_shot: ZeroShotConfig | None
    val_loader: DataLoader | None = None
    val_targets: np.ndarray | None = None  # [n_val, len(val_labels)] 0/1
    val_labels: list[str] = dataclasses.field(default_factory=list)  # labels with both classes in val
    metrics_csv: _MetricsCsv | None = None  # main process only
    train_size: int = 0  # pairs in the train split (for the epoch count)
    pairs_path: Path | None = None
    train_table: Any = None  # Arrow tables of the splits (image bytes stay in Arrow buffers)
    val_table: Any = None
    last_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    eval_step: int | None = None  # the step last validated (the same on every rank)
    eta: Eta | None = None
    compiled: bool = False  # the model is torch.compile'd: its first step includes compiling

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def samples_per_step(self) -> int:
        world = self.accelerator.num_processes
        return self.cfg.per_device_train_batch_size * self.cfg.gradient_accumulation_steps * world


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
    out_dir = Path(out_dir)
    run = _setup(cfg, Path(pairs_path), out_dir, zero_shot)
    state, device = run.state, run.accelerator.device
    micro, ema, t_data, t0 = [], None, time.perf_counter(), time.perf_counter()
    run.model.train()
    with StopSignals() as signals:
        for images, texts in run.loader:
            micro.append((images.to(device), texts.to(device)))
            if len(micro) < cfg.gradient_accumulation_steps:
                continue
            data_time, t_step = time.perf_counter() - t_data, time.perf_counter()
            first = run.compiled and run.eta is not None and state.step == run.eta.start
            loss, stop = _optimizer_step(run, micro, signals)
            if first:
                logger.info(
                    "torch.compile: the first step took %.1fs, compiling included",
                    time.perf_counter() - t_step,
                )
            micro = []
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            if state.step % cfg.logging_steps == 0 or state.step == run.steps:
                _log_step(run, loss, ema, data_time, time.perf_counter() - t_step)
            at_eval = state.step % cfg.eval_steps == 0 or state.step == run.steps
            if stop or at_eval or state.step % cfg.save_steps == 0:
                _validate_and_checkpoint(run, do_eval=at_eval and not stop)
            if stop:
                raise TrainingInterrupted(
                    f"stopped by signal {signals.received} at step {state.step}/{run.steps}; "
                    f"checkpoint in {run.ckpt_dir / 'last'}; rerun to resume"
                )
            t_data = time.perf_counter()
    if state.step < run.steps:
        raise MedlensError(f"the data loader ended at step {state.step} of {run.steps}")
    if run.eval_step != state.step:  # resumed from a checkpoint taken after the last step: validate the end
        _validate_and_checkpoint(run, do_eval=True)
    logger.info("trained %d steps in %.1fs", state.step, time.perf_counter() - t0)
    if run.accelerator.is_main_process:
        _write_output(run, out_dir)
        # the encoder is in out_dir; resume state is done with
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()  # flushes and closes the trackers (and ends the process group)
    return TrainResult(state.step, state.best_step, state.best_metric, run.last_metrics)


def _setup(cfg: EncoderConfig, pairs_path: Path, out_dir: Path, zero_shot: ZeroShotConfig | None) -> _Run:
    """Devices, model, data, optimizer and the state to start from (a checkpoint of this run, or fresh)."""
    # long: one function on purpose: everything the loop needs, built in the order it depends on
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from medlens.models.encoders import create_encoder_for_training

    precision = resolve_precision(cfg.precision)
    trackers = [t for t in cfg.report_to if t != "none"]
    accelerator = Accelerator(
        mixed_precision={"fp32": "no"}.get(precision, precision),
        cpu=not torch.cuda.is_available(),
        log_with=trackers or None,
        project_dir=str(out_dir.parent / "tensorboard"),  # results/<experiment>/tensorboard/encoder
    )
    if trackers:  # the settings as the trackers' hyperparameters (scalars only: TensorBoard's hparams)
        flat = {k: v for k, v in to_dict(cfg).items() if isinstance(v, bool | int | float | str)}
        accelerator.init_trackers("encoder", config=flat)
    set_seed(cfg.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    parts = create_encoder_for_training(cfg)
    ckpt_dir = out_dir.with_name(out_dir.name + ".ckpt")
    # the splits memory-mapped (medlens.data.mapped): every process reads the same pages of one file
    with accelerator.main_process_first():
        train_path = map_split(pairs_path, "train", ckpt_dir / "data")
        val_path = map_split(pairs_path, "val", ckpt_dir / "data", columns=("id", "image", "text", "labels"))
    train_table, val_table = open_mapped(train_path), open_mapped(val_path)
    steps = total_steps(cfg, train_table.num_rows, world)
    train_set = PairsDataset(
        train_path, parts.train_transform, hflip=cfg.hflip, text_sampling=cfg.text_sampling
    )
    optimizer = create_optimizer(parts.model, cfg)
    resume = resume_config(to_dict(cfg), _RUN_ONLY, {"pairs": pairs_path})
    # the main process discards a stale checkpoint before the others look
    with accelerator.main_process_first():
        state = _resume(ckpt_dir, resume, parts.model, optimizer)
    compiled = resolve_compile(cfg.compile)
    if compiled:  # in place: the state dict's names (checkpoints, resume, the saved folder) do not change
        parts.model.compile()
    model, optimizer = accelerator.prepare(parts.model, optimizer)
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
        collate_fn=_collate(parts.tokenizer),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
    run = _Run(
        cfg,
        accelerator,
        parts,
        model,
        optimizer,
        loader,
        ContrastiveLoss(cfg.loss, rank=rank, world_size=world),
        steps,
        state,
        ckpt_dir,
        resume,
        train_table.num_rows,
        val_table.num_rows,
        zero_shot,
        eta=Eta(steps, state.step),
        pairs_path=pairs_path,
        train_table=train_table,
        val_table=val_table,
        train_size=len(train_set),
        compiled=compiled,
    )
    _setup_validation(run, val_table)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        run.metrics_csv = _MetricsCsv(ckpt_dir / "metrics.csv", state.step if state.step else None)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("encoder config:\n%s", json.dumps(to_dict(cfg), indent=2))
    logger.info(
        "model %s: %s parameters (%s trainable); device %s, precision %s, %s, %d process(es)",
        cfg.model,
        f"{n_params:,}",
        f"{n_trainable:,}",
        accelerator.device,
        precision,
        "compiled (torch.compile)" if compiled else "not compiled",
        world,
    )
    logger.info(
        "pairs: train %d, val %d; %d steps of %d x %d x %d pairs",
        run.n_train,
        run.n_val,
        steps,
        cfg.per_device_train_batch_size,
        world,
        cfg.gradient_accumulation_steps,
    )
    return run


def _setup_validation(run: _Run, val_table) -> None:
    """The validation loader (the global batch, on one process) and the labels a zero-shot AUC can be had for."""
    if not val_table.num_rows:
        return
    cfg, tokenizer = run.cfg, run.parts.tokenizer
    # the global batch: validation runs on one process, and its loss must not depend on how many train
    run.val_loader = DataLoader(
        PairsDataset(val_table, run.parts.eval_transform),
        batch_size=cfg.per_device_train_batch_size * run.accelerator.num_processes,
        num_workers=cfg.dataloader_num_workers,
        collate_fn=_collate(tokenizer),
    )
    labels = val_table["labels"].to_pylist()
    # labels with both classes in val (an AUC needs positives and negatives)
    run.val_labels = [
        lab
        for lab in (run.zero_shot.labels if run.zero_shot else [])
        if 0 < sum(lab in row for row in labels) < len(labels)
    ]
    run.val_targets = np.array([[lab in row for lab in run.val_labels] for row in labels], dtype=np.int64)


def _optimizer_step(run: _Run, micro: list, signals: StopSignals) -> tuple[float, bool]:
    """One optimizer step over its micro-batches; returns the global batch's loss and whether any rank stops
    (a signal that arrives during the step counts for this step)."""
    cfg, acc, state = run.cfg, run.accelerator, run.state
    lr = lr_at(state.step, cfg, run.steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss = train_step(run.model, run.loss_fn, micro, acc)
    # one collective per step: the processes' loss shares (their mean is the global batch's loss) and the
    # stop flag, so that every rank stops at the same step
    shared = acc.reduce(
        torch.tensor([loss, float(signals.received is not None)], device=acc.device), reduction="sum"
    )
    apply_update(run.model, run.unwrapped, run.optimizer, acc, cfg.max_grad_norm)
    state.step += 1
    state.samples_seen += run.samples_per_step
    return shared[0].item() / acc.num_processes, shared[1].item() > 0


def _log_step(run: _Run, loss: float, ema: float, data_time: float, batch_time: float) -> None:
    """The progress line (with the time left) and, on the main process, its ``metrics.csv`` row."""
    state, model = run.state, run.unwrapped
    lr = run.optimizer.param_groups[0]["lr"]
    rate = run.samples_per_step / max(1e-9, batch_time + data_time)
    scale = float(model.logit_scale.detach().exp())
    bias = getattr(model, "logit_bias", None)
    logger.info(
        "step %d/%d (%.0f%%) | loss %.4f (ema %.4f) | lr %.2e | scale %.2f | %.0f samples/s | data %.3fs batch %.3fs "
        "| %s",
        state.step,
        run.steps,
        100 * state.step / run.steps,
        loss,
        ema,
        lr,
        scale,
        rate,
        data_time,
        batch_time,
        run.eta(state.step),
    )
    row = {
        "epoch": state.samples_seen / run.train_size,
        "samples": state.samples_seen,
        "train/loss": loss,
        "lr": lr,
        "logit_scale": scale,
        "samples_per_s": rate,
        "logit_bias": None if bias is None else float(bias.detach()),
    }
    if run.metrics_csv is not None:
        run.metrics_csv.write({"step": state.step, **row})
    # and to the trackers of report_to (none by default)
    run.accelerator.log({k: v for k, v in row.items() if v is not None}, step=state.step)


def _validate_and_checkpoint(run: _Run, *, do_eval: bool) -> None:
    """Validation (main process) with the best weights kept, then the resumable checkpoint of this step."""
    from medlens.models.encoders import save_encoder

    acc, state, cfg, model = run.accelerator, run.state, run.cfg, run.unwrapped
    run.eval_step = state.step if do_eval else run.eval_step
    if do_eval and run.val_loader is not None and acc.is_main_process:
        # validation runs on the main process alone: a gathering loss on one rank would wait for the others
        run.last_metrics = validate(
            model,
            run.val_loader,
            ContrastiveLoss(cfg.loss),
            acc,
            run.val_targets,
            run.zero_shot,
            run.parts.tokenizer,
            run.val_labels,
        )
        run.metrics_csv.write({"step": state.step, "samples": state.samples_seen, **run.last_metrics})
        acc.log(run.last_metrics, step=state.step)
        logger.info(
            "eval at step %d: %s", state.step, " | ".join(f"{k} {v:.4f}" for k, v in run.last_metrics.items())
        )
        value = run.last_metrics.get(cfg.metric_for_best_model)
        if _is_better(value, state.best_metric, cfg.metric_for_best_model):
            state.best_metric, state.best_step = value, state.step
            p = run.parts
            save_encoder(model, run.ckpt_dir / "best", p.model_cfg, p.preprocess_cfg, tokenizer=p.tokenizer)
    if acc.is_main_process:
        save_checkpoint(
            run.ckpt_dir / "last",
            model=model,
            optimizer=run.optimizer,
            state=state,
            config=run.resume,
            scaler=acc.scaler,
        )
    acc.wait_for_everyone()


# settings that change how a run is carried out, not what it computes: editing them keeps its checkpoint
# compile is numerically the same model: a run resumed with it toggled keeps its checkpoint
_RUN_ONLY = ("resources", "dataloader_num_workers", "logging_steps", "save_steps", "report_to", "compile")


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


# training images that describe the training distribution for the out-of-distribution score (a sample: the
# Gaussian's mean and covariance are steady long before, and MIMIC has 377,000)
_OOD_IMAGES = 4000


def _fit_ood(run: _Run, folder: Path) -> None:
    """``ood.safetensors``: the embeddings of (a sample of) the training images under the weights the folder
    holds, calibrated on the validation images (:mod:`medlens.models.ood`)."""
    from medlens.evaluate.features import encode_rows
    from medlens.models.encoders import load_encoder
    from medlens.models.ood import fit_ood

    encoder = load_encoder(folder, device=run.accelerator.device)
    rng = np.random.default_rng(run.cfg.seed)
    n = run.train_table.num_rows
    take = np.sort(rng.choice(n, size=min(n, _OOD_IMAGES), replace=False))
    # row by row: Arrow's take on a chunked column joins all its chunks first, a copy of the whole split
    train = encode_rows(encoder, [{"image": run.train_table["image"][int(i)].as_py()} for i in take])
    val = (
        encode_rows(encoder, [{"image": image} for image in run.val_table["image"].to_pylist()])
        if run.val_table.num_rows
        else None
    )
    scorer = fit_ood(train, val)
    scorer.save(folder)
    logger.info(
        "out-of-distribution reference: %d training images, 99th percentile of %d held-out distances %.3f",
        len(train),
        0 if val is None else len(val),
        scorer.reference,
    )


def _write_output(run: _Run, out_dir: Path) -> None:
    """The finished folder: best weights as open_clip_model.safetensors, last weights, metrics, card."""
    from medlens.models.encoders import WEIGHTS_NAME, encoder_model_card, save_encoder

    cfg, state, parts, ckpt_dir = run.cfg, run.state, run.parts, run.ckpt_dir
    best = ckpt_dir / "best" / WEIGHTS_NAME
    with atomic_dir(out_dir) as tmp:
        save_encoder(run.unwrapped, tmp, parts.model_cfg, parts.preprocess_cfg, tokenizer=parts.tokenizer)
        os.replace(tmp / WEIGHTS_NAME, tmp / "last.safetensors")
        shutil.copy(best if best.exists() else tmp / "last.safetensors", tmp / WEIGHTS_NAME)
        shutil.copy(ckpt_dir / "metrics.csv", tmp / "metrics.csv")
        _fit_ood(run, tmp)
        info = {
            "medlens_version": __version__,
            "kind": "open_clip",
            "config": to_dict(cfg),
            "steps": state.step,
            "samples_seen": state.samples_seen,
            "best_metric": cfg.metric_for_best_model,
            "best_value": state.best_metric,
            "best_step": state.best_step,
            "final_validation": run.last_metrics,
            "n_train": run.n_train,
            "n_val": run.n_val,
            "zero_shot": to_dict(run.zero_shot) if run.zero_shot else None,
            "weights": {
                WEIGHTS_NAME: f"best by {cfg.metric_for_best_model}" if best.exists() else "last",
                "last.safetensors": f"after step {state.step}",
            },
            "environment": environment.record(),
            # how the training images were prepared: new images are prepared the same way from this folder alone
            "preprocessing": describe_training_images(run.pairs_path),
        }
        (tmp / "medlens.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        with atomic_path(tmp / "README.md") as card:
            card.write_text(encoder_model_card(info, parts.preprocess_cfg, parts.model_cfg, run.steps))
