"""The Hugging Face Trainer run shared by the captioner and the VLMs: training arguments, the metrics log,
preemption, and resuming from the run's own checkpoints.

The captioner (:mod:`medlens.train.decoder`) and the VLMs (:mod:`medlens.train.vlm`) differ only in how
they build the model, the collator and the data; everything here is the same for both.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import pickle
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from medlens.config import DecoderConfig
from medlens.errors import MedlensError
from medlens.precision import resolve_precision
from medlens.train.progress import Eta
from medlens.train.signals import StopSignals, TrainingInterrupted, truncate_metrics

__all__ = [
    "RUN_ONLY",
    "MetricsCsvCallback",
    "PreemptionCallback",
    "TrainerProgress",
    "training_arguments",
    "run_trainer",
]

logger = logging.getLogger(__name__)

# settings that change how a run is carried out, not what it computes: editing them keeps its checkpoints
RUN_ONLY = (
    "resources",
    "trainer.dataloader_num_workers",
    "trainer.logging_steps",
    "trainer.save_steps",
    "trainer.save_total_limit",
    "trainer.report_to",
)


class MetricsCsvCallback(TrainerCallback):
    """Append every Trainer log (train loss, lr, eval loss) to ``metrics.csv`` under medlens's key names."""

    KEYS = {"loss": "train/loss", "learning_rate": "lr", "grad_norm": "grad_norm", "eval_loss": "val/loss"}

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        # a run resumed from checkpoint-N repeats the steps logged after N before it was killed: drop those rows
        if state.is_world_process_zero and self.path.exists():
            truncate_metrics(self.path, state.global_step, ["step", "epoch", *self.KEYS.values()])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {new: logs[old] for old, new in self.KEYS.items() if old in logs}
        if not row:
            return
        new_file = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "epoch", *self.KEYS.values()])
            if new_file:
                w.writeheader()
            w.writerow({"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **row})


class PreemptionCallback(StopSignals, TrainerCallback):
    """On SIGTERM/SIGUSR1 (SLURM's warning before preemption or the time limit), finish the step, save a
    checkpoint and raise :class:`TrainingInterrupted`; the rerun resumes from that checkpoint.

    Raising from ``on_save`` leaves ``Trainer.train`` right after the checkpoint is written: the
    end-of-training work (loading the best model, pruning checkpoints) would cost time the job may
    not have, and ``save_total_limit: 1`` would delete the new checkpoint. Use it as a context manager
    around ``trainer.train`` so that the handlers are installed only while training.
    """

    def __init__(self, ckpt_dir: Path):
        super().__init__()
        self.ckpt_dir = ckpt_dir
        self.stopping = False

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every process stops at the same step (the signal reaches them at different moments)
            flag = torch.tensor([float(stop)], device=args.device)
            torch.distributed.all_reduce(flag)
            stop = flag.item() > 0
        if stop:
            self.stopping = control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:
            raise TrainingInterrupted(
                f"stopped by signal {self.received} at step {state.global_step}/"
                f"{state.max_steps}; checkpoint in {self.ckpt_dir}; rerun to resume"
            )
        return control


def training_arguments(cfg: DecoderConfig, ckpt_dir: Path, has_val: bool) -> TrainingArguments:
    """``cfg.trainer`` as TrainingArguments (same names), plus what medlens decides: precision, evaluation, logging."""
    precision = resolve_precision(cfg.precision)
    kwargs = dataclasses.asdict(cfg.trainer)
    if not has_val:  # without a validation split there is no best model to pick
        kwargs["load_best_model_at_end"] = False
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        **kwargs,
        eval_strategy="steps" if has_val else "no",
        save_strategy="steps",
        logging_strategy="steps",
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),
        # non-reentrant checkpointing needs no input that requires grad (frozen embeddings under LoRA)
        gradient_checkpointing_kwargs={"use_reentrant": False},
        label_names=["labels"],
    )


def run_trainer(trainer: Any, preemption: PreemptionCallback, ckpt_dir: Path, resume: bool) -> Any:
    """``trainer.train()``, resuming from the last checkpoint in ``ckpt_dir`` when ``resume``.

    Raises:
        MedlensError: naming the folder when a checkpoint holds anything but data: the Trainer reads them
            with ``torch.load(weights_only=True)``, which refuses code rather than running it.
        TrainingInterrupted: after the checkpoint written on SIGTERM/SIGUSR1.
    """
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging

    # progress goes to the rule's log: medlens's progress line instead of the Trainer's print of each log dict
    # (its tqdm bar stays on a terminal), and the Trainer's own warnings through medlens's logging handlers
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    trainer.remove_callback(PrinterCallback)
    args = trainer.args
    trainer.add_callback(
        TrainerProgress(args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)
    )
    if resume:
        logger.info("resuming from the last checkpoint in %s", ckpt_dir)
    with preemption:
        try:
            return trainer.train(resume_from_checkpoint=True if resume else None)
        except pickle.UnpicklingError as e:
            raise MedlensError(
                f"{ckpt_dir}: a resume checkpoint holds something other than tensors and was not "
                f"loaded ({str(e).splitlines()[0]}); delete {ckpt_dir} to start over"
            ) from e


class TrainerProgress(TrainerCallback):
    """The Trainer's logs as medlens progress lines, and a summary after each evaluation."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self.eta: Eta | None = None
        self._last: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.eta = Eta(state.max_steps, state.global_step)
        self._last = (state.global_step, time.perf_counter())

    def on_log(self, args, state, control, logs: Mapping[str, Any] | None = None, **kwargs):
        if not state.is_world_process_zero or not logs or self.eta is None:
            return
        if "eval_loss" in logs:
            logger.info("eval at step %d: val/loss %.4f", state.global_step, logs["eval_loss"])
            return
        if "loss" not in logs:
            return
        now = time.perf_counter()
        step0, t0 = self._last or (state.global_step, now)
        rate = (state.global_step - step0) * self.samples_per_step / max(now - t0, 1e-9)
        self._last = (state.global_step, now)
        parts = [
            f"step {state.global_step}/{state.max_steps} ({100 * state.global_step / max(state.max_steps, 1):.0f}%)",
            f"loss {logs['loss']:.4f}",
        ]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if "grad_norm" in logs:
            parts.append(f"grad norm {logs['grad_norm']:.3f}")
        parts += [f"{rate:.1f} samples/s", self.eta(state.global_step)]
        logger.info(" | ".join(parts))
