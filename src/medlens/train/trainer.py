"""The Hugging Face Trainer run shared by the captioner and the VLMs: :func:`fit_decoder` reads the chat
splits, checks the settings, resumes the run's own checkpoints, logs progress, handles preemption, writes
``metrics.csv`` and the finished folder.

The captioner (:mod:`medlens.train.decoder`) and the VLMs (:mod:`medlens.train.vlm`) differ only in how
they build the model, the collator and the data (:class:`DecoderParts`); everything here is the same for
both.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from medlens import layout
from medlens.config import DecoderConfig
from medlens.errors import ConfigError, DataError, MedlensError
from medlens.precision import resolve_compile, resolve_precision
from medlens.train.progress import Eta
from medlens.train.signals import StopSignals, TrainingInterrupted, truncate_metrics

__all__ = [
    "RUN_ONLY",
    "MetricsCsvCallback",
    "PreemptionCallback",
    "TrainerProgress",
    "DecoderParts",
    "training_arguments",
    "tracker_dir",
    "read_chat_splits",
    "run_trainer",
    "fit_decoder",
    "save_weights",
]

logger = logging.getLogger(__name__)

# settings that change how a run is carried out, not what it computes: editing them keeps its checkpoints
RUN_ONLY = (
    "resources",
    "generation",  # decoding, written into the finished folder: the weights do not depend on it
    "trainer.dataloader_num_workers",
    "trainer.logging_steps",
    "trainer.save_steps",
    "trainer.save_total_limit",
    "trainer.report_to",
    "compile",  # numerically the same model
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


def tracker_dir(out_dir: Path, stage: str) -> Path:
    """Where a stage's trackers write: ``results/<experiment>/tensorboard/<stage>`` for ``out_dir`` its output."""
    return out_dir.parent / "tensorboard" / stage


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
        torch_compile=resolve_compile(cfg.compile, auto=cfg.kind != "vlm"),
        use_cpu=not torch.cuda.is_available(),
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
                # not torch's own first line: it advises loading the file unsafely
                f"loaded (torch.load with weights_only refused it); delete {ckpt_dir} to start over"
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


@dataclasses.dataclass
class DecoderParts:
    """What the captioner and a VLM differ in; :func:`fit_decoder` does the rest the same way for both."""

    model: torch.nn.Module
    train_dataset: Any
    eval_dataset: Any  # None without a validation split
    collator: Any
    write: Callable[[Path, Any], dict[str, Any]]  # (temporary output folder, trainer) -> medlens.json extras
    info: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # medlens.json entries known before training
    inputs: dict[str, Path | None] = dataclasses.field(default_factory=dict)  # more files the run depends on
    trainer_class: type | None = None  # a Trainer subclass (the captioner's batching); None: Trainer
    trainer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra summary entries


def save_weights(trainer: Any, folder: Path) -> None:
    """``trainer.save_model(folder)`` without ``training_args.bin``: that file is a pickle (loading it runs
    code), and the settings it holds are in the folder's ``medlens.json``."""
    trainer.save_model(str(folder))
    (Path(folder) / "training_args.bin").unlink(missing_ok=True)


def read_chat_splits(
    chat_dir: Path, cache_dir: Path
) -> tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]:
    """The train and val conversations of ``convert_to_chat_format``'s folder, memory-mapped from
    ``cache_dir`` (:func:`medlens.data.mapped.map_chat`): a process holds a record only while it uses it.

    Raises:
        DataError: naming ``train.jsonl`` when it holds no conversation.
    """
    from accelerate import PartialState

    from medlens.data.mapped import MappedRecords, map_chat

    with PartialState().main_process_first():  # one process writes the files, the others map them
        paths = [map_chat(chat_dir / f"{split}.jsonl", cache_dir) for split in ("train", "val")]
    train, val = (MappedRecords(p) for p in paths)
    if not train:
        raise DataError(
            "no training conversations",
            file=str(chat_dir / "train.jsonl"),
            expected="at least one row in the train split",
        )
    return train, val


def fit_decoder(
    cfg: DecoderConfig,
    chat_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    build: Callable[[list[dict[str, Any]], list[dict[str, Any]]], DecoderParts],
) -> dict[str, Any]:
    """The Trainer run of a decoder: settings checked, model and data from ``build``, checkpoints resumed when
    they belong to this run, preemption, ``metrics.csv``, and the finished folder written atomically.

    Raises:
        ConfigError: settings the Trainer refuses (named ``decoder.trainer``), or early stopping without
            the best checkpoint tracked.
        DataError: an empty training split.
        TrainingInterrupted: after the checkpoint written on SIGTERM/SIGUSR1.
    """
    # long: the Trainer run top to bottom (shared by the captioner and the VLMs), each step a few lines
    # one function on purpose: the run reads in order, from the settings to the finished folder (~100 lines)
    from accelerate import PartialState
    from transformers import EarlyStoppingCallback, Trainer, set_seed
    from transformers.utils import logging as hf_logging

    from medlens import __version__, environment
    from medlens.config import to_dict
    from medlens.data.chat_format import report_prompt
    from medlens.data.preprocessing import describe_training_images
    from medlens.io import atomic_dir
    from medlens.models.card import decoder_model_card
    from medlens.train.checkpoint import claim_trainer_checkpoints, resume_config

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    set_seed(cfg.trainer.seed)
    chat_dir, out_dir = Path(chat_dir), Path(out_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".ckpt")
    # TensorBoard (report_to) writes beside the model: the default, inside the checkpoints, is deleted at the end
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracker_dir(out_dir, "decoder"))
    train_records, val_records = read_chat_splits(chat_dir, ckpt_dir / "data")
    if cfg.early_stopping_patience and val_records and not cfg.trainer.load_best_model_at_end:
        raise ConfigError(
            "early stopping needs the best checkpoint tracked",
            key="decoder.trainer.load_best_model_at_end",
            expected="true when decoder.early_stopping_patience is set",
        )
    try:  # before the model loads: a big one takes minutes
        args = training_arguments(cfg, ckpt_dir, bool(val_records))
    except ValueError as e:  # e.g. save_steps not a multiple of eval_steps with load_best_model_at_end
        raise ConfigError(str(e), key="decoder.trainer") from e
    logger.info("decoder config:\n%s", json.dumps(to_dict(cfg), indent=2))
    logger.info("conversations: train %d, val %d", len(train_records), len(val_records))
    parts = build(train_records, val_records)
    n_params = sum(p.numel() for p in parts.model.parameters())
    n_trainable = sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
    logger.info(
        "%s: %s parameters, %s trainable; device %s; precision %s; %s",
        cfg.model or cfg.kind,
        f"{n_params:,}",
        f"{n_trainable:,}",
        "cuda" if torch.cuda.is_available() else "cpu",
        resolve_precision(cfg.precision),
        "compiled (torch.compile)" if args.torch_compile else "not compiled",
    )
    # the main process decides (and cleans up) before the others look
    with PartialState().main_process_first():
        inputs = {
            "train.jsonl": chat_dir / "train.jsonl",
            "val.jsonl": chat_dir / "val.jsonl",
            **parts.inputs,
        }
        resume = claim_trainer_checkpoints(
            ckpt_dir, resume_config(to_dict(cfg), RUN_ONLY, inputs), key_prefix="decoder"
        )
    preemption = PreemptionCallback(ckpt_dir)
    callbacks = [MetricsCsvCallback(ckpt_dir / "metrics.csv"), preemption]
    if cfg.early_stopping_patience and val_records:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    trainer = (parts.trainer_class or Trainer)(
        model=parts.model,
        args=args,
        train_dataset=parts.train_dataset,
        eval_dataset=parts.eval_dataset,
        data_collator=parts.collator,
        callbacks=callbacks,
        **parts.trainer_kwargs,
    )
    result = run_trainer(trainer, preemption, ckpt_dir, resume)
    summary = {
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_val_loss": trainer.state.best_metric,
        "trainable_parameters": n_trainable,
        **parts.summary,
    }
    logger.info("decoder trained: %s", summary)
    if trainer.is_world_process_zero():  # one process writes the output (the others hold the same weights)
        with atomic_dir(out_dir) as tmp:
            pairs = layout.in_experiment(
                layout.experiment_of(chat_dir, layout.CHAT), layout.PAIRS
            )  # how the training images were prepared, for new ones
            info = {
                "preprocessing": describe_training_images(pairs) if pairs.is_file() else None,
                "prompt": report_prompt(
                    chat_dir
                ),  # the user turn it answers with a report (VLMs; None: none)
                "medlens_version": __version__,
                "kind": cfg.kind,
                "config": to_dict(cfg),
                "summary": summary,
                **parts.info,
                **parts.write(tmp, trainer),
                "environment": environment.record(),
            }
            shutil.copy(ckpt_dir / "metrics.csv", tmp / "metrics.csv")
            (tmp / "medlens.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
            # over the card PEFT writes with an adapter: ours says what the data was and what it is not for
            (tmp / "README.md").write_text(decoder_model_card(json.loads(json.dumps(info, default=str))))
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model is in out_dir; resume state is done with
    trainer.accelerator.wait_for_everyone()
    return summary
