"""Typed configuration: one frozen dataclass per object of the JSON schemas in ``workflow/schemas/``.

The schemas are the reference a user reads (every key has a description); these dataclasses are
what the code uses. ``tests/unit/test_config.py`` fails on any difference in keys, types or
defaults between the two. Only the standard library and ``yaml`` are imported here, because the
Snakefile imports this module while it builds the DAG (a dry run must stay fast).
"""
# long: every stage's settings in one place, mirrored key for key by workflow/schemas (a test compares)

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from medlens.errors import ConfigError

__all__ = [
    "SyntheticConfig",
    "DatasetConfig",
    "SplitConfig",
    "ChatConfig",
    "ResourcesConfig",
    "EncoderConfig",
    "TrainerConfig",
    "LoraConfig",
    "QuantizationConfig",
    "AugmentConfig",
    "DecoderConfig",
    "ZeroShotConfig",
    "LinearProbeConfig",
    "GenerationConfig",
    "EvalConfig",
    "ReportConfig",
    "ExperimentConfig",
    "PipelineConfig",
    "from_dict",
    "dig",
    "load_yaml",
    "load_experiment",
    "check_trackers",
    "resolve_preset",
    "check_unread_keys",
    "validate_against_schema",
    "naming_the_layer",
    "PRESETS_DIR",
    "FINDINGS",
]

PACKAGE_DIR = Path(__file__).resolve().parent
PRESETS_DIR = PACKAGE_DIR / "models" / "presets"

# The CheXpert-14 observation names, in the labeler's output order: the one chest X-ray vocabulary.
FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


# --------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the ``synthetic_cxr`` phantom source (see ``medlens.data.sources.synthetic_cxr``)."""

    n_images: int = 2000  # number of radiographs rendered
    n_patients: int = (
        800  # patients, at most n_images; each has one or more studies with the same base anatomy
    )
    image_size: int = 320  # rendered side length in pixels, in [48, 4096] (the store size by default)
    seed: int = 0  # everything (anatomy, findings, phrasing, noise) follows from this seed
    ap_fraction: float = 0.3  # share of AP views; the rest are PA
    prevalence: dict[str, float] = field(
        default_factory=dict
    )  # finding -> share of studies; unset keep defaults
    co_occurrence: dict[str, float] = field(
        default_factory=dict
    )  # "Child|Parent" -> lift of P(child | parent)
    pneumonia_fraction: float = 0.5  # share of consolidations whose impression says pneumonia
    cardiomegaly_ctr: float = (
        0.5  # cardiothoracic ratio above which the heart is called enlarged, in [0.42, 0.62]
    )


# the dataset adapters (medlens.data.sources registers them; a test compares): named here so that an unknown one
# is refused when the config is read, without importing the adapters (PIL, numpy) while the DAG is built
AdapterName = Literal[
    "chest_xray_pneumonia",
    "chexpert",
    "iu_xray",
    "iu_xray_r2gen",
    "knee_kl_mendeley",
    "knee_kl_oai",
    "manifest",
    "mimic_cxr",
    "nih_chest_xray",
    "nih_chest_xray_sample",
    "pad_ufes_20",
    "slake",
    "synthetic_cxr",
]


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset definition under ``datasets:`` in ``config/config.yaml``."""

    source: Literal["synthetic_cxr", "manifest", "kaggle", "path"]  # how the data arrives
    adapter: AdapterName | None = None  # format of a kaggle/path source; null for the others
    slug: str | None = None  # Kaggle dataset slug; the adapter's default when unset
    path: str | None = None  # folder holding the data (path, manifest sources)
    manifest: str = "manifest.csv"  # CSV inside `path` for the manifest source
    # manifest source: read image paths that lead outside `path` (../, absolute paths, links out of it)
    allow_outside_paths: bool = False
    store_size: int = 320  # longest side of stored images, in pixels
    min_text_chars: int = 5  # shorter texts are rejected
    max_text_chars: int = 4000  # longer texts are rejected
    uncertain_policy: Literal["zeros", "ones", "ignore"] = "zeros"  # CheXpert-style -1 labels
    languages: list[str] = field(default_factory=lambda: ["en"])  # SLAKE q_lang values kept
    frontal_only: bool = False  # keep frontal views only (sources that record the view)
    limit: int | None = None  # read at most this many records (quick trials)
    seed: int = 0  # phrasing of text synthesised from labels
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # synthetic_cxr only


# --------------------------------------------------------------------------------------------
# experiment stages


@dataclass(frozen=True)
class LeakageConfig:
    """The split's audit of one image or report in two splits or datasets (medlens.data.leakage)."""

    enabled: bool = True  # hash the kept rows' images (each read once) and audit them
    near_duplicate_distance: int = (
        16  # bits of the 256-bit dHash within which two images are one; -1: exact only
    )
    # duplicate images across splits: keep (counted), drop later copies, or group (one split for all copies,
    # merged with their patients). The default stays keep: on the demo group merges 29 phantom patients into
    # 12 groups and moves 686 of its 3,000 rows to another split, so its documented numbers would move.
    images: Literal["keep", "drop", "group"] = "keep"
    texts: Literal["keep", "drop", "group"] = "keep"  # reports repeated word for word: the same choice

    def __post_init__(self):
        # drop and group need the hashes the audit computes; off, they would silently do nothing
        acting = [k for k in ("images", "texts") if getattr(self, k) != "keep"]
        if not self.enabled and acting:
            raise ConfigError(
                f"{acting[0]}: {getattr(self, acting[0])} needs the audit, which is disabled",
                key="split.leakage.enabled",
                expected="enabled: true, or images and texts: keep",
            )


@dataclass(frozen=True)
class SplitConfig:
    """How ``split`` merges the experiment's prepared sources into ``pairs.parquet``."""

    train: float = 0.8  # share of patients in train
    val: float = 0.1  # share of patients in val
    test: float = 0.1  # share of patients in test
    stratify: bool = True  # stratify patient groups by their label set
    official: bool = False  # keep the source's own split where it has one
    min_samples_per_class: int = 0  # labels with fewer rows are dropped (and reported)
    max_samples: int | None = None  # stratified subsample to at most this many rows
    seed: int = 0  # shuffling of patient groups
    leakage: LeakageConfig = field(
        default_factory=LeakageConfig
    )  # duplicate images and reports across splits

    def __post_init__(self):
        # the split job checks this too, but only after the data was prepared, and without naming the file
        shares = (self.train, self.val, self.test)
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(
                f"shares train {self.train}, val {self.val}, test {self.test} do not sum to 1 (they sum to {sum(shares):g})",
                key="split",
                expected="shares of patients summing to 1, e.g. 0.8/0.1/0.1 or 0.95/0.05/0",
            )


@dataclass(frozen=True)
class ChatConfig:
    """How ``convert_to_chat_format`` writes conversations."""

    prompt: str = "Describe this medical image:"  # user turn for report/caption rows
    system: str | None = None  # optional system turn

    def __post_init__(self):
        # imported here: the data contract imports pyarrow, which building the DAG need not pay for otherwise
        from medlens.data.schema import IMAGE_TOKEN

        for name in ("prompt", "system"):
            if IMAGE_TOKEN in (getattr(self, name) or ""):
                raise ConfigError(
                    f"the {name} holds the image mark {IMAGE_TOKEN!r}, which convert_to_chat_format places itself",
                    key=f"chat.{name}",
                    expected=f"text without {IMAGE_TOKEN!r} (each conversation has exactly one, before the prompt)",
                )


@dataclass(frozen=True)
class ResourcesConfig:
    """What one job of a stage asks the scheduler for (portable; site settings live in the profile)."""

    gpus: int = 0  # GPUs per job; N > 1 starts N processes
    mem_mb: int = 8000  # host memory
    runtime: int = 60  # minutes; more than the 10 by which SLURM's SIGTERM comes before the limit
    cpus: int = 2  # CPU cores (per job; data-loader workers use them)


# trackers both accelerate (the encoder's loop) and the Hugging Face Trainer (the decoders) report to
Tracker = Literal["none", "tensorboard", "wandb", "mlflow", "comet_ml"]
# the modules either library imports for a tracker (any one will do); the first is the package to install
TRACKER_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
}
# the distributions that provide them, looked up in a lock (a container image's packages)
TRACKER_DISTRIBUTIONS = {
    "tensorboard": ("tensorboard", "tensorboardx"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "comet_ml": ("comet-ml",),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Contrastive image-text encoder: architecture, recipe and training loop (``train_encoder``)."""

    preset: str = "tiny"  # YAML preset under medlens/models/presets/encoder
    model: str = "medlens-tiny"  # open_clip model-config name
    pretrained: str | None = None  # open_clip pretrained tag, hf-hub:..., local-dir:... or file
    pretrained_image: str | None = None  # vision-tower weights through timm: timm tag, hf-hub:... or file
    pretrained_text_model: str | None = (
        None  # open_clip model whose text tower gives pretrained_text, e.g. ViT-B-32-quickgelu
    )
    pretrained_text: str | None = None  # its weights: open_clip tag, hf-hub:..., local-dir:... or file
    reset_logit_scale: bool = False  # after loading weights, restart logit scale/bias at their init values
    tokenizer: str | None = (
        None  # Hugging Face tokenizer (hub id or folder) of HF-tokenizer text towers; None: the model's
    )
    image_mean: list[float] | None = (
        None  # input normalisation; None: the vision tower's own (timm), else CLIP's
    )
    image_std: list[float] | None = (
        None  # input normalisation; None: the vision tower's own (timm), else CLIP's
    )
    image_size: int = 64  # model input side in pixels
    # evaluation resize: "shortest" side to image_size then centre crop, or "squash" both sides to the square
    # (SigLIP's published preprocessing); saved in preprocess_cfg, so open_clip's local-dir loading repeats it
    resize_mode: Literal["shortest", "squash"] = "shortest"
    context_length: int = 77  # text tokens; longer contexts extend the positional embedding
    loss: Literal["clip", "siglip"] = "clip"  # InfoNCE (ClipLoss) or sigmoid (SigLipLoss)
    init_temperature: float = 0.07  # logit_scale starts at log(1 / init_temperature)
    init_logit_bias: float | None = None  # SigLIP bias (-10); None for the clip loss
    optim: Literal["adamw_torch", "sgd"] = "adamw_torch"  # SGD (CheXzero) or AdamW (the Trainer's names)
    learning_rate: float = 1e-3  # peak learning rate
    weight_decay: float = 0.1  # not applied to norms, biases, logit scale/bias
    momentum: float = 0.9  # SGD only
    adam_beta1: float = 0.9  # AdamW only
    adam_beta2: float = 0.98  # AdamW only
    adam_epsilon: float = 1e-6  # AdamW only
    per_device_train_batch_size: int = 64  # per process, per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step; all are negatives of each other
    max_steps: int | None = 300  # optimizer steps; when None, `num_train_epochs` decides
    num_train_epochs: float | None = None  # passes over train when max_steps is None
    warmup_steps: int | None = 30  # linear warmup; when None, `warmup_ratio` decides
    warmup_ratio: float = 0.0  # share of steps used for warmup when warmup_steps is None
    lr_scheduler_type: Literal["cosine", "constant"] = "cosine"  # after warmup
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on capable GPUs, else fp32
    # torch.compile the model (Module.compile: weights, checkpoints and the saved folder are unchanged); auto: on a
    # CUDA GPU, where it doubled the hybrid preset's step on an H200, never on CPU (a minute of compiling)
    compile: Literal["auto", "always", "never"] = "auto"
    max_grad_norm: float | None = 1.0  # max gradient norm
    lock_image: bool = False  # freeze the image tower (LiT)
    lock_text: bool = False  # freeze the text tower
    lock_image_unlocked_groups: int = 0  # with lock_image: the last N layer groups stay trainable
    lock_text_unlocked_layers: int = 0  # with lock_text: the last N layers stay trainable
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower steps
    random_crop_scale: float = 0.8  # RandomResizedCrop lower scale bound; 1.0 disables
    hflip: bool = False  # horizontal flip; swaps left/right in the paired text when enabled
    text_sampling: Literal["full", "sentence", "sentences"] = (
        "full"  # training text: report, one sentence, subset
    )
    logging_steps: int = 20  # steps between progress lines
    eval_steps: int = 100  # steps between validation (loss, zero-shot AUC)
    save_steps: int = 100  # steps between resumable checkpoints
    metric_for_best_model: Literal["val/loss", "val/zero_shot_auc"] = (
        "val/loss"  # selects the best checkpoint
    )
    dataloader_num_workers: int = 2  # data-loader processes
    seed: int = 0  # initialisation, shuffling and augmentation
    # experiment trackers that receive the training curves too (results/<experiment>/tensorboard for TensorBoard)
    report_to: list[Tracker] = field(default_factory=lambda: ["none"])
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # what one train_encoder job asks for

    def __post_init__(self):
        if self.max_steps is None and self.num_train_epochs is None:
            raise ConfigError(
                "neither max_steps nor num_train_epochs is set: the run has no length",
                key="encoder.max_steps",
                expected="a number of optimizer steps, or max_steps: null with num_train_epochs",
            )
        _check_warmup(self.warmup_steps, self.max_steps, "encoder")


def _check_warmup(warmup_steps: int | None, max_steps: int | None, section: str) -> None:
    """A warmup longer than the run never reaches the peak learning rate (and never decays from it)."""
    if warmup_steps is not None and max_steps is not None and warmup_steps > max_steps:
        raise ConfigError(
            f"warmup_steps {warmup_steps} is more than max_steps {max_steps}: the run would end still warming up",
            key=f"{section}.warmup_steps",
            expected=f"at most max_steps ({max_steps}) warmup steps (a preset sets its own warmup_steps: set both)",
        )


@dataclass(frozen=True)
class TrainerConfig:
    """Hugging Face Trainer settings; every key is the ``transformers.TrainingArguments`` field of that name."""

    learning_rate: float = 5e-4  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    per_device_train_batch_size: int = 32  # per process
    per_device_eval_batch_size: int = 32  # per process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_steps: int = -1  # optimizer steps; -1 trains for num_train_epochs
    num_train_epochs: float = (
        3.0  # passes over train when max_steps is -1 (a positive max_steps overrides it)
    )
    warmup_steps: int = 0  # linear warmup steps
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = 1.0  # gradient clipping
    optim: str = "adamw_torch"  # TrainingArguments optimizer name, e.g. adamw_torch_fused
    logging_steps: int = 20  # steps between log lines and metrics.csv rows
    eval_steps: int = 100  # steps between validation-loss evaluations
    save_steps: int = 100  # steps between resumable checkpoints
    save_total_limit: int = 3  # checkpoints kept
    load_best_model_at_end: bool = True  # keep the checkpoint with the lowest validation loss
    dataloader_num_workers: int = 2  # data-loader processes
    gradient_checkpointing: bool = False  # trade compute for activation memory
    # random batches, or batches of similar report lengths (less padding: about half the tokens of a random batch
    # of phantom reports), still shuffled
    train_sampling_strategy: Literal["random", "group_by_length"] = "random"
    seed: int = 0  # initialisation and shuffling
    # experiment trackers that receive the training curves too (results/<experiment>/tensorboard for TensorBoard)
    report_to: list[Tracker] = field(default_factory=lambda: ["none"])

    def __post_init__(self):
        if self.max_steps > 0:  # -1: num_train_epochs decides, and the warmup is not compared
            _check_warmup(self.warmup_steps, self.max_steps, "decoder.trainer")
        # the Trainer only checks this when training starts; a config error should stop the dry run
        if self.load_best_model_at_end and self.save_steps % self.eval_steps:
            raise ConfigError(
                f"save_steps {self.save_steps} is not a multiple of eval_steps {self.eval_steps}",
                key="decoder.trainer.save_steps",
                expected="a multiple of eval_steps when load_best_model_at_end is true",
            )


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters of a VLM; every key is the ``peft.LoraConfig`` field of that name (task type: causal LM)."""

    r: int = 8  # rank of the update matrices
    lora_alpha: int = 16  # the update is scaled by lora_alpha / r
    lora_dropout: float = 0.05  # dropout on the adapter input
    # module name suffixes, or one regular expression over full module names
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: Literal["none", "all", "lora_only"] = "none"  # which biases train
    modules_to_save: list[str] | None = None  # modules trained in full and saved with the adapter


@dataclass(frozen=True)
class QuantizationConfig:
    """Loading a VLM quantised (QLoRA); every key is the ``transformers.BitsAndBytesConfig`` field of that name."""

    load_in_4bit: bool = False  # 4-bit weights (QLoRA)
    load_in_8bit: bool = False  # 8-bit weights (LLM.int8)
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"  # NF4 suits normally distributed weights
    bnb_4bit_use_double_quant: bool = False  # quantise the quantisation constants too
    bnb_4bit_compute_dtype: Literal["float32", "float16", "bfloat16"] = (
        "float32"  # float32 on CPU whatever is set
    )
    llm_int8_skip_modules: list[str] | None = None  # modules kept unquantised (lm_head always is)

    def __post_init__(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError(
                "load_in_4bit and load_in_8bit are both set",
                key="decoder.quantization",
                expected="at most one of them",
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Light image augmentation of VLM training images (validation images are never augmented)."""

    hflip: float = 0.0  # probability of a horizontal flip; left/right are swapped in the target text
    rotate_degrees: float = 0.0  # random rotation within +-this many degrees
    brightness: float = 0.0  # random brightness factor within 1 +- this


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings: written into a decoder folder as ``generation_config.json`` (``decoder.generation``),
    which ``evaluate_decoder`` and ``medlens generate`` read; ``evaluate.generation`` may replace them."""

    max_new_tokens: int = 96  # longest generated report, in tokens
    num_beams: int = 1  # 1 is greedy
    repetition_penalty: float = 1.0  # >1 discourages repeating tokens
    no_repeat_ngram_size: int = 0  # forbid repeating n-grams of this size (0: off)

    def generate_kwargs(self) -> dict[str, Any]:
        """These settings as ``GenerationMixin.generate`` keyword arguments."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


@dataclass(frozen=True)
class DecoderConfig:
    """Report generator: the LAPVQA-style captioner or a Hugging Face VLM (``train_decoder``)."""

    preset: str = "tiny_captioner"  # YAML preset under medlens/models/presets/decoder
    kind: Literal["captioner", "vlm"] = (
        "captioner"  # medlens captioner or a Hugging Face image-text-to-text model
    )
    model: str | None = None  # VLM: hub id or local path
    vision_model: str = (
        "medlens-tiny"  # captioner: open_clip model config of the tower when not taken from the encoder
    )
    init_from_encoder: bool = True  # captioner: vision tower weights from train_encoder's output
    freeze_vision: bool = False  # captioner: keep the vision tower frozen
    image_size: int | None = None  # captioner input side; None: the tower's own size
    hidden_size: int = 256  # captioner decoder width
    num_layers: int = 2  # captioner decoder layers
    num_heads: int = 4  # captioner decoder heads
    dropout: float = 0.1  # captioner: GPT-2's residual, embedding and attention dropout
    # captioner with trainer.train_sampling_strategy group_by_length: batches per length-sorted pool
    length_group_batches: int = 4
    # captioner: repeat reports with rare findings (repeat-factor sampling, LVIS) when a finding is in fewer
    # than this share of the training reports; None: each report once per epoch
    repeat_factor_threshold: float | None = None
    tokenizer: str | None = None  # "gpt2" or a path; None trains a BPE tokenizer on the train reports
    vocab_size: int = 2000  # size of the trained BPE tokenizer
    max_length: int = (
        128  # captioner: tokens per target text; vlm: whole sequence (image, prompt and target tokens)
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on capable GPUs, else fp32
    # torch.compile the model (the Trainer's torch_compile); auto: the captioner on a CUDA GPU; a VLM only when
    # asked, since quantised (bitsandbytes) layers break the graph
    compile: Literal["auto", "always", "never"] = "auto"
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    early_stopping_threshold: float = 0.0  # minimum validation-loss improvement that counts
    finetune: Literal["lora", "full"] = "lora"  # vlm: train LoRA adapters or every weight
    lora: LoraConfig = field(default_factory=LoraConfig)  # vlm with finetune lora: peft.LoraConfig
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)  # vlm: BitsAndBytesConfig
    merge_adapters: bool = False  # vlm: also write the base model with the adapters merged in
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # vlm: training image augmentation
    # the folder's generation_config.json: what evaluate_decoder, medlens generate and a stock generate() use
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # Hugging Face Trainer settings
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # what one train_decoder job asks for

    def __post_init__(self):
        # conflicting options fail when the config is read, not after the model has loaded
        if self.kind == "captioner" and self.hidden_size % self.num_heads:
            divisors = [n for n in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % n == 0]
            raise ConfigError(
                f"num_heads {self.num_heads} does not divide hidden_size {self.hidden_size}",
                key="decoder.num_heads",
                expected=f"a divisor of hidden_size (GPT-2 splits the width evenly across heads): "
                f"{', '.join(map(str, divisors[-6:]))}, ...",
            )
        if self.kind != "vlm":
            return
        if self.repeat_factor_threshold is not None:
            raise ConfigError(
                "repeat_factor_threshold applies to the captioner only",
                key="decoder.repeat_factor_threshold",
                expected="null with kind 'vlm'",
            )
        if self.model is None:
            raise ConfigError(
                "kind 'vlm' needs a model",
                key="decoder.model",
                expected="a Hugging Face image-text-to-text model id or local folder",
            )
        quantized = self.quantization.load_in_4bit or self.quantization.load_in_8bit
        if quantized and self.finetune == "full":
            raise ConfigError(
                "quantised weights cannot be fine-tuned in full",
                key="decoder.finetune",
                expected="'lora' with quantization, or no quantization with 'full'",
            )
        if self.merge_adapters and self.finetune != "lora":
            raise ConfigError(
                "merge_adapters is set but there are no adapters",
                key="decoder.merge_adapters",
                expected="false, or finetune: lora",
            )


@dataclass(frozen=True)
class ZeroShotConfig:
    """Zero-shot classification with positive/negative prompt pairs (CheXzero)."""

    labels: list[str] = field(default_factory=lambda: list(FINDINGS))  # evaluated when present in data
    templates: str = "chexzero"  # prompt set under resources/prompts/<name>.yaml


@dataclass(frozen=True)
class LinearProbeConfig:
    """Logistic-regression probe on frozen image features."""

    enabled: bool = True  # run the probe
    c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # chosen on val


@dataclass(frozen=True)
class EvalConfig:
    """What ``evaluate_encoder`` and ``evaluate_decoder`` compute."""

    split: Literal["val", "test"] = "test"  # split the metrics are reported on
    external_datasets: list[str] = field(default_factory=list)  # datasets evaluated, never trained on
    # datasets never trained on, split as `split` says, on which the image tower is linear-probed (fit on
    # their train, C on their val, scored on their test): seed 004's NIH-14 and CheXpert probes
    probe_datasets: list[str] = field(default_factory=list)
    recall_ks: list[int] = field(
        default_factory=lambda: [1, 5, 10]
    )  # K of image->text and text->image recall@K
    bootstrap_samples: int = 1000  # resamples for 95% confidence intervals
    seed: int = 0  # bootstrap resampling
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)  # CheXzero-style prompts
    linear_probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)  # frozen-feature probe
    # None: decode with the decoder folder's generation_config.json; set: with these (trying decoding, no retraining)
    generation: GenerationConfig | None = None
    labeler: str = "rules"  # "rules" (medlens's CheXpert-style labeler) or a local CheXbert checkpoint
    # the field's report-generation metrics on chest reports (score_reports; weights from
    # prefetch_metric_weights); "green", a 7B model best on a GPU, only when asked for
    report_metrics: list[
        Literal["bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore", "green"]
    ] = field(
        default_factory=lambda: ["bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore"]
    )
    max_samples: int | None = None  # evaluate at most this many rows per split (quick trials)


@dataclass(frozen=True)
class ReportConfig:
    """What the HTML report shows."""

    title: str | None = None  # page title; the experiment name when unset
    examples: int = 6  # generated-vs-reference examples shown
    seed_claims: str | None = None  # seed system whose published figures are shown beside ours


def _probed_towers(stages: list[str], decoder: DecoderConfig) -> list[str]:
    """The image towers an experiment trains that a linear probe can read: its encoder's, and a
    captioner's (``decoder/encoder_final/``); a VLM's is inside the Hugging Face model, not probed."""
    return [s for s in stages if s == "encoder" or decoder.kind == "captioner"]


@dataclass(frozen=True)
class ExperimentConfig:
    """One ``config/experiments/<name>.yaml``."""

    datasets: list[str]  # names defined under `datasets:` in config/config.yaml
    # what the experiment's system trains: an encoder-only system has no decoder, a VLM fine-tune no encoder
    stages: list[Literal["encoder", "decoder"]] = field(default_factory=lambda: ["encoder", "decoder"])
    description: str = ""  # one line shown in the report
    seed: int = 0  # recorded in the report; stages take their own seeds
    split: SplitConfig = field(default_factory=SplitConfig)  # merging and splitting (split rule)
    chat: ChatConfig = field(default_factory=ChatConfig)  # conversation layout (convert_to_chat_format)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # train_encoder; keys override the preset
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # train_decoder; keys override the preset
    evaluate: EvalConfig = field(default_factory=EvalConfig)  # evaluate_encoder and evaluate_decoder
    report: ReportConfig = field(default_factory=ReportConfig)  # report

    def _check_probe_datasets(self) -> None:
        probes = self.evaluate.probe_datasets
        if trained := [d for d in probes if d in self.datasets]:
            raise ConfigError(
                f"'{trained[0]}' is also a training dataset; its probe split would not be held out",
                key=f"evaluate.probe_datasets[{probes.index(trained[0])}]",
                expected=f"datasets not in datasets ({', '.join(self.datasets)})",
            )
        if probes and not _probed_towers(self.stages, self.decoder):
            raise ConfigError(
                "probe datasets probe an image tower, and this experiment trains none a probe can read "
                "(a VLM's is inside the model)",
                key="evaluate.probe_datasets",
                expected="an empty list, or an encoder or captioner stage",
            )
        if probes and not self.evaluate.linear_probe.enabled:
            raise ConfigError(
                "probe datasets are set but linear probes are off",
                key="evaluate.probe_datasets",
                expected="an empty list, or evaluate.linear_probe.enabled: true",
            )

    def __post_init__(self):
        if not self.stages or len(set(self.stages)) != len(self.stages):
            raise ConfigError(
                f"{self.stages} is not a list of stages",
                key="stages",
                expected="'encoder', 'decoder' or both, each once",
            )
        for key, names, least in (
            ("datasets", self.datasets, 1),
            ("evaluate.external_datasets", self.evaluate.external_datasets, 0),
            ("evaluate.probe_datasets", self.evaluate.probe_datasets, 0),
        ):
            if len(names) < least or len(set(names)) != len(names):
                raise ConfigError(
                    f"{names} is not a list of distinct dataset names",
                    key=key,
                    expected=f"{'at least one name' if least else 'names'}, each once",
                )
        if trained := [d for d in self.evaluate.external_datasets if d in self.datasets]:
            i = self.evaluate.external_datasets.index(trained[0])
            raise ConfigError(
                f"'{trained[0]}' is also a training dataset, so its rows would be reported as external",
                key=f"evaluate.external_datasets[{i}]",
                expected=f"datasets not in datasets ({', '.join(self.datasets)}): evaluated, never trained on",
            )
        self._check_probe_datasets()
        if self.evaluate.external_datasets and "encoder" not in self.stages:
            raise ConfigError(
                "external datasets are evaluated by evaluate_encoder, and this experiment has no encoder",
                key="evaluate.external_datasets",
                expected="an empty list, or 'encoder' in stages",
            )
        dec = self.decoder
        if (
            "decoder" in self.stages
            and "encoder" not in self.stages
            and dec.kind == "captioner"
            and dec.init_from_encoder
        ):
            raise ConfigError(
                "the captioner starts from the trained encoder, but this experiment trains none",
                key="decoder.init_from_encoder",
                expected="false when stages has no 'encoder'",
            )


@dataclass(frozen=True)
class PipelineConfig:
    """``config/config.yaml``: which experiments to run and the dataset definitions."""

    run: list[str]  # experiments (file stems in experiments_dir) built by results/report.html
    datasets: dict[str, DatasetConfig]  # dataset definitions, by name
    experiments_dir: str = "config/experiments"  # where experiment YAML files live
    # the Apptainer image jobs run in under `snakemake --sdm apptainer` (built from env/medlens.def)
    container: str = "medlens.sif"


# --------------------------------------------------------------------------------------------
# building dataclasses from nested dicts


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert nested dicts to dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key, source)
            except ConfigError as e:
                errors.append(e)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{value!r} has the wrong type", file=source, key=key, expected=_type_name(tp))
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"unknown {value!r}", file=source, key=key, expected=f"one of {_type_name(tp)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                f"{value!r} is not a mapping", file=source, key=key, expected="a mapping of settings"
            )
        return from_dict(tp, value, source=source, prefix=key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{value!r} is not a list", file=source, key=key, expected=_type_name(tp))
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{value!r} is not a mapping", file=source, key=key, expected=_type_name(tp))
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, key, source): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan/.inf pass every schema bound (NaN compares false with each) and would train on garbage
        raise ConfigError(
            f"{value!r} is not a finite number", file=source, key=key, expected="a finite number"
        )
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{value!r} has the wrong type", file=source, key=key, expected=_type_name(tp))


T = typing.TypeVar("T")


# The encoder's training settings carry the Hugging Face Trainer's names, as the decoder's do (one vocabulary
# across stages); an experiment written with an old name is told the new one.
RENAMED = {
    "encoder": {
        "lr": "learning_rate",
        "beta1": "adam_beta1",
        "beta2": "adam_beta2",
        "eps": "adam_epsilon",
        "batch_size": "per_device_train_batch_size",
        "accum_steps": "gradient_accumulation_steps",
        "steps": "max_steps",
        "epochs": "num_train_epochs",
        "schedule": "lr_scheduler_type",
        "grad_clip": "max_grad_norm",
        "log_every": "logging_steps",
        "eval_every": "eval_steps",
        "checkpoint_every": "save_steps",
        "best_metric": "metric_for_best_model",
        "num_workers": "dataloader_num_workers",
        "optimizer": "optim",
        "grad_checkpointing": "gradient_checkpointing",
    }
}


def _raise_renamed(section: str, key: str, source: str) -> None:
    new = RENAMED.get(section, {}).get(key)
    if new is not None:
        raise ConfigError(
            f"'{key}' is now called '{new}' (the Hugging Face Trainer's name)",
            file=source,
            key=f"{section}.{key}",
            expected=new,
        )


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "<dict>", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types.

    Args:
        cls: a config dataclass.
        data: the parsed YAML mapping.
        source: the file it came from, used in error messages.
        prefix: dotted key path of ``data`` inside the file.

    Returns:
        An instance of ``cls``; keys absent from ``data`` take the dataclass defaults.

    Raises:
        ConfigError: naming the file and the dotted key path of the first bad value.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    path = (prefix + ".") if prefix else ""
    unknown = sorted(set(data) - names)
    if unknown:
        _raise_renamed(prefix, unknown[0], source)
        raise ConfigError(
            f"unknown key '{unknown[0]}'",
            file=source,
            key=path + unknown[0],
            expected=f"one of {', '.join(sorted(names))}",
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], path + f.name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                "missing required key", file=source, key=path + f.name, expected=_type_name(hints[f.name])
            )
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a __post_init__ check knows its key, not the file
        if e.file is not None:
            raise
        raise ConfigError(e.problem, file=source, key=e.key, expected=e.expected) from e


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain dicts/lists (what Snakemake stores as a rule's params)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# --------------------------------------------------------------------------------------------
# files


class _Repeated(yaml.YAMLError):
    """A key given twice in one mapping (raised before anything is constructed)."""

    def __init__(self, key: str, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(f"{key}: repeated on lines {first} and {second}")


def _check_repeated(loader: yaml.SafeLoader, node: yaml.Node, path: str, seen: set[int]) -> None:
    """Refuse a key given twice in one mapping anywhere under ``node`` (PyYAML keeps the last silently).

    Merge keys (``<<: *base``) are not repeats: keys written beside them override the merged ones on purpose.
    """
    if id(node) in seen:  # an alias of a node already checked (and no endless walk on recursive anchors)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _check_repeated(loader, value_node, path, seen)
                continue
            key = (
                loader.construct_object(key_node, deep=True)
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            dotted = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise _Repeated(dotted, lines[key], line)
            if key is not None:
                lines[key] = line
            _check_repeated(loader, value_node, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_repeated(loader, item, f"{path}[{i}]", seen)


def _safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` (the same SafeLoader: plain data only, no Python objects) that refuses repeated keys."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_repeated(loader, node, "", set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _decode(raw: bytes, path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is a ConfigError naming its position (and line)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        hint = (
            " (the file starts with a UTF-16 byte-order mark)"
            if raw[:2] in (b"\xff\xfe", b"\xfe\xff")
            else ""
        )
        raise ConfigError(
            f"byte 0x{raw[e.start]:02x} at byte position {e.start} (line {line}) is not UTF-8{hint}",
            file=str(path),
            expected="a UTF-8 text file (save it as UTF-8)",
        ) from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping.

    Stricter than ``yaml.safe_load`` where it would silently guess: the text must be UTF-8, a key may not be
    repeated in one mapping (YAML would keep the last), and a config is data, never a Snakemake YTE template.
    """
    path = Path(path)
    try:
        text = _decode(path.read_bytes(), path)
    except FileNotFoundError as e:
        raise ConfigError("file not found", file=str(path)) from e
    try:
        data = _safe_load_unique(text) or {}
    except _Repeated as e:
        raise ConfigError(
            f"repeated key (lines {e.first} and {e.second}); YAML would silently keep only the last",
            file=str(path),
            key=e.key,
            expected="each key once in its mapping (merge the two)",
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({e})", file=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError("the top level is not a mapping", file=str(path), expected="key: value pairs")
    if "__use_yte__" in data:
        raise ConfigError(
            "medlens configs are data, not templates: YTE would run the Python code this file holds",
            file=str(path),
            key="__use_yte__",
            expected="plain YAML without __use_yte__ (write the values out)",
        )
    return data


def validate_against_schema(data: dict[str, Any], schema_path: str | Path, *, source: str) -> None:
    """Validate ``data`` with a JSON schema (YAML file) and raise a ConfigError naming the key path.

    jsonschema is imported here, not at module level: it is light, but only needed when validating.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    key = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        key = ".".join(filter(None, [key, extra[0] if extra else ""]))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        if extra:
            _raise_renamed(".".join(str(p) for p in err.absolute_path), extra[0], source)
        raise ConfigError(
            f"unknown key '{extra[0] if extra else '?'}'",
            file=source,
            key=key or None,
            expected=f"one of {allowed}",
        )
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        raise ConfigError("missing required key", file=source, key=".".join(filter(None, [key, missing])))
    # the schema keywords whose message does not say what would be accepted
    expected = {
        "minItems": f"at least {err.validator_value} item{'s' if err.validator_value != 1 else ''}",
        "maxItems": f"at most {err.validator_value} items",
        "uniqueItems": "each item once",
        "minLength": "a non-empty string",
    }.get(str(err.validator))
    raise ConfigError(err.message, file=source, key=key or None, expected=expected)


def _sets(data: Any, parts: list[str]) -> bool:
    """Whether the mapping ``data`` sets the value at the key path ``parts``, or a list or value holding it."""
    node = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return i > 0  # a list or value set whole holds the rest of the key
        if part not in node:
            return False
        node = node[part]
    return True


def _layer_setting(key: str, layers: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The name of the last layer that sets the dotted ``key`` (``a.b[0]``, ``a.b.0``), or None."""
    parts = [re.sub(r"\[\d+\]$", "", part) for part in key.split(".")]
    return next((name for name, data in reversed(layers) if _sets(data, parts)), None)


@contextlib.contextmanager
def naming_the_layer(layers: list[tuple[str, dict[str, Any]]]):
    """Re-raise a ConfigError about the merged config naming the layer that set its key.

    Args:
        layers: ``(name, data)`` in the order they override each other: the config files, then ``--config``
            (Snakemake merges them into one dict, so an error would otherwise name the last file whatever
            set the bad key).
    """
    try:
        yield
    except ConfigError as e:
        names = {name for name, _ in layers}
        source = _layer_setting(e.key, layers) if e.key and e.file in names else None
        if source is None or source == e.file:
            raise
        raise ConfigError(e.problem, file=source, key=e.key, expected=e.expected) from e


def resolve_preset(
    kind: Literal["encoder", "decoder"], section: dict[str, Any], *, source: str
) -> dict[str, Any]:
    """Merge an experiment's ``encoder:``/``decoder:`` section over its preset YAML.

    The preset gives the recipe (e.g. seed 000's numbers); keys in the experiment override it.
    """
    preset = section.get("preset", EncoderConfig.preset if kind == "encoder" else DecoderConfig.preset)
    preset_dir = PRESETS_DIR / kind
    path = preset_dir / f"{preset}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in preset_dir.glob("*.yaml"))
        raise ConfigError(
            f"unknown preset '{preset}'",
            file=source,
            key=f"{kind}.preset",
            expected=f"one of {', '.join(available)}",
        )
    recipe = load_yaml(path)
    _check_known_keys(EncoderConfig if kind == "encoder" else DecoderConfig, recipe, str(path), kind)
    merged = _deep_merge(recipe, section)
    merged["preset"] = preset
    return merged


def _check_known_keys(cls: type, data: dict[str, Any], source: str, prefix: str) -> None:
    """Unknown keys of a preset, named in the preset's file (the merged config would blame the experiment)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            _raise_renamed(prefix, key, source)
            raise ConfigError(
                f"unknown key '{key}'",
                file=source,
                key=f"{prefix}.{key}",
                expected=f"one of {', '.join(sorted(names))}",
            )
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _check_known_keys(hints[key], value, source, f"{prefix}.{key}")


# --------------------------------------------------------------------------------------------
# keys that are set but that nothing reads: the user meant something that would silently not happen

# decoder keys read by one kind only (medlens.models.captioner / medlens.train.vlm)
_CAPTIONER_ONLY = (
    "vision_model",
    "init_from_encoder",
    "freeze_vision",
    "image_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "dropout",
    "length_group_batches",
    "repeat_factor_threshold",
    "tokenizer",
    "vocab_size",
)
_VLM_ONLY = ("model", "finetune", "lora", "quantization", "merge_adapters", "augment")


# sections read by one stage only: the stage's own, the chat layout, and its evaluation settings
_STAGE_KEYS = (
    ("encoder", "encoder"),
    ("decoder", "decoder"),
    ("chat", "decoder"),
    ("evaluate.zero_shot", "encoder"),
    ("evaluate.recall_ks", "encoder"),
    ("evaluate.generation", "decoder"),
    ("evaluate.report_metrics", "decoder"),
)


def _unread(cfg: ExperimentConfig) -> list[tuple[str, str, str]]:
    """``(key, deciding key, expected)`` for each key the experiment's stages never read, whatever its value."""
    enc, dec = cfg.encoder, cfg.decoder
    rules: list[tuple[str, str, str]] = []
    if "encoder" in cfg.stages:
        adam = ("adam_beta1", "adam_beta2", "adam_epsilon")
        for key in adam if enc.optim == "sgd" else ("momentum",):
            rules.append((f"encoder.{key}", "encoder.optim", f"no {key}: optim {enc.optim} does not use it"))
        if enc.loss == "clip":
            rules.append(
                ("encoder.init_logit_bias", "encoder.loss", "no bias: the clip loss has none (siglip)")
            )
        if enc.max_steps is not None:
            rules.append(
                (
                    "encoder.num_train_epochs",
                    "encoder.max_steps",
                    "max_steps: null to train by epochs instead",
                )
            )
        if enc.warmup_steps is not None:
            rules.append(
                ("encoder.warmup_ratio", "encoder.warmup_steps", "warmup_steps: null to use the ratio")
            )
        for key, lock in (
            ("lock_image_unlocked_groups", "lock_image"),
            ("lock_text_unlocked_layers", "lock_text"),
        ):
            if not getattr(enc, lock):
                rules.append(
                    (f"encoder.{key}", f"encoder.{lock}", f"{lock}: true (it applies to a locked tower)")
                )
    if "decoder" in cfg.stages:
        for key in _VLM_ONLY if dec.kind == "captioner" else _CAPTIONER_ONLY:
            rules.append((f"decoder.{key}", "decoder.kind", f"no {key}: kind {dec.kind} does not use it"))
        if dec.trainer.max_steps > 0:  # the Trainer's rule: max_steps > 0 overrides num_train_epochs
            rules.append(
                (
                    "decoder.trainer.num_train_epochs",
                    "decoder.trainer.max_steps",
                    "max_steps: -1 to train by epochs (a positive max_steps overrides num_train_epochs)",
                )
            )
    return rules


def _layer(
    key: str, user: dict[str, Any], presets: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[int, str | None]:
    """Who set ``key`` last: 2 the experiment file, 1 its preset (with the preset's path), 0 nobody.

    A key set to null counts as unset: null is every optional key's "not used".
    """
    if dig(user, key) is not None:
        return 2, None
    section, _, rest = key.partition(".")
    if section in presets and rest and dig(presets[section][1], rest) is not None:
        return 1, presets[section][0]
    return 0, None


def check_unread_keys(cfg: ExperimentConfig, user: dict[str, Any], *, source: str) -> None:
    """Refuse keys set in an experiment file or its presets that the experiment never reads.

    A key is refused when it is set at the same level as, or above, the setting that makes it unread: a
    preset's key overridden into disuse by the experiment (``max_steps`` set over a preset that trains by
    epochs) is the user's choice and passes.

    Args:
        cfg: the resolved experiment.
        user: the experiment file's own mapping, before its presets were merged in.
        source: the experiment file, for messages.

    Raises:
        ConfigError: naming the key, the file that sets it and what to do instead.
    """
    for key, stage in _STAGE_KEYS:
        if stage not in cfg.stages and dig(user, key):
            section = dig(user, key)
            raise ConfigError(
                f"set, but this experiment has no {stage} stage (stages: {', '.join(cfg.stages)})",
                file=source,
                key=f"{key}.{next(iter(section))}" if isinstance(section, dict) else key,
                expected=f"no {key}, or '{stage}' in stages",
            )
    presets = {}
    for stage in ("encoder", "decoder"):
        preset = PRESETS_DIR / stage / f"{getattr(cfg, stage).preset}.yaml"
        presets[stage] = (str(preset), load_yaml(preset))
    for key, decider, expected in _unread(cfg):
        level, preset = _layer(key, user, presets)
        if level and level >= _layer(decider, user, presets)[0]:
            value = dig(to_dict(cfg), decider)
            raise ConfigError(
                f"set, but never read: {decider} is {value!r}",
                file=source if level == 2 else preset,
                key=key,
                expected=expected,
            )


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings merge key by key (``trainer.max_steps`` keeps the rest)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def dig(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]...`` for ``path="a.b"``; None when any step is missing."""
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def load_experiment(
    path: str | Path, *, schema_path: str | Path | None = None, image_lock: str | Path | None = None
) -> ExperimentConfig:
    """Read, validate and resolve one experiment YAML into an :class:`ExperimentConfig`.

    ``image_lock``: the lock of the container image the jobs run in, if they run in one (``check_trackers``).

    Raises:
        ConfigError: a bad key or value, or a key set (here or in a preset) that this experiment never reads.
    """
    path = Path(path)
    data = load_yaml(path)
    if schema_path is not None:
        validate_against_schema(data, schema_path, source=str(path))
    user = data
    data = dict(data)
    for kind in ("encoder", "decoder"):
        data[kind] = resolve_preset(kind, data.get(kind, {}), source=str(path))
    cfg = from_dict(ExperimentConfig, data, source=str(path))
    check_unread_keys(cfg, user, source=str(path))
    check_trackers(cfg, source=str(path), image_lock=image_lock)
    if schema_path is not None:  # the presets' values keep the bounds too
        validate_against_schema(
            json.loads(json.dumps(to_dict(cfg), default=str)),
            schema_path,
            source=f"{path} (with its presets)",
        )
    return cfg


def check_trackers(cfg: ExperimentConfig, *, source: str, image_lock: str | Path | None = None) -> None:
    """Every tracker in a trained stage's ``report_to`` must be installed where the jobs run.

    Without its package accelerate drops the encoder's curves with a warning, and the decoder's Trainer stops
    after its model has loaded (minutes into a GPU job).

    Args:
        cfg: the experiment.
        source: its file, for the messages.
        image_lock: the lock of the container image the jobs run in (``--sdm apptainer``): the trackers are
            looked up there, since the submit host's packages say nothing about the image's.

    Raises:
        ConfigError: naming the key and the package to install.
    """
    import importlib.util

    from medlens.environment import read_lock

    locked = read_lock(image_lock, all_environments=True) if image_lock is not None else None
    keys = {
        "encoder": ("encoder.report_to", cfg.encoder.report_to),
        "decoder": ("decoder.trainer.report_to", cfg.decoder.trainer.report_to),
    }
    for stage in cfg.stages:
        key, trackers = keys[stage]
        for i, tracker in enumerate(trackers):
            modules = TRACKER_MODULES.get(tracker, ())
            if locked is not None:
                if modules and not any(d in locked for d in TRACKER_DISTRIBUTIONS[tracker]):
                    raise ConfigError(
                        f"the tracker '{tracker}' is not in {image_lock}, the lock the jobs' container image "
                        "is built from (--sdm apptainer)",
                        file=source,
                        key=f"{key}[{i}]",
                        expected=f"a tracker the image holds ({', '.join(t for t, ds in TRACKER_DISTRIBUTIONS.items() if any(d in locked for d in ds))}), "
                        f"or {TRACKER_DISTRIBUTIONS[tracker][0]} added to pyproject.toml, `make lock` and the "
                        "image rebuilt (env/medlens.def)",
                    )
            elif modules and not any(importlib.util.find_spec(m) for m in modules):
                raise ConfigError(
                    f"the tracker '{tracker}' is not installed",
                    file=source,
                    key=f"{key}[{i}]",
                    expected=f"its package in the environment Snakemake and its jobs run in (pip install "
                    f"{modules[0]}), or another tracker ({', '.join(typing.get_args(Tracker))})",
                )


def load_pipeline(data: dict[str, Any], *, source: str = "config/config.yaml") -> PipelineConfig:
    """Build the :class:`PipelineConfig` from the Snakemake ``config`` dict."""
    return from_dict(PipelineConfig, data, source=source)
