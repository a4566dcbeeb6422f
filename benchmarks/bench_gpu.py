# long: one GPU session runs one script: the encoder, captioner and VLM contenders, FLOP counting, the table
"""Training speed of medlens's full-size presets on one GPU: images/s, peak memory, compile time and MFU.

Random weights, synthetic batches (only the shapes matter), bf16, one process. Parts (``--only``):

* ``encoders``: for each full-size contrastive preset (``hybrid_dinov3_clip``, ``siglip_base``; the
  pretrained keys set to None) three contenders:
  - medlens: ``medlens.train.contrastive.train_step`` with the preset's ``ContrastiveLoss``, optimizer
    (``create_optimizer``), gradient clipping and logit-scale clamp, through accelerate, the model compiled
    in place as ``train_encoder`` does when ``compile: auto`` resolves on (a CUDA GPU);
  - plain: the same model in a plain PyTorch loop (autocast bf16, open_clip's ClipLoss/SigLipLoss, fused
    AdamW, ``torch.compile``), the whole optimizer-step batch as one micro-batch;
  - stock: open_clip's own model of that size in the same plain loop (``ViT-B-16`` for the hybrid,
    ``ViT-B-16-SigLIP`` forced to 448 px for siglip_base).
* ``captioner``: ``lapvqa_captioner`` through the Hugging Face Trainer with medlens's
  ``training_arguments`` (precision, ``torch_compile``) and ``CaptionTrainer``, every report ``max_length``
  tokens long; images/s and tokens/s.
* ``vlm``: ``paligemma_qlora`` and ``llama32_vision_lora`` at their published sizes (configs built here,
  no Hub), random weights made on the GPU, LoRA adapters as the preset says (``medlens.train.vlm``), through
  the same Trainer. PaliGemma's 4-bit load goes through ``medlens.models.vlm.load_vlm`` from a folder the
  random model is saved to; where 4-bit fails the row says so and an unquantised (bf16) LoRA row is measured
  instead.

Rates are the median of ``--steps`` timed optimizer steps after ``--warmup``; compile time is the first
step's time minus that median (the first step compiles). MFU = model FLOPs of one forward+backward per
image (``torch.utils.flop_counter.FlopCounterMode`` on the uncompiled model; recomputation and the no-grad
feature pass of gradient accumulation are not counted) x images/s / the device's peak dense bf16 FLOP/s.
A time-to-train estimate per seed experiment follows from the measured rates.

GPU run (docs/benchmarks.md, "On a GPU machine", has the whole recipe): ``bash benchmarks/gpu_site.sh`` here,
then there ``PYTHONPATH=.gpu-site:src python3 benchmarks/bench_gpu.py --json $OUT/gpu.json`` (the record is
rewritten after every contender), then here ``bench_gpu.py --from-json gpu.json --write docs/benchmarks.md``.
``--tiny``: the same code paths on the tiny presets, on CPU in fp32, compile off (the test's mode).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from docs_section import cpu_model, write_section  # this folder: the benchmarks run as scripts

TITLE = "## Training speed on one GPU: encoders, captioner, VLMs (issue #19)"
PARTS = ("encoders", "captioner", "vlm")
# peak dense bf16 tensor-core FLOP/s (no sparsity), from NVIDIA's data sheets; first match in the device name wins
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
ENCODER_PRESETS = {"full": ["hybrid_dinov3_clip", "siglip_base"], "tiny": ["tiny", "tiny_resnet"]}
# open_clip's stock model of the same size (name, forced image size); the tiny presets use their own config
STOCK = {"hybrid_dinov3_clip": ("ViT-B-16", None), "siglip_base": ("ViT-B-16-SigLIP", 448)}
CAPTIONER_PRESET = {"full": "lapvqa_captioner", "tiny": "tiny_captioner"}
GPT2_VOCAB = 50257  # the published GPT-2 vocabulary (the preset's tokenizer, out of reach offline)
NO_PRETRAINED = {
    "pretrained": None,
    "pretrained_image": None,
    "pretrained_text_model": None,
    "pretrained_text": None,
}

START = time.perf_counter()


def log(message: str) -> None:
    """A progress line with the UTC time and seconds since start (stderr: a partial run is still readable)."""
    now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{now} +{time.perf_counter() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Settings:
    """What every contender shares: device, precision, compile and timing."""

    tiny: bool
    steps: int
    warmup: int
    batch: int | None
    peak_flops: float | None
    peak_note: str
    encoders: list[str] | None = None  # encoder presets to run; None: the mode's own
    on_row: Callable[[dict], None] | None = None  # called with every finished row (the JSON record)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.tiny else "cuda")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.tiny else torch.bfloat16

    @property
    def compile(self) -> bool:
        return not self.tiny


def peak_flops(device_name: str | None, override_tflops: float | None) -> tuple[float | None, str]:
    """The peak dense bf16 FLOP/s to divide by, or None with the reason MFU is not computed."""
    if override_tflops:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if device_name is None:
        return None, "not computed: no CUDA device (CPU run)"
    for key, value in PEAK_BF16:
        if key in device_name:
            return value, f"{device_name}: {value / 1e12:g} TFLOP/s bf16 dense"
    return None, f"not computed: peak bf16 FLOP/s of {device_name} unknown (pass --peak-tflops)"


def sync(settings: Settings) -> None:
    if settings.device.type == "cuda":
        torch.cuda.synchronize()


def reset_memory(settings: Settings) -> None:
    """Free the previous contender and restart the peak-memory counter (and dynamo's caches)."""
    gc.collect()
    torch._dynamo.reset()
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(settings: Settings) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if settings.device.type == "cuda" else None


def time_steps(step: Callable[[], float], settings: Settings) -> list[float]:
    """Seconds of each of ``warmup + steps`` calls of ``step`` (synchronised, so GPU work is counted)."""
    times = []
    for i in range(settings.warmup + settings.steps):
        sync(settings)
        start = time.perf_counter()
        loss = step()
        sync(settings)
        times.append(time.perf_counter() - start)
        if i == 0:
            log(f"  first step {times[0]:.1f}s (loss {loss:.3f})")
    return times


def summarise(times: list[float], settings: Settings, images_per_step: int, compiled: bool) -> dict:
    """Images/s from the median timed step; compile time = first step minus that median."""
    timed = times[settings.warmup :] or times
    median = statistics.median(timed)
    return {
        "images_per_step": images_per_step,
        "median_step_s": median,
        "images_per_s": images_per_step / median,
        "compile_s": times[0] - median if compiled else None,
        "timed_steps": len(timed),
    }


def count_flops_per_image(forward_backward: Callable[[], None], batch: int) -> float:
    """FLOPs of one forward+backward (``FlopCounterMode``: matmuls and convolutions) divided by ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward()
    return counter.get_total_flops() / batch


def add_mfu(row: dict, settings: Settings) -> dict:
    """MFU from the row's FLOPs per image and images/s, or the reason it is not computed."""
    if settings.peak_flops is None or not row.get("flops_per_image"):
        row["mfu"], row["mfu_note"] = None, settings.peak_note
    else:
        row["mfu"] = row["flops_per_image"] * row["images_per_s"] / settings.peak_flops
        row["mfu_note"] = settings.peak_note
    return row


def guarded(part: str, contender: str, run: Callable[[], dict], settings: Settings) -> dict:
    """One contender's row; a failure becomes a row with its error, and the next contender still runs."""
    log(f"{part}: {contender}")
    reset_memory(settings)
    row = {"part": part, "contender": contender, "status": "ok"}
    try:
        row.update(run())
        row["peak_gib"] = peak_gib(settings)
        add_mfu(row, settings)
        log(f"  {row['images_per_s']:.1f} images/s, peak {row['peak_gib'] or 0:.1f} GiB")
    except Exception as e:  # noqa: BLE001 - any failure is reported in the table, not raised
        row.update(
            status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        )
        log(f"  failed: {row['error']}\n{traceback.format_exc(limit=6)}")
    if settings.on_row:
        settings.on_row(row)
    return row


# ---------------------------------------------------------------------------------------------------- encoders


def encoder_config(preset: str, settings: Settings):
    """The preset's EncoderConfig, random init; ``--batch`` replaces its batch (and its accumulation by 1)."""
    batch = {"per_device_train_batch_size": settings.batch, "gradient_accumulation_steps": 1}
    return encoder_preset(preset, **(batch if settings.batch else {}))


def encoder_preset(preset: str, **overrides):
    """The preset's EncoderConfig, random init (its pretrained keys None), with ``overrides``."""
    from medlens.config import EncoderConfig, from_dict, resolve_preset

    section = resolve_preset("encoder", {"preset": preset, **NO_PRETRAINED, **overrides}, source="bench_gpu")
    return from_dict(EncoderConfig, section, source="bench_gpu")


def build_encoder(cfg):
    """The model as ``create_encoder_for_training`` makes it (without the tokenizer and transforms, which
    need the Hub for siglip_base and take no part in a step)."""
    from medlens.models.encoders import create_encoder, set_up_for_training

    model, model_cfg, _ = create_encoder(cfg)
    set_up_for_training(model, cfg)
    return model, model_cfg


def synthetic_pairs(batch: int, image_size: int, context: int, vocab: int, device) -> tuple:
    """Random images and full-length random token rows (the text tower's worst case)."""
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    texts = torch.randint(1, vocab - 1, (batch, context), device=device)
    return images, texts


def contrastive_flops(model, loss_fn, pairs, settings: Settings) -> float:
    """Model FLOPs per image of one forward+backward of the uncompiled model (gradients then dropped)."""
    from medlens.train.contrastive import features

    def forward_backward():
        with torch.autocast(settings.device.type, dtype=settings.dtype, enabled=not settings.tiny):
            loss = loss_fn(*features(model, *pairs))
        loss = loss["contrastive_loss"] if isinstance(loss, dict) else loss
        loss.backward()

    flops = count_flops_per_image(forward_backward, pairs[0].shape[0])
    model.zero_grad(set_to_none=True)
    return flops


def medlens_encoder(preset: str, settings: Settings) -> dict:
    """medlens's step as ``train_encoder`` runs it: accelerate, in-place compile, its loss and optimizer."""
    from accelerate import Accelerator

    from medlens.precision import resolve_compile
    from medlens.train.contrastive import apply_update, train_step
    from medlens.train.losses import ContrastiveLoss
    from medlens.train.schedules import create_optimizer

    cfg = encoder_config(preset, settings)
    accelerator = Accelerator(mixed_precision="no" if settings.tiny else "bf16", cpu=settings.tiny)
    model, model_cfg = build_encoder(cfg)
    model.to(accelerator.device)
    loss_fn = ContrastiveLoss(cfg.loss)
    vocab = model_cfg["text_cfg"].get("vocab_size", 49408)
    micro = [
        synthetic_pairs(
            cfg.per_device_train_batch_size, cfg.image_size, cfg.context_length, vocab, accelerator.device
        )
        for _ in range(cfg.gradient_accumulation_steps)
    ]
    flops = contrastive_flops(model, loss_fn, micro[0], settings)
    optimizer = create_optimizer(model, cfg)
    compiled = settings.compile and resolve_compile(cfg.compile)
    if compiled:  # train_encoder's way: Module.compile in place, before accelerate wraps it
        model.compile()
    model, optimizer = accelerator.prepare(model, optimizer)

    unwrapped = accelerator.unwrap_model(model)

    def step() -> float:
        loss = train_step(model, loss_fn, micro, accelerator)
        apply_update(model, unwrapped, optimizer, accelerator, cfg.max_grad_norm)
        return loss

    images = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    return {
        "model": cfg.model,
        "batch": f"{cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulated",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "flops_per_image": flops,
        "optimizer": cfg.optim,
        **summarise(time_steps(step, settings), settings, images, compiled),
    }


def plain_loop(
    model, loss_kind: str, pairs: tuple, settings: Settings
) -> tuple[dict, int, Callable[[], float]]:
    """The textbook loop on ``model``: autocast, open_clip's loss, fused AdamW, ``torch.compile``."""
    from open_clip.loss import ClipLoss, SigLipLoss

    loss_fn = SigLipLoss() if loss_kind == "siglip" else ClipLoss()

    def loss_of(net):
        out = net(*pairs)
        extra = (out["logit_bias"],) if loss_kind == "siglip" else ()
        return loss_fn(out["image_features"], out["text_features"], out["logit_scale"], *extra)

    def forward_backward():
        with torch.autocast(settings.device.type, dtype=settings.dtype, enabled=not settings.tiny):
            loss = loss_of(model)
        loss.backward()

    flops = count_flops_per_image(forward_backward, pairs[0].shape[0])
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=not settings.tiny)
    net = torch.compile(model) if settings.compile else model

    def step() -> float:
        with torch.autocast(settings.device.type, dtype=settings.dtype, enabled=not settings.tiny):
            loss = loss_of(net)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    batch = pairs[0].shape[0]
    return {"flops_per_image": flops, "optimizer": "adamw (fused)", "batch": str(batch)}, batch, step


def plain_encoder(preset: str, settings: Settings) -> dict:
    """The preset's own model (medlens's create_encoder) in the plain loop, the step's whole batch at once."""
    cfg = encoder_config(preset, settings)
    model, model_cfg = build_encoder(cfg)
    model.to(settings.device)
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    vocab = model_cfg["text_cfg"].get("vocab_size", 49408)
    pairs = synthetic_pairs(batch, cfg.image_size, cfg.context_length, vocab, settings.device)
    info, images, step = plain_loop(model, cfg.loss, pairs, settings)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    timing = summarise(time_steps(step, settings), settings, images, settings.compile)
    return {"model": cfg.model, "params_m": params, **info, **timing}


def stock_encoder(preset: str, settings: Settings) -> dict:
    """open_clip's stock model of the preset's size in the plain loop (the tiny presets: their own config)."""
    import open_clip

    from medlens.models.registry import register_open_clip_configs

    register_open_clip_configs()
    cfg = encoder_config(preset, settings)
    name, size = STOCK.get(preset, (cfg.model, None))
    model = open_clip.create_model(name, force_image_size=size, device=settings.device, output_dict=True)
    model_cfg = open_clip.get_model_config(name)
    image_size = size or model_cfg["vision_cfg"].get("image_size", 224)
    context = model_cfg["text_cfg"].get("context_length", 77)
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    pairs = synthetic_pairs(
        batch, image_size, context, model_cfg["text_cfg"].get("vocab_size", 49408), settings.device
    )
    info, images, step = plain_loop(model, cfg.loss, pairs, settings)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    timing = summarise(time_steps(step, settings), settings, images, settings.compile)
    label = f"open_clip {name}" + (f" @ {size} px" if size else "")
    return {"model": label, "params_m": params, **info, **timing}


def run_encoders(settings: Settings) -> list[dict]:
    rows = []
    for preset in settings.encoders or ENCODER_PRESETS["tiny" if settings.tiny else "full"]:
        for name, fn in (("medlens", medlens_encoder), ("plain", plain_encoder), ("stock", stock_encoder)):
            rows.append(
                guarded("encoders", f"{preset}: {name}", lambda f=fn, p=preset: f(p, settings), settings)
            )
    return rows


# ------------------------------------------------------------------------------------- Trainer (captioner, VLM)


class StepTimer:
    """A TrainerCallback recording each optimizer step's time (synchronised) and switching saving off."""

    def __init__(self, settings: Settings):
        from transformers import TrainerCallback

        timer = self
        self.begin: list[float] = []
        self.end: list[float] = []

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                sync(settings)
                timer.begin.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                sync(settings)
                timer.end.append(time.perf_counter())
                if len(timer.end) == 1:
                    log(f"  first step {timer.end[0] - timer.begin[0]:.1f}s")
                control.should_save = False  # a checkpoint of the random model is not what is timed

        self.callback = _Callback()

    def times(self) -> list[float]:
        """Step times: the first from its begin, the others between consecutive ends (data included)."""
        return [self.end[0] - self.begin[0]] + [b - a for a, b in zip(self.end, self.end[1:], strict=False)]


def bench_trainer_config(cfg, settings: Settings):
    """The decoder config with the Trainer set to run just the timed steps: no saving, evaluation or logging."""
    trainer = dataclasses.replace(
        cfg.trainer,
        max_steps=settings.warmup + settings.steps,
        warmup_steps=0,
        save_steps=10**6,
        eval_steps=10**6,
        logging_steps=10**6,
        load_best_model_at_end=False,
        dataloader_num_workers=0,
        report_to=["none"],
        # every synthetic report has the same length: length grouping would only measure every item first
        train_sampling_strategy="random",
        **(
            {"per_device_train_batch_size": settings.batch, "gradient_accumulation_steps": 1}
            if settings.batch
            else {}
        ),
    )
    return dataclasses.replace(cfg, trainer=trainer)


def decoder_config(preset: str, **overrides):
    from medlens.config import DecoderConfig, from_dict, resolve_preset

    section = resolve_preset("decoder", {"preset": preset, **overrides}, source="bench_gpu")
    return from_dict(DecoderConfig, section, source="bench_gpu")


class FixedBatches(torch.utils.data.Dataset):
    """``n`` copies of one synthetic example (a dict of CPU tensors): loading costs nothing."""

    def __init__(self, example: dict, n: int):
        self.example, self.n = example, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.example


def run_trainer_steps(
    model, cfg, example: dict, settings: Settings, trainer_class=None
) -> tuple[list[float], bool]:
    """``trainer.train()`` for the timed steps with medlens's TrainingArguments; the step times and whether
    the Trainer compiled the model."""
    from transformers import Trainer

    from medlens.train.trainer import training_arguments

    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(cfg, Path(tmp), has_val=False)
        if settings.tiny:
            args.torch_compile = False
        timer = StepTimer(settings)
        per_step = cfg.trainer.per_device_train_batch_size * cfg.trainer.gradient_accumulation_steps
        trainer = (trainer_class or Trainer)(
            model=model,
            args=args,
            train_dataset=FixedBatches(example, per_step * (settings.warmup + settings.steps + 1)),
            callbacks=[timer.callback],
        )
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its summary: keep stdout the table
            trainer.train()
    return timer.times(), bool(args.torch_compile)


class VocabOnly:
    """What ``build_captioner`` reads of a tokenizer: its size and special ids (GPT-2's is out of reach offline)."""

    def __init__(self, size: int):
        self.size = size
        self.bos_token_id = self.eos_token_id = self.pad_token_id = (
            size - 1
        )  # GPT-2's <|endoftext|> is all three

    def __len__(self) -> int:
        return self.size


def captioner_example(model, cfg) -> dict:
    """One image and a report of ``max_length`` random tokens (every position trained)."""
    size = model.config.vision_cfg.get("image_size", 224)
    ids = torch.randint(0, model.config.decoder["vocab_size"] - 1, (cfg.max_length,))
    return {
        "pixel_values": torch.randn(3, size, size),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
    }


def trainer_flops(model, example: dict, settings: Settings, batch: int = 2) -> float:
    """FLOPs per example of one forward+backward of the uncompiled model on ``batch`` copies of ``example``."""
    inputs = {k: v.unsqueeze(0).expand(batch, *v.shape).to(settings.device) for k, v in example.items()}

    def forward_backward():
        with torch.autocast(settings.device.type, dtype=settings.dtype, enabled=not settings.tiny):
            loss = model(**inputs).loss
        loss.backward()

    flops = count_flops_per_image(forward_backward, batch)
    model.zero_grad(set_to_none=True)
    return flops


def captioner(settings: Settings) -> dict:
    """The captioner preset's Trainer step (CaptionTrainer, medlens's TrainingArguments)."""
    from medlens.models.captioner import build_captioner
    from medlens.train.decoder import CaptionTrainer

    preset = CAPTIONER_PRESET["tiny" if settings.tiny else "full"]
    cfg = bench_trainer_config(decoder_config(preset, init_from_encoder=False), settings)
    vocab = GPT2_VOCAB if cfg.tokenizer == "gpt2" else cfg.vocab_size
    model = build_captioner(cfg, VocabOnly(vocab)).to(settings.device)
    example = captioner_example(model, cfg)
    flops = trainer_flops(model, example, settings)
    times, compiled = run_trainer_steps(model, cfg, example, settings, CaptionTrainer)
    per_step = cfg.trainer.per_device_train_batch_size * cfg.trainer.gradient_accumulation_steps
    row = summarise(times, settings, per_step, compiled)
    return {
        "model": f"{cfg.vision_model} {example['pixel_values'].shape[-1]} px + {cfg.num_layers}x{cfg.hidden_size} "
        f"decoder, vocab {vocab}",
        "batch": f"{cfg.trainer.per_device_train_batch_size} x {cfg.trainer.gradient_accumulation_steps} accumulated",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "optimizer": cfg.trainer.optim,
        "flops_per_image": flops,
        "tokens_per_image": cfg.max_length,
        "tokens_per_s": row["images_per_s"] * cfg.max_length,
        **row,
    }


def run_captioner(settings: Settings) -> list[dict]:
    return [
        guarded(
            "captioner",
            CAPTIONER_PRESET["tiny" if settings.tiny else "full"],
            lambda: captioner(settings),
            settings,
        )
    ]


# ----------------------------------------------------------------------------------------------------- VLMs


def paligemma_config(tiny: bool):
    """PaliGemma 3B pt-224 as published (SigLIP So400m/14 + Gemma 2B), or a tiny one of the same shape."""
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    if tiny:
        vision = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
        text = dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
        )
        projection, vocab = 64, 512
    else:
        vision = dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        )
        text = dict(
            vocab_size=257216,
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=18,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
        )
        projection, vocab = 2048, 257216
    return PaliGemmaConfig(
        vision_config=SiglipVisionConfig(projection_dim=projection, **vision),
        text_config=GemmaConfig(pad_token_id=0, eos_token_id=1, bos_token_id=2, **text),
        image_token_index=vocab - 64,  # the published model's <image> id is 257152
        projection_dim=projection,
        hidden_size=text["hidden_size"],
        vocab_size=vocab,
        pad_token_id=0,
    )


def mllama_config(tiny: bool):
    """Llama 3.2 11B Vision as published (transformers' Mllama defaults are its sizes; 560 px, 4 tiles), or tiny."""
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig

    if tiny:
        vision = MllamaVisionConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_global_layers=1,
            attention_heads=4,
            intermediate_size=64,
            intermediate_layers_indices=[0],
            vision_output_dim=64,
            image_size=32,
            patch_size=8,
            max_num_tiles=2,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
        )
        text = MllamaTextConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            cross_attention_layers=[1],
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return MllamaConfig(vision_config=vision, text_config=text, image_token_index=500)
    vision = MllamaVisionConfig(image_size=560, patch_size=14, max_num_tiles=4)
    text = MllamaTextConfig(
        vocab_size=128256,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_theta": 500000.0,
        },
        pad_token_id=128004,
        bos_token_id=128000,
        eos_token_id=128009,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)


def random_vlm(config, settings: Settings):
    """A random-init model made on the device in the run's dtype (3-11 B parameters: minutes on the CPU)."""
    from transformers import AutoModelForImageTextToText

    with settings.device:
        return AutoModelForImageTextToText.from_config(config, dtype=settings.dtype)


def paligemma_example(config, length: int) -> dict:
    """<image> x 256 (or the tiny count), <bos>, random prompt and answer tokens; the answer is trained."""
    vision = config.vision_config
    n_image = (vision.image_size // vision.patch_size) ** 2
    ids = torch.randint(3, config.image_token_index, (length,))
    ids[:n_image] = config.image_token_index
    labels = ids.clone()
    labels[: n_image + 16] = -100  # image and prompt tokens are not targets
    return {
        "pixel_values": torch.randn(3, vision.image_size, vision.image_size),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": (labels != -100).long(),  # PaliGemma: 0 prefix (bidirectional), 1 suffix
        "labels": labels,
    }


def mllama_example(config, length: int) -> dict:
    """One image of all tiles (the 11B's worst case), the <|image|> token first, random text; the answer trained."""
    vision = config.vision_config
    tiles = vision.max_num_tiles
    ids = torch.randint(3, config.text_config.vocab_size - 1, (length,))
    ids[0] = config.image_token_index
    labels = ids.clone()
    labels[:16] = -100
    return {
        "pixel_values": torch.randn(1, tiles, 3, vision.image_size, vision.image_size),
        "aspect_ratio_ids": torch.tensor([len(vision.supported_aspect_ratios)]),  # the last ratio: all tiles
        "aspect_ratio_mask": torch.ones(1, tiles, dtype=torch.long),
        "cross_attention_mask": torch.ones(length, 1, tiles, dtype=torch.long),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
    }


def made_model(config, cfg, quantise: bool, settings: Settings) -> tuple:
    """``(model, parameters in millions, folder or None)``: the random model on the device; with ``quantise``
    saved and loaded back 4-bit by medlens's own ``load_vlm`` (bitsandbytes quantises on load), the
    unquantised copy freed first so that it is not in the peak memory."""
    import shutil

    from medlens.models.vlm import load_vlm

    start = time.perf_counter()
    model = random_vlm(config, settings)
    params = sum(p.numel() for p in model.parameters()) / 1e6  # before 4-bit packing halves the count
    log(f"  random model made in {time.perf_counter() - start:.1f}s")
    if not quantise:
        return model, params, None
    folder = Path(tempfile.mkdtemp(prefix="bench_vlm_"))
    try:
        model.save_pretrained(folder)
        del model
        reset_memory(settings)
        log(f"  saved in {time.perf_counter() - start:.1f}s; loading it 4-bit")
        return load_vlm(dataclasses.replace(cfg, model=str(folder)), training=True), params, folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def vlm(preset: str, quantise: bool, settings: Settings) -> dict:
    """The VLM preset's LoRA (QLoRA when ``quantise``) Trainer step on its full-size random model."""
    import shutil

    from medlens.train.vlm import _peft_model

    is_gemma = "paligemma" in preset
    config = paligemma_config(settings.tiny) if is_gemma else mllama_config(settings.tiny)
    cfg = decoder_config(preset)
    if not quantise:
        cfg = dataclasses.replace(
            cfg, quantization=dataclasses.replace(cfg.quantization, load_in_4bit=False, load_in_8bit=False)
        )
    cfg = bench_trainer_config(cfg, settings)
    example = (paligemma_example if is_gemma else mllama_example)(config, cfg.max_length)
    model, params, folder = made_model(config, cfg, quantise, settings)
    try:
        model = _peft_model(model, cfg)
        # the k-bit preparation switched checkpointing on: off while counting, so that its recomputed forward is
        # not counted as model FLOPs (the Trainer switches it on again, as the preset says)
        model.gradient_checkpointing_disable()
        flops = trainer_flops(model, example, settings, batch=1)
        times, compiled = run_trainer_steps(model, cfg, example, settings)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    per_step = cfg.trainer.per_device_train_batch_size * cfg.trainer.gradient_accumulation_steps
    row = summarise(times, settings, per_step, compiled)
    q = cfg.quantization
    how = (
        f"QLoRA 4-bit {q.bnb_4bit_quant_type}, {q.bnb_4bit_compute_dtype} compute"
        if quantise
        else ("LoRA, fp32 (CPU)" if settings.tiny else "LoRA, bf16 weights")
    )
    return {
        "model": f"{'PaliGemma 3B' if is_gemma else 'Llama 3.2 11B Vision'}{' (tiny)' if settings.tiny else ''}, {how}",
        "batch": f"{cfg.trainer.per_device_train_batch_size} x {cfg.trainer.gradient_accumulation_steps} accumulated",
        "params_m": params,
        "optimizer": cfg.trainer.optim
        + (", gradient checkpointing" if cfg.trainer.gradient_checkpointing else ""),
        "flops_per_image": flops,
        "tokens_per_image": cfg.max_length,
        "tokens_per_s": row["images_per_s"] * cfg.max_length,
        **row,
    }


def run_vlms(settings: Settings) -> list[dict]:
    """PaliGemma QLoRA as its preset says, unquantised LoRA where 4-bit fails (the tiny run: both, to test
    both paths), then Llama 3.2 Vision with LoRA."""
    rows = [
        guarded(
            "vlm", "paligemma_qlora: QLoRA 4-bit", lambda: vlm("paligemma_qlora", True, settings), settings
        )
    ]
    if settings.tiny or rows[0]["status"] != "ok":
        run = lambda: vlm("paligemma_qlora", False, settings)  # noqa: E731
        rows.append(guarded("vlm", "paligemma_qlora: LoRA (not quantised)", run, settings))
    rows.append(
        guarded(
            "vlm", "llama32_vision_lora: LoRA", lambda: vlm("llama32_vision_lora", False, settings), settings
        )
    )
    return rows


# ------------------------------------------------------------------------------------------ time to train

# training rows of the seed experiments' data (datasets.md: MIMIC-CXR train ~368,000 reports; knee Mendeley
# 1,650 films (expert I; duplicates across experts are one record), PAD-UFES-20 2,298, SLAKE 7,033 English QA;
# Kaggle pneumonia 5,856 + NIH sample 5,606 capped at max_samples 8,000), times each experiment's train share.
# Steps, epochs and batches are read from the presets, so the estimate follows an edited preset.
KNEE_SKIN_SLAKE = round(0.9 * (1_650 + 2_298 + 7_033))
SEED_TRAINING = [
    # (experiment, stage, preset, rows to take the rate from (the first measured), training rows, how counted)
    ("hybrid_dinov3_clip", "encoder", "hybrid_dinov3_clip", ("hybrid_dinov3_clip: medlens",), None, ""),
    (
        "siglip_base",
        "encoder",
        "siglip_base",
        ("siglip_base: medlens",),
        KNEE_SKIN_SLAKE,
        "0.9 of ~10,981 knee, skin and SLAKE rows",
    ),
    (
        "lapvqa_captioner",
        "decoder",
        "lapvqa_captioner",
        ("lapvqa_captioner",),
        368_000,
        "MIMIC-CXR train reports",
    ),
    (
        "paligemma_qlora",
        "decoder",
        "paligemma_qlora",
        ("paligemma_qlora: QLoRA 4-bit", "paligemma_qlora: LoRA (not quantised)"),
        round(0.8 * 8_000),
        "0.8 of 8,000",
    ),
    (
        "llama32_vision",
        "decoder",
        "llama32_vision_lora",
        ("llama32_vision_lora: LoRA",),
        KNEE_SKIN_SLAKE,
        "0.9 of ~10,981 rows; siglip_base's encoder comes on top",
    ),
]


def images_trained_on(stage: str, preset: str, train_rows: int | None, rows_counted: str) -> tuple[int, str]:
    """Images one training run of ``preset`` sees: its optimizer steps x its batch (with accumulation), or its
    epochs x the training rows; and how that was counted."""
    if stage == "encoder":
        cfg = encoder_preset(preset)
        batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        steps, epochs = cfg.max_steps, cfg.num_train_epochs
    else:
        trainer = decoder_config(preset).trainer
        batch = trainer.per_device_train_batch_size * trainer.gradient_accumulation_steps
        steps, epochs = trainer.max_steps, trainer.num_train_epochs
    if steps is not None and steps > 0:  # the Trainer's -1 means "epochs decide"
        return steps * batch, f"{steps:,} steps x {batch}"
    return round(
        epochs * train_rows
    ), f"{epochs:g} epoch{'' if epochs == 1 else 's'} x {train_rows:,} rows ({rows_counted})"


def time_to_train(rows: list[dict]) -> list[dict]:
    """Hours of training steps per seed experiment at the measured rate (validation, evaluation and data
    preparation not included)."""
    by_name = {r["contender"]: r for r in rows if r["status"] == "ok"}
    out = []
    for experiment, stage, preset, contenders, train_rows, rows_counted in SEED_TRAINING:
        images, counted = images_trained_on(stage, preset, train_rows, rows_counted)
        contender = next((c for c in contenders if c in by_name), contenders[0])
        row = by_name.get(contender)
        hours = images / row["images_per_s"] / 3600 if row else None
        out.append(
            {
                "experiment": experiment,
                "stage": stage,
                "images": images,
                "counted": counted,
                "rate_from": contender,
                "hours": hours,
            }
        )
    return out


# ------------------------------------------------------------------------------------------------- output


def lock_line() -> str:
    """The lock's short sha256 and the versions actually imported (the GPU machine brings its own torch)."""
    from importlib.metadata import PackageNotFoundError, version

    from medlens import environment

    lock = environment.find_lock()
    digest = environment._sha256(lock)[:12] if lock else "none"
    versions = []
    for name in ("torch", "transformers", "peft", "accelerate", "timm", "open_clip_torch", "bitsandbytes"):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} absent")
    return f"lock `requirements.lock` sha256 `{digest}…`; imported: {', '.join(versions)}"


def machine_line() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{gpu}; {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}"


def fmt(value, spec: str, missing: str = "") -> str:
    return missing if value is None else format(value, spec)


def duration(hours: float | None) -> str:
    if hours is None:
        return "not measured"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def table_row(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['contender']} | failed: {r['error'].replace('|', '/')} | | | | | | | |"
    mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else r["mfu_note"]
    return (
        f"| {r['contender']} | {r['model']} ({r['params_m']:,.1f} M) | {r['batch']} | {r['optimizer']} "
        f"| {r['images_per_s']:,.1f} | {fmt(r.get('tokens_per_s'), ',.0f')} | {fmt(r.get('peak_gib'), '.1f', 'n/a (CPU)')} "
        f"| {fmt(r.get('compile_s'), '.0f', 'not compiled')} | {r['flops_per_image'] / 1e9:,.1f} GFLOP; {mfu} |"
    )


def section(records: list[dict]) -> str:
    """The Markdown section from one or more runs' JSON records (a session may split the parts over several
    commands): command, machine and versions of each, one row per contender, the time-to-train table."""
    # a later run's row of the same contender replaces an earlier one (a part rerun after a run that stopped)
    rows = list({row["contender"]: row for record in records for row in record["rows"]}.values())
    estimates = [] if any(r["tiny"] for r in records) else time_to_train(rows)
    lines = [f"{TITLE} ({records[0]['date']})", ""]
    for r in records:
        lines.append(
            f"`benchmarks/bench_gpu.py {r['argv']}`: random weights, synthetic batches, {r['precision']}; "
            f"median of {r['steps']} steps after {r['warmup']} warm-up; compile time = first step minus the "
            f"median; MFU against {r['peak_note'].removeprefix('not computed: ')}. Machine: {r['machine']}. {r['lock']}."
        )
    lines += [
        "",
        "| contender | model | batch | optimizer | images/s | tokens/s | peak GiB | compile s | FLOPs/image; MFU |",
        "|---|---|---|---|---|---|---|---|---|",
        *(table_row(r) for r in rows),
        "",
    ]
    if estimates:
        lines += [
            "Time to train per seed experiment at the measured rate (training steps only; validation, evaluation "
            "and data preparation come on top):",
            "",
            "| experiment | stage | images trained on | rate from | time |",
            "|---|---|---|---|---|",
            *(
                f"| `{e['experiment']}` | {e['stage']} | {e['counted']} = {e['images']:,} | {e['rate_from']} | "
                f"{duration(e['hours'])} |"
                for e in estimates
            ),
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run, in this order"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per contender")
    parser.add_argument(
        "--warmup", type=int, default=3, help="steps before the timed ones (the first compiles)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        help="per-device batch of every contender (accumulation 1); default: each preset's own",
    )
    parser.add_argument(
        "--encoders",
        nargs="+",
        help="encoder presets of the encoders part (default: the full-size ones, or with --tiny the tiny ones)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, for MFU")
    parser.add_argument("--tiny", action="store_true", help="tiny presets, CPU, fp32, no compile (tests)")
    parser.add_argument("--json", type=Path, help="write the record here, rewritten after every contender")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="measure nothing: the section from these records (the GPU runs' --json files), e.g. for --write",
    )
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    return parser.parse_args(argv)


def new_record(args, settings: Settings, argv: str) -> dict:
    """The run's JSON record: what the section's header needs, and the rows as they come."""
    return {
        "title": TITLE,
        "date": dt.date.today().isoformat(),
        "argv": argv,
        "tiny": settings.tiny,
        "precision": "fp32 on CPU, not compiled" if settings.tiny else "bf16",
        "steps": settings.steps,
        "warmup": settings.warmup,
        "peak_note": settings.peak_note,
        "torch": torch.__version__,
        "machine": machine_line(),
        "lock": lock_line(),
        "rows": [],
    }


def measure(args, argv: str) -> dict:
    """Run the parts asked for; the JSON record is rewritten after every contender (a run stopped at its
    time limit keeps what it measured)."""
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (or --tiny for the CPU test mode)")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else None
    peak, note = peak_flops(name, args.peak_tflops)
    settings = Settings(args.tiny, args.steps, args.warmup, args.batch, peak, note, args.encoders)
    record = new_record(args, settings, argv)

    def keep(row: dict) -> None:
        record["rows"].append(row)
        if args.json:  # whole or not at all: the run may be stopped by its time limit at any moment
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(partial, args.json)

    settings.on_row = keep
    if args.tiny:
        torch.manual_seed(0)
    log(f"start: {record['machine']}; torch {torch.__version__}; parts {', '.join(args.only)}")
    runners = {"encoders": run_encoders, "captioner": run_captioner, "vlm": run_vlms}
    for part in dict.fromkeys(args.only):  # in the order asked for: a session puts first what it needs most
        runners[part](settings)
    return record


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        records = [json.loads(path.read_text()) for path in args.from_json]
    else:
        records = [measure(args, shown)]
    text = section(records)
    print(text)
    if args.write:
        write_section(args.write, TITLE, text)
    log("done")


if __name__ == "__main__":
    main()
