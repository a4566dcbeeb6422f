"""``train_vlm``: fine-tune a Hugging Face vision-language model on chat JSONL (seeds 001/002 and 003).

LoRA or QLoRA through PEFT (``LoraConfig``, bitsandbytes 4-bit with ``prepare_model_for_kbit_training``)
or full fine-tuning, with the Hugging Face Trainer owning the loop, precision, accumulation, gradient
checkpointing, checkpoints, resume and early stopping. medlens supplies the dataset, the collator
(prompt laid out by :class:`medlens.models.vlm.PromptFormat`; labels -100 on prompt, image and padding
tokens; only the answer is ever cut to fit ``max_length``) and the ``metrics.csv`` callback.

TRL's SFTTrainer is not used: medlens needs its own collator for the label mask anyway, and the
plain Trainer keeps one code path for the captioner and the VLMs.

Output folder: the PEFT adapter (or, when merged or fully fine-tuned, ``save_pretrained`` weights;
the adapter then sits in ``adapter/``), the processor, ``metrics.csv`` and ``medlens.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from medlens.config import AugmentConfig, DecoderConfig
from medlens.data.images import load_image
from medlens.data.laterality import mirror_laterality
from medlens.errors import ConfigError
from medlens.models.ood import fit_training_images
from medlens.models.vlm import PromptFormat, embed_images, load_processor, load_vlm, pad_rows
from medlens.train.trainer import DecoderParts, fit_decoder, save_weights

__all__ = ["train_vlm", "VLMDataset", "VLMCollator", "split_conversation", "augment_image"]

logger = logging.getLogger(__name__)


def split_conversation(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """(messages before the last assistant turn, that turn's text): the prompt and the target."""
    last = max(i for i, m in enumerate(record["messages"]) if m["role"] == "assistant")
    return record["messages"][:last], record["messages"][last]["content"]


def augment_image(image, text: str, cfg: AugmentConfig):
    """The seed's light augmentations (seed 003), drawn from torch's RNG (the Trainer seeds it).

    A flip is laterality-aware: every side the text names is mirrored with the image, and a text that
    cannot be mirrored exactly is not flipped (seed 003 mirrored freely, which puts a left effusion on the
    right; :func:`~medlens.data.laterality.mirror_laterality`).
    """
    from PIL import ImageEnhance, ImageOps

    if cfg.hflip and torch.rand(()) < cfg.hflip and (mirrored := mirror_laterality(text)) is not None:
        image, text = ImageOps.mirror(image), mirrored
    if cfg.rotate_degrees:
        angle = float(torch.empty(()).uniform_(-cfg.rotate_degrees, cfg.rotate_degrees))
        image = image.rotate(angle, resample=2)  # bilinear; the corners fill black like a collimated film
    if cfg.brightness:
        image = ImageEnhance.Brightness(image).enhance(
            float(torch.empty(()).uniform_(1 - cfg.brightness, 1 + cfg.brightness))
        )
    return image, text


class VLMDataset(Dataset):
    """Conversations of one chat JSONL as ``{"images", "messages", "target"}`` (images decoded, RGB).

    Args:
        records: rows from :func:`medlens.data.chat_format.read_chat`.
        augment: augmentation of training images; None for evaluation.
    """

    def __init__(self, records: list[dict[str, Any]], augment: AugmentConfig | None = None):
        self.records, self.augment = records, augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        messages, target = split_conversation(rec)
        images = [load_image(p, grey=False) for p in rec["images"]]
        if self.augment is not None and len(images) == 1:
            images[0], target = augment_image(images[0], target, self.augment)
        return {"images": images, "messages": messages, "target": target}


@dataclasses.dataclass
class VLMCollator:
    """Prompt tokens (from the processor) + answer tokens, labels only on the answer, padded on the right.

    Args:
        fmt: the model's prompt layout.
        max_length: longest sequence, image and prompt tokens included; only answers are cut.
    """

    fmt: PromptFormat
    max_length: int

    def example(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One conversation as model inputs with ``labels`` (batch of one)."""
        row = self.fmt.prompt_inputs(item["images"], item["messages"])
        n_prompt = row["input_ids"].shape[1]
        room = self.max_length - n_prompt
        if room <= 0:
            n_image = (
                int((row["input_ids"] == self.fmt.image_token_id).sum()) if self.fmt.image_token_id else 0
            )
            raise ConfigError(
                f"the prompt alone is {n_prompt} tokens ({n_image} of them image tokens)",
                key="decoder.max_length",
                expected=f"more than {n_prompt}, so the answer fits",
            )
        target = torch.tensor([self.fmt.target_ids(item["target"])[:room]])  # [1, T]
        n = target.shape[1]
        for key, value in row.items():
            if key == "input_ids":
                row[key] = torch.cat([value, target], dim=1)
            elif key == "attention_mask":
                row[key] = torch.cat([value, torch.ones_like(target)], dim=1)
            elif key == "token_type_ids":
                row[key] = torch.cat(
                    [value, torch.full_like(target, self.fmt.suffix_token_type(value))], dim=1
                )
            elif key in ("cross_attention_mask", "mm_token_type_ids"):
                # answer tokens see what the last prompt token sees, as GenerationMixin extends these
                row[key] = torch.cat([value, value[:, -1:].expand(-1, n, *value.shape[2:])], dim=1)
        labels = torch.cat([torch.full((1, n_prompt), -100), target], dim=1)
        if self.fmt.image_token_id is not None:
            labels[row["input_ids"] == self.fmt.image_token_id] = -100
        row["labels"] = labels
        return row

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return pad_rows([self.example(item) for item in batch], self.fmt.tokenizer.pad_token_id, side="right")


def _log_lengths(collator: VLMCollator, dataset: VLMDataset, records: list[dict[str, Any]]) -> None:
    """Log the prompt length and how many training answers ``max_length`` cuts (tokenizer only, no images)."""
    probe = collator.example(dataset[0])
    n_prompt = int((probe["labels"] == -100).sum())
    room = collator.max_length - n_prompt
    lengths = [len(collator.fmt.target_ids(split_conversation(r)[1])) for r in records]
    cut = sum(n > room for n in lengths)
    logger.info(
        "prompt %d tokens (image tokens included); answers: median %d, max %d tokens; %d fit in "
        "max_length %d",
        n_prompt,
        sorted(lengths)[len(lengths) // 2],
        max(lengths),
        room,
        collator.max_length,
    )
    if cut:
        logger.warning(
            "%d of %d training answers are longer than the %d tokens max_length leaves and will be cut",
            cut,
            len(lengths),
            room,
        )


def _peft_model(model, cfg: DecoderConfig):
    """Wrap ``model`` in LoRA adapters (after preparing a quantised model for k-bit training)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization.load_in_4bit or cfg.quantization.load_in_8bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.trainer.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    lora = LoraConfig(**dataclasses.asdict(cfg.lora), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _write_output(
    tmp: Path, trainer: Trainer, cfg: DecoderConfig, fmt: PromptFormat, train: list[dict], val: list[dict]
) -> dict[str, Any]:
    """Adapter (or full weights), merged weights when asked, processor, decoding settings and the statistics of
    the training images; into the temporary output folder."""
    from medlens.models.generation import save_generation_config

    if cfg.finetune == "full":
        save_weights(trainer, tmp)
        weights = "full"
    elif cfg.merge_adapters:
        from peft import PeftModel

        save_weights(trainer, tmp / "adapter")
        # merge into unquantised base weights: merging into 4-bit weights would round the update away
        base = load_vlm(cfg, training=False, quantize=False)
        merged = PeftModel.from_pretrained(base, str(tmp / "adapter")).merge_and_unload()
        merged.save_pretrained(str(tmp))
        weights = "merged"
    else:
        save_weights(trainer, tmp)
        weights = "adapter"
    fmt.processor.save_pretrained(str(tmp))
    tok = fmt.tokenizer
    # over the base model's own file (saved with full or merged weights): its defaults, medlens's decoding, and
    # the end-of-turn token as a stop token, as VLMGenerator stops
    save_generation_config(
        tmp,
        cfg.generation,
        base=getattr(trainer.model, "generation_config", None),
        eos_token_id=[i for i in dict.fromkeys([*fmt.stop_token_ids, tok.eos_token_id]) if i is not None],
        pad_token_id=tok.pad_token_id,
    )
    model = trainer.model.eval()
    fit_training_images(
        tmp, train, val, cfg.trainer.seed, lambda images: embed_images(model, fmt, images), _OOD_IMAGES
    )
    return {"weights": weights}


# a forward pass of the whole VLM per image: fewer images than the captioner's 4000 (Ledoit-Wolf's shrinkage keeps
# the covariance usable with fewer images than dimensions)
_OOD_IMAGES = 1000


def train_vlm(cfg: DecoderConfig, chat_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``chat/train.jsonl`` (validation loss on ``val.jsonl``).

    Args:
        cfg: the resolved decoder settings (``kind: vlm``).
        chat_dir: ``results/{experiment}/data/chat``.
        out_dir: ``results/{experiment}/decoder``.

    Returns:
        A summary (steps, losses, best checkpoint, trainable parameters).

    Raises:
        ConfigError: a model that cannot be loaded, or settings the Trainer rejects.
        DataError: an empty training split.
    """
    return fit_decoder(cfg, chat_dir, out_dir, lambda train, val: _vlm_parts(cfg, train, val))


def _vlm_parts(cfg: DecoderConfig, train: list[dict[str, Any]], val: list[dict[str, Any]]) -> DecoderParts:
    """The VLM (LoRA/QLoRA or full), its processor's prompt layout, datasets and collator."""
    processor = load_processor(cfg.model)
    fmt = PromptFormat(processor)
    model = load_vlm(cfg, training=True)
    if cfg.finetune == "lora":
        model = _peft_model(model, cfg)
    logger.info(
        "fine-tuning %s (%s); prompt layout: %s",
        cfg.model,
        cfg.finetune,
        "chat template" if fmt.chat else "PaliGemma prefix/suffix",
    )
    collator = VLMCollator(fmt, cfg.max_length)
    _log_lengths(collator, VLMDataset(train), train)
    first_system = next((m["content"] for m in train[0]["messages"] if m["role"] == "system"), None)
    return DecoderParts(
        model=model,
        train_dataset=VLMDataset(train, cfg.augment),
        eval_dataset=VLMDataset(val) if val else None,
        collator=collator,
        write=lambda tmp, trainer: _write_output(tmp, trainer, cfg, fmt, train, val),
        info={
            "base_model": cfg.model,
            "system": first_system,
            "prompt_layout": "chat" if fmt.chat else "prefix",
        },
    )
