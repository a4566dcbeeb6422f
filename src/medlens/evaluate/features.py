"""Rows of a stored split without their images, and the image features of such rows, read from the parquet
a batch at a time (evaluation never holds a split's images)."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from medlens.data.images import load_image

__all__ = ["read_rows", "encode_stored", "encode_rows", "encode_splits", "label_matrix"]

logger = logging.getLogger(__name__)

_COLUMNS = ["id", "dataset", "text", "labels", "meta", "modality"]  # everything but the image
_BATCH = 128


def read_rows(path: str | os.PathLike, split: str | None, max_samples: int | None, seed: int) -> list[dict]:
    """The rows of ``split`` (every row when None) without their images, at most ``max_samples`` of them."""
    filters = [("split", "=", split)] if split else None
    table = pq.read_table(path, columns=_COLUMNS, filters=filters)
    if max_samples is None or table.num_rows <= max_samples:
        return table.to_pylist()
    # the rows a sample of the whole list would pick, made Python objects only once picked
    pick = random.Random(seed).sample(range(table.num_rows), max_samples)
    return sorted(table.take(pick).to_pylist(), key=lambda r: r["id"])


def encode_stored(encoder, path: str | os.PathLike, rows: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    """Image features of each group of ``rows``, their images read from the parquet a batch at a time.

    One pass over the file whatever the number of groups, and no more than a batch of images per group in
    memory: a split of MIMIC's size never sits in memory. Each group is encoded in its own batches of
    ``_BATCH`` in file order (the batches a whole-split read would make).
    """
    where: dict[str, list[tuple[str, int]]] = {}
    for group, members in rows.items():
        for j, r in enumerate(members):
            where.setdefault(r["id"], []).append((group, j))
    pending: dict[str, list[tuple[int, bytes]]] = {g: [] for g in rows}
    done: dict[str, list[tuple[list[int], np.ndarray]]] = {g: [] for g in rows}

    def flush(group: str) -> None:
        batch, pending[group] = pending[group], []
        if batch:
            feats = encode_rows(encoder, [{"image": image} for _, image in batch], batch_size=len(batch))
            done[group].append(([j for j, _ in batch], feats))

    # without pre_buffer (pyarrow's default), which keeps every row group read in memory until the file closes
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(
        batch_size=1024, columns=["id", "image"]
    ):
        images = batch.column("image")
        for k, id_ in enumerate(batch.column("id").to_pylist()):
            for group, j in where.get(id_, ()):
                pending[group].append((j, images[k].as_py()))
                if len(pending[group]) == _BATCH:
                    flush(group)
    out = {}
    for group, members in rows.items():
        flush(group)
        out[group] = np.zeros((len(members), 0), dtype=np.float32)
        if done[group]:
            order = np.concatenate([np.asarray(js) for js, _ in done[group]])
            feats = np.concatenate([f for _, f in done[group]])
            out[group] = np.empty_like(feats)
            out[group][order] = feats
    return out


def encode_rows(encoder, rows: Sequence[dict], batch_size: int = 128) -> np.ndarray:
    """L2-normalised image features [N, D] of rows holding encoded image bytes."""
    feats = []
    for start in range(0, len(rows), batch_size):
        images = [load_image(r["image"], grey=False) for r in rows[start : start + batch_size]]
        feats.append(encoder.encode_images(images).float().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)


def encode_splits(
    encoder, pairs_path: str | os.PathLike, split: str, max_samples: int | None, seed: int
) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
    """Rows and image features of train, val and the evaluated ``split``."""
    rows = {s: read_rows(pairs_path, s, max_samples, seed) for s in ("train", "val", split)}
    feats = encode_stored(encoder, pairs_path, rows)
    logger.info("encoded images: %s", {s: len(r) for s, r in rows.items()})
    return rows, feats


def label_matrix(rows: Sequence[dict], labels: Sequence[str], *, native: bool = False) -> np.ndarray:
    """[N, L] 0/1 targets; ``native`` reads the source's own label names (meta.native_labels, e.g. NIH-14)."""
    sets = [set(json.loads(r["meta"]).get("native_labels", []) if native else r["labels"]) for r in rows]
    return np.array([[lab in s for lab in labels] for s in sets], dtype=np.int64).reshape(
        len(rows), len(labels)
    )
