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
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from medlens import layout
from medlens.config import DecoderConfig
from medlens.data.chat_format import IMAGE_TOKEN
from medlens.data.images import load_image
from medlens.errors import ConfigError
from medlens.models.ood import fit_training_images
from medlens.train.trainer import DecoderParts, fit_decoder, save_weights

__all__ = [
    "train_decoder",
    "CaptionDataset",
    "CaptionCollator",
    "CaptionTrainer",
    "LengthBucketSampler",
    "repeat_factors",
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
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer, trust_remote_code=False)
    except (OSError, ValueError) as e:  # ValueError: a folder without tokenizer files, or with code to run
        # a hub id (e.g. "gpt2") out of reach: seed 004's fallback; a tokenizer that needs its own code is an error
        if isinstance(e, OSError) and not Path(cfg.tokenizer).exists():
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


def repeat_factors(label_lists: list[list[str]], threshold: float) -> list[float]:
    """How often each report is drawn per epoch under repeat-factor sampling.

    Repeat-factor sampling (Gupta et al. 2019, LVIS, arXiv:1908.03195; detectron2's
    ``RepeatFactorTrainingSampler``): a finding ``c`` present in a share ``f_c`` of the training reports
    gets ``r_c = max(1, sqrt(threshold / f_c))``, and a report the largest ``r_c`` of its findings (1 when
    it has none). Findings rarer than ``threshold`` are seen more often; common ones, and "No Finding",
    keep their frequency. Hand-written: the Trainer has no label-aware sampler.
    """
    n = len(label_lists)
    counts = Counter(c for labels in label_lists for c in set(labels))
    factor = {c: max(1.0, math.sqrt(threshold * n / k)) for c, k in counts.items()}
    return [max((factor[c] for c in labels), default=1.0) for labels in label_lists]


class LengthBucketSampler(torch.utils.data.Sampler[int]):
    """Shuffled batches of similar report lengths: less padding, with steps in random order.

    The samples are shuffled, cut into pools of ``pool_batches`` batches, each pool sorted by length and
    cut into batches, and the batches shuffled. Hand-written because the Trainer's ``LengthGroupedSampler``
    leaves each pool's batches in descending length order (its longest batch first, to fail early on
    memory), so consecutive steps sweep from long reports to short ones; phantom report length tracks the
    findings, and that order cost clinical F1 (docs/benchmarks.md). Draws from torch's global RNG, as the
    Trainer's own samplers do (a resumed run restores it).

    With ``repeat`` (:func:`repeat_factors`), an epoch holds ``floor(r)`` copies of each report plus a
    weighted draw, without replacement, of ``round(sum(r - floor(r)))`` more, weighted by the fractional
    parts: every epoch has the same length, which the Trainer's step counting assumes. Without
    ``lengths`` the batches are not sorted (repeat factors alone).
    """

    def __init__(
        self,
        lengths: list[int] | None,
        batch_size: int,
        pool_batches: int,
        repeat: list[float] | None = None,
    ):
        self.lengths, self.batch_size = lengths, batch_size
        self.pool = batch_size * max(1, pool_batches) if lengths is not None else batch_size
        self.repeat = torch.tensor(repeat, dtype=torch.float64) if repeat is not None else None
        if self.repeat is not None:
            self.whole = self.repeat.floor().long()
            self.fraction = self.repeat - self.whole
            self.n_extra = round(float(self.fraction.sum()))

    def __len__(self) -> int:
        if self.repeat is None:
            return len(self.lengths)
        return int(self.whole.sum()) + self.n_extra

    def _epoch(self) -> list[int]:
        """This epoch's samples, repeated by their factors, in random order."""
        if self.repeat is None:
            return torch.randperm(len(self.lengths)).tolist()
        samples = torch.repeat_interleave(torch.arange(len(self.repeat)), self.whole)
        if self.n_extra:
            extra = torch.multinomial(self.fraction, self.n_extra, replacement=False)
            samples = torch.cat([samples, extra])
        return samples[torch.randperm(len(samples))].tolist()

    def __iter__(self):
        order = self._epoch()
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            if self.lengths is not None:
                pool = sorted(pool, key=self.lengths.__getitem__)
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

    def __init__(self, *args, length_group_batches: int = 4, repeat: list[float] | None = None, **kwargs):
        self.length_group_batches, self.repeat = length_group_batches, repeat
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        grouped = self.args.train_sampling_strategy == "group_by_length" and lengths
        if grouped or self.repeat is not None:
            return LengthBucketSampler(
                lengths if grouped else None,
                self.args.train_batch_size,
                self.length_group_batches,
                repeat=self.repeat,
            )
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


def _captioner_parts(cfg: DecoderConfig, train: list[dict], val: list[dict], encoder_dir) -> DecoderParts:
    """The captioner, its BPE tokenizer (or GPT-2's), its datasets and its length-bucketed batches."""
    from medlens.models.captioner import build_captioner, caption_transform

    tokenizer = load_tokenizer(cfg, [assistant_text(r) for r in train])
    model = build_captioner(cfg, tokenizer, encoder_dir)
    lengths = repeat = None
    if cfg.repeat_factor_threshold is not None:
        repeat = repeat_factors([r.get("labels") or [] for r in train], cfg.repeat_factor_threshold)
        logger.info(
            "repeat-factor sampling (threshold %g): %d reports repeated, an epoch of %.0f draws for %d reports",
            cfg.repeat_factor_threshold,
            sum(r > 1 for r in repeat),
            sum(repeat),
            len(repeat),
        )
    if cfg.trainer.train_sampling_strategy == "group_by_length":
        lengths = [len(ids) for ids in tokenizer([assistant_text(r) for r in train])["input_ids"]]

    def write(tmp: Path, trainer: Any) -> dict[str, Any]:
        from medlens.models.captioner import clip_image_processor
        from medlens.models.generation import save_generation_config

        save_weights(trainer, tmp)
        tokenizer.save_pretrained(str(tmp))
        save_generation_config(
            tmp,
            cfg.generation,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            decoder_start_token_id=tokenizer.bos_token_id,  # the captioner's generation starts from BOS
        )
        processor = clip_image_processor(model.config.preprocess_cfg)
        if processor is not None:
            processor.save_pretrained(str(tmp))
        model.save_vision_encoder(tmp / layout.TOWER)
        from medlens.models.captioner import ImageTower

        # the training images as the captioner's own tower (encoder_final) embeds them
        tower = ImageTower(tmp / layout.TOWER)
        fit_training_images(tmp, train, val, cfg.trainer.seed, tower.encode_images, _OOD_IMAGES)
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
        trainer_kwargs={"length_group_batches": cfg.length_group_batches, "repeat": repeat},
    )
