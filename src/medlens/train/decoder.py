"""``train_decoder``: train the report generator with the Hugging Face Trainer.

This module holds the captioner's parts (tokenizer, dataset, collator, length-bucketed batches) and the
dispatch to :func:`medlens.train.vlm.train_vlm` for the VLMs; the Trainer run both share (arguments,
``metrics.csv``, preemption, resume) is :mod:`medlens.train.trainer`. Resumable checkpoints live in a
sibling folder ``<out_dir>.ckpt/`` that Snakemake does not delete, so a killed or preempted job resumes
where it stopped. The finished model is written to ``out_dir`` atomically.
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

from medlens.config import DecoderConfig
from medlens.data.chat_format import IMAGE_TOKEN
from medlens.data.images import load_image
from medlens.errors import ConfigError
from medlens.train.trainer import DecoderParts, fit_decoder

__all__ = [
    "train_decoder",
    "CaptionDataset",
    "CaptionCollator",
    "CaptionTrainer",
    "LengthBucketSampler",
    "train_bpe_tokenizer",
]

logger = logging.getLogger(__name__)
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def assistant_text(record: dict[str, Any]) -> str:
    """The target text of a conversation: its last assistant turn."""
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` (the demo has no GPT-2 vocabulary offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def load_tokenizer(cfg: DecoderConfig, train_texts: list[str]):
    if cfg.tokenizer is None:
        return train_bpe_tokenizer(train_texts, cfg.vocab_size)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    except (OSError, ValueError) as e:  # ValueError: a folder without tokenizer files
        if not Path(cfg.tokenizer).exists():  # a hub id (e.g. "gpt2") out of reach: seed 004's fallback
            logger.warning(
                "tokenizer '%s' cannot be loaded (%s); training a %d-token BPE tokenizer on the "
                "training reports instead",
                cfg.tokenizer,
                e,
                cfg.vocab_size,
            )
            return train_bpe_tokenizer(train_texts, cfg.vocab_size)
        raise ConfigError(
            f"tokenizer '{cfg.tokenizer}' cannot be loaded ({e})",
            key="decoder.tokenizer",
            expected="a local tokenizer folder, a hub id reachable from here, or null to train one",
        ) from e
    if tok.pad_token is None:  # GPT-2 has no pad token; its end-of-text token serves as pad, bos and eos
        tok.pad_token = tok.eos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    return tok


class CaptionDataset(Dataset):
    """Image + target report pairs from one chat JSONL, images through the tower's transform.

    A random transform draws from a generator seeded by (seed, epoch, index), not from torch's global
    RNG: the Trainer's loader reads a batch ahead, so with the global RNG a resumed run would crop the
    batch after the checkpoint differently from an uninterrupted run. The Trainer (through accelerate's
    loader) calls :meth:`set_epoch` before each epoch, also in a resumed one.
    """

    def __init__(
        self, records: list[dict[str, Any]], transform, seed: int = 0, lengths: list[int] | None = None
    ):
        self.records, self.transform, self.seed, self.epoch = records, transform, seed, 0
        self.lengths = lengths  # target token counts, for length-grouped batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        image = load_image(rec["images"][0], grey=False)
        with torch.random.fork_rng(devices=[]):  # torchvision's random transforms read the global CPU RNG
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i)
            pixels = self.transform(image)
        return {"pixel_values": pixels, "text": assistant_text(rec)}


@dataclasses.dataclass
class CaptionCollator:
    """Tokenise ``<bos> report <eos>``, pad, and set labels of padding to -100 (ignored by the loss)."""

    tokenizer: Any
    max_length: int

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        ids = [
            [
                tok.bos_token_id,
                *tok(b["text"], add_special_tokens=False)["input_ids"][: self.max_length - 2],
                tok.eos_token_id,
            ]
            for b in batch
        ]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        return {
            "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
        }


class LengthBucketSampler(torch.utils.data.Sampler[int]):
    """Shuffled batches of similar report lengths: less padding, with steps in random order.

    The samples are shuffled, cut into pools of ``pool_batches`` batches, each pool sorted by length and
    cut into batches, and the batches shuffled. Hand-written because the Trainer's ``LengthGroupedSampler``
    leaves each pool's batches in descending length order (its longest batch first, to fail early on
    memory), so consecutive steps sweep from long reports to short ones; phantom report length tracks the
    findings, and that order cost clinical F1 (docs/benchmarks.md). Draws from torch's global RNG, as the
    Trainer's own samplers do (a resumed run restores it).
    """

    def __init__(self, lengths: list[int], batch_size: int, pool_batches: int):
        self.lengths, self.batch_size, self.pool = lengths, batch_size, batch_size * max(1, pool_batches)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        # only the very last batch can be short; it stays last so that every other batch is whole
        tail = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        shuffled = [batches[i] for i in torch.randperm(len(batches)).tolist()] + tail
        return iter([i for batch in shuffled for i in batch])


class CaptionTrainer(Trainer):
    """The Trainer, with medlens's length-bucketed batches for ``train_sampling_strategy: group_by_length``.

    The report lengths come from :class:`CaptionDataset` (the Trainer would otherwise measure them by loading
    every item, which here means decoding every image).
    """

    def __init__(self, *args, length_group_batches: int = 4, **kwargs):
        self.length_group_batches = length_group_batches
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and getattr(dataset, "lengths", None):
            return LengthBucketSampler(dataset.lengths, self.args.train_batch_size, self.length_group_batches)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # in order: the validation loss must not depend on (or draw from) the training RNG
        return torch.utils.data.SequentialSampler(eval_dataset)


def train_decoder(
    cfg: DecoderConfig,
    chat_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    encoder_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train the configured decoder on ``chat/train.jsonl`` (validation on ``val.jsonl``).

    Args:
        cfg: the resolved decoder settings.
        chat_dir: ``results/{experiment}/data/chat``.
        out_dir: ``results/{experiment}/decoder``.
        encoder_dir: ``results/{experiment}/encoder`` when the captioner starts from it.

    Returns:
        A summary (steps, final losses, best checkpoint).
    """
    if cfg.kind != "captioner":
        from medlens.train.vlm import train_vlm

        return train_vlm(cfg, chat_dir, out_dir)
    return fit_decoder(
        cfg, chat_dir, out_dir, lambda train, val: _captioner_parts(cfg, train, val, encoder_dir)
    )


_OOD_IMAGES = 4000  # a sample of the training images describes their distribution (see medlens.models.ood)


def _fit_ood(folder: Path, train: list[dict], val: list[dict], seed: int) -> None:
    """``ood.safetensors``: the training images as the captioner's own tower (``encoder_final``) embeds them,
    calibrated on the validation images; ``medlens generate`` warns about images far from them."""
    import numpy as np

    from medlens.models.captioner import ImageTower
    from medlens.models.ood import fit_ood

    tower = ImageTower(folder / "encoder_final")

    def embed(records: list[dict]) -> np.ndarray:
        feats = [
            tower.encode_images([load_image(r["images"][0], grey=False) for r in records[i : i + 64]])
            for i in range(0, len(records), 64)
        ]
        return torch.cat(feats).float().cpu().numpy()

    rng = np.random.default_rng(seed)
    sample = [
        train[i] for i in sorted(rng.choice(len(train), size=min(len(train), _OOD_IMAGES), replace=False))
    ]
    fit_ood(embed(sample), embed(val) if len(val) >= 2 else None).save(folder)


def _captioner_parts(cfg: DecoderConfig, train: list[dict], val: list[dict], encoder_dir) -> DecoderParts:
    """The captioner, its BPE tokenizer (or GPT-2's), its datasets and its length-bucketed batches."""
    from medlens.models.captioner import build_captioner, caption_transform

    tokenizer = load_tokenizer(cfg, [assistant_text(r) for r in train])
    model = build_captioner(cfg, tokenizer, encoder_dir)
    lengths = None
    if cfg.trainer.train_sampling_strategy == "group_by_length":
        lengths = [len(ids) for ids in tokenizer([assistant_text(r) for r in train])["input_ids"]]

    def write(tmp: Path, trainer: Any) -> dict[str, Any]:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        model.save_vision_encoder(tmp / "encoder_final")
        _fit_ood(tmp, train, val, cfg.trainer.seed)
        return {"image_token": IMAGE_TOKEN}

    return DecoderParts(
        model=model,
        train_dataset=CaptionDataset(
            train, caption_transform(model.config, train=True), cfg.trainer.seed, lengths
        ),
        eval_dataset=CaptionDataset(val, caption_transform(model.config, train=False)) if val else None,
        collator=CaptionCollator(tokenizer, cfg.max_length),
        write=write,
        inputs={"encoder": Path(encoder_dir) / "open_clip_model.safetensors" if encoder_dir else None},
        trainer_class=CaptionTrainer,
        trainer_kwargs={"length_group_batches": cfg.length_group_batches},
    )
