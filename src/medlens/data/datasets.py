"""Torch datasets over ``pairs.parquet`` for contrastive training, with reproducible batches.

Batches are a pure function of ``(seed, step)``: :class:`StepBatchSampler` draws epoch ``e``'s
order from ``seed + e`` and gives every sample its own augmentation seed, which
:class:`PairsDataset` uses for that sample's random crop and flip. So a run resumed at step ``k``
sees exactly the batches and crops an uninterrupted run sees from step ``k`` on, whatever the
number of loader workers (a plain ``DataLoader(shuffle=True)`` cannot promise that).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

from medlens.data.images import load_image
from medlens.data.laterality import mirror_laterality
from medlens.data.mapped import open_mapped
from medlens.errors import DataError

__all__ = ["PairsDataset", "StepBatchSampler", "split_sentences", "sample_text"]

logger = logging.getLogger(__name__)

_SECTION = re.compile(r"\b[A-Z][A-Z ]{2,}:\s*")  # FINDINGS:, IMPRESSION:, COMPARISON: ...
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of a report, section headers removed."""
    return [s.strip() for s in _SENTENCE_END.split(_SECTION.sub(" ", text)) if s.strip()]


def sample_text(text: str, mode: str, generator: torch.Generator | None = None) -> str:
    """The training text of one sample under ``encoder.text_sampling``.

    ``full`` keeps the report; ``sentence`` takes one random sentence (ConVIRT, Zhang et al. 2020,
    arXiv:2010.00747), so the text tower learns sentence-level embeddings like the zero-shot prompts;
    ``sentences`` keeps each sentence with probability 1/2 (at least one), in order.
    """
    if mode == "full":
        return text
    sentences = split_sentences(text)
    if len(sentences) <= 1:
        return text
    if mode == "sentence":
        return sentences[int(torch.randint(len(sentences), (), generator=generator))]
    keep = torch.rand(len(sentences), generator=generator) < 0.5
    if not keep.any():
        keep[int(torch.randint(len(sentences), (), generator=generator))] = True
    return " ".join(s for s, k in zip(sentences, keep.tolist(), strict=True) if k)


class PairsDataset(Dataset):
    """Image-text pairs of one split; items are ``(pixels [3, H, W], text)``.

    Args:
        source: an Arrow table with ``image`` (encoded bytes) and ``text`` columns, or the path of one split
            mapped by :func:`medlens.data.mapped.map_split` (read on demand; loader workers, forked or
            spawned, map the file again instead of receiving a copy of the table).
        transform: the encoder's image transform (``medlens.models.encoders.image_transform``).
        hflip: flip half the images horizontally with their text mirrored (:func:`mirror_laterality`);
            a sample whose text cannot be mirrored exactly is never flipped.
        text_sampling: ``full``, ``sentence`` or ``sentences`` (see :func:`sample_text`); training only.
    """

    def __init__(
        self,
        source: pa.Table | str | os.PathLike,
        transform,
        *,
        hflip: bool = False,
        text_sampling: str = "full",
    ):
        self.source = source if isinstance(source, pa.Table) else Path(source)
        self._columns()
        if not len(self):
            raise DataError(
                "no rows in this split",
                file=None if isinstance(source, pa.Table) else str(source),
                column="split",
                expected="at least one image-text pair",
            )
        self.transform, self.hflip, self.text_sampling = transform, hflip, text_sampling

    def _columns(self) -> None:
        table = self.source if isinstance(self.source, pa.Table) else open_mapped(self.source)
        # Arrow columns, not Python lists: a list of a million reports is the process's own memory
        self.images, self.texts = table["image"], table["text"]

    def __getstate__(self) -> dict:
        if isinstance(self.source, pa.Table):
            return self.__dict__
        return {k: v for k, v in self.__dict__.items() if k not in ("images", "texts")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "images" not in state:
            self._columns()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, str]:
        index, aug_seed = item if isinstance(item, tuple) else (item, None)
        data = self.images[index].as_py()
        # a grey X-ray stays single-channel until the transform has cropped and resized it (open_clip's
        # transform converts to RGB last): the same pixels for a third of the resampling work
        grey = Image.open(io.BytesIO(data)).mode == "L"
        image: Image.Image = load_image(data, grey=grey)
        text = self.texts[index].as_py()
        if aug_seed is None:
            return self.transform(image), text
        # torchvision draws crops from torch's global RNG: seed it per sample, without leaking out
        with torch.random.fork_rng(devices=[]):
            # torch.manual_seed also visits every accelerator: 100x dearer
            torch.default_generator.manual_seed(aug_seed)
            # the draw happens for every sample, so a text that cannot be mirrored leaves the others' alone
            if self.hflip and torch.rand(()) < 0.5 and (mirrored := mirror_laterality(text)) is not None:
                image, text = ImageOps.mirror(image), mirrored
            return self.transform(image), sample_text(text, self.text_sampling)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches of ``(index, augmentation seed)`` for optimizer steps ``start_step`` onwards.

    Each global micro-batch holds ``batch_size * world_size`` samples; rank ``r`` gets its slice, so
    the union over ranks is the same whatever the number of processes. Epochs drop the last partial
    batch (as open_clip does), so every batch has the same number of contrastive negatives.

    Args:
        n: dataset size.
        batch_size: samples per process per micro-batch.
        steps: total optimizer steps.
        accum_steps: micro-batches per optimizer step.
        seed: order and augmentation seed.
        start_step: first optimizer step to yield (resume).
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        steps: int,
        *,
        accum_steps: int = 1,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.global_batch = batch_size * world_size
        if n < self.global_batch:
            raise DataError(
                f"only {n} training pairs for a global batch of {self.global_batch}",
                expected="at least one full batch: lower encoder.per_device_train_batch_size or add data",
            )
        self.n, self.batch_size, self.steps, self.accum = n, batch_size, steps, accum_steps
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.per_epoch = n // self.global_batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum

    def _order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, None
        for micro in range(self.start_step * self.accum, self.steps * self.accum):
            e, b = divmod(micro, self.per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            lo = b * self.global_batch + self.rank * self.batch_size
            idx = order[lo : lo + self.batch_size].tolist()
            # one seed per (epoch, sample): augmentations are reproducible and differ between epochs
            yield [(i, (self.seed * 1_000_003 + e) * 1_000_003 + i) for i in idx]
