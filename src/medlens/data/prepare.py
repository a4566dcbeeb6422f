"""``prepare_datasets``: turn one source's records into ``prepared/{dataset}.parquet`` + ``rejected.csv``.

Records are decoded, converted and shrunk in a process pool (images are the cost; the records
themselves are cheap to produce), written in row groups so memory does not grow with the dataset,
and validated: every record is either kept or written to ``rejected.csv`` with its reason, and
``read = kept + rejected`` is checked before the outputs are renamed into place.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medlens.config import DatasetConfig, to_dict
from medlens.data.images import encode_image, prepare_image
from medlens.data.schema import PREPARED_SCHEMA, REJECTED_COLUMNS, SPLITS, TEXT_SOURCES
from medlens.data.sources import RawRecord, data_root, get_adapter
from medlens.errors import DataError, MedlensError
from medlens.io import atomic_path

__all__ = ["prepare_dataset", "PrepareSummary", "read_prepared_summary"]

logger = logging.getLogger(__name__)

ROW_GROUP = 256
SUMMARY_KEY = b"medlens.prepare"


@dataclass
class PrepareSummary:
    dataset: str
    read: int
    kept: int
    rejected: int
    reasons: dict[str, int]

    def as_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "read": self.read,
            "kept": self.kept,
            "rejected": self.rejected,
            "reasons": dict(sorted(self.reasons.items())),
        }


# C0/C1 control characters that whitespace normalisation leaves (NUL, escape, backspace...): text holding
# them was damaged on the way (a binary file, a bad export), not written by a radiologist
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
# what spreadsheet and pandas exports write for an empty cell; never a finding
_EMPTY_LABELS = frozenset({"nan", "none", "null", "n/a", "na", "<na>"})


def _check_text(text: str | None, cfg: DatasetConfig) -> tuple[str | None, str | None]:
    """Return (clean text, rejection reason)."""
    if text is None or not str(text).strip():
        return None, "empty text"
    if _CONTROL.search(str(text)):
        return None, "control characters in text"
    text = " ".join(str(text).split())
    if len(text) < cfg.min_text_chars:
        return None, f"text shorter than {cfg.min_text_chars} characters"
    if len(text) > cfg.max_text_chars:
        return None, f"text longer than {cfg.max_text_chars} characters"
    return text, None


def _process(args: tuple[RawRecord, int]) -> tuple[RawRecord, bytes | None, int, int, str | None, str]:
    """Worker: decode, convert and shrink one record's image. Returns (record, png/jpeg, w, h, reason, detail)."""
    rec, store_size = args
    if rec.reject:
        return rec, None, 0, 0, None, ""  # the source already knows it is unusable: no decoding
    try:
        src = rec.image() if callable(rec.image) else rec.image
        img = prepare_image(src, modality=rec.modality, store_size=store_size)
        return rec, encode_image(img), img.width, img.height, None, ""
    except DataError as e:
        return rec, None, 0, 0, "unreadable image", str(e)
    except (OSError, ValueError) as e:  # raised by renderers/decoders outside load_image's own checks
        return rec, None, 0, 0, "unreadable image", f"{type(e).__name__}: {e}"


def _process_batch(batch: list[tuple[RawRecord, int]]) -> list:
    return [_process(item) for item in batch]


def _pool_map(items: Iterable[tuple[RawRecord, int]], workers: int, batch_size: int = 8) -> Iterator:
    """``map(_process, items)`` in ``workers`` processes, in order, with a bounded number of batches in flight.

    Hand-written instead of ``Pool.imap``: imap's feeder thread drains the whole input at once and
    its results queue is unbounded, so memory would grow with the dataset.
    """
    if workers <= 1:
        yield from map(_process, items)
        return
    it = iter(items)
    window: collections.deque = collections.deque()
    # fork keeps already-imported adapters; spawn would re-import torch-free medlens anyway
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(workers) as pool:
        while True:
            while len(window) < 4 * workers and (batch := list(itertools.islice(it, batch_size))):
                window.append(pool.apply_async(_process_batch, (batch,)))
            if not window:
                return
            yield from window.popleft().get()


def prepare_dataset(
    cfg: DatasetConfig,
    name: str,
    raw_dir: str | os.PathLike,
    out_parquet: str | os.PathLike,
    out_rejected: str | os.PathLike,
    *,
    workers: int = 1,
) -> PrepareSummary:
    """Prepare one dataset into the shared parquet contract.

    Args:
        cfg: the dataset definition.
        name: its name in ``config/config.yaml`` (ids become ``{name}/{native id}``).
        raw_dir: the download folder (``results/raw/{dataset}``).
        out_parquet: ``results/prepared/{dataset}.parquet``.
        out_rejected: ``results/prepared/{dataset}.rejected.csv``.
        workers: processes decoding images.

    Returns:
        The read/kept/rejected counts with the rejection reasons.

    Raises:
        MedlensError: when the counts do not add up or nothing is kept.
    """
    adapter = get_adapter(cfg, dataset=name)
    root = data_root(cfg, Path(raw_dir))
    logger.info(
        "preparing dataset '%s' with adapter '%s' from %s (%d workers)", name, adapter.name, root, workers
    )

    seen_ids: set[str] = set()
    seen_content: dict[tuple[str, str], str] = {}
    reasons: Counter[str] = Counter()
    read = kept = 0
    batch: list[dict] = []

    def records() -> Iterator[tuple[RawRecord, int]]:
        nonlocal read
        for rec in adapter.records(cfg, root):
            if cfg.limit is not None and read >= cfg.limit:
                return
            read += 1
            yield rec, cfg.store_size

    with (
        atomic_path(out_parquet) as tmp_parquet,
        atomic_path(out_rejected) as tmp_rejected,
        open(tmp_rejected, "w", newline="") as rej_file,
    ):
        rejected = csv.writer(rej_file)
        rejected.writerow(REJECTED_COLUMNS)
        writer = pq.ParquetWriter(tmp_parquet, PREPARED_SCHEMA, compression="zstd")

        def reject(rec: RawRecord, reason: str, detail: str = "") -> None:
            reasons[reason] += 1
            rejected.writerow([f"{name}/{rec.native_id}", name, rec.source_ref, reason, detail])

        try:
            for rec, image, width, height, reason, detail in _pool_map(records(), workers):
                rid = f"{name}/{rec.native_id}"
                text, text_reason = _check_text(rec.text, cfg)
                if rec.reject:
                    reject(rec, rec.reject, rec.reject_detail)
                elif reason:
                    reject(rec, reason, detail)
                elif text_reason:
                    raw = rec.text or ""
                    reject(rec, text_reason, (repr(raw) if text_reason.startswith("control") else raw)[:80])
                elif not rec.native_id.isprintable() or not rec.native_id.strip():
                    reject(rec, "invalid id", repr(rec.native_id)[:80])
                elif bad_labels := [lab for lab in rec.labels if lab.strip().lower() in _EMPTY_LABELS]:
                    reject(rec, "invalid label", f"{bad_labels[0]!r} is how an export writes an empty cell")
                elif rid in seen_ids:
                    reject(rec, "duplicate id", rid)
                elif rec.text_source not in TEXT_SOURCES:
                    reject(rec, "invalid text_source", f"{rec.text_source!r} not in {TEXT_SOURCES}")
                elif rec.official_split is not None and rec.official_split not in SPLITS:
                    reject(rec, "invalid split", f"{rec.official_split!r} not in {SPLITS}")
                else:
                    digest = hashlib.sha1(image).hexdigest()
                    key = (digest, text)
                    if key in seen_content:
                        reject(rec, "duplicate image and text", f"same as {seen_content[key]}")
                        continue
                    seen_ids.add(rid)
                    seen_content[key] = rid
                    meta = dict(rec.meta)
                    if rec.official_split is not None:
                        meta["official_split"] = rec.official_split
                    batch.append(
                        {
                            "id": rid,
                            "dataset": name,
                            "patient_id": rec.patient_id,
                            "study_id": rec.study_id,
                            "image": image,
                            "width": width,
                            "height": height,
                            "modality": rec.modality,
                            "view": rec.view,
                            "text": text,
                            "text_source": rec.text_source,
                            "labels": sorted(set(rec.labels)),
                            "meta": json.dumps(meta, sort_keys=True),
                        }
                    )
                    kept += 1
                    if len(batch) >= ROW_GROUP:
                        writer.write_table(pa.Table.from_pylist(batch, schema=PREPARED_SCHEMA))
                        batch.clear()
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=PREPARED_SCHEMA))
            summary = PrepareSummary(name, read, kept, sum(reasons.values()), dict(reasons))
            writer.add_key_value_metadata(
                {
                    SUMMARY_KEY: json.dumps(
                        {**summary.as_dict(), "config": to_dict(cfg), "adapter": adapter.name}, sort_keys=True
                    ).encode()
                }
            )
        finally:
            writer.close()
        if summary.read != summary.kept + summary.rejected:
            raise MedlensError(f"{name}: read {read} records but kept {kept} + rejected {summary.rejected}")
    if kept == 0:  # the job fails and Snakemake removes its outputs: the reasons go where it does not look
        failed = Path(out_rejected).with_name(Path(out_rejected).name.removesuffix(".csv") + ".failed.csv")
        os.replace(out_rejected, failed)
        Path(out_parquet).unlink()
        raise MedlensError(
            f"{name}: no usable records out of {read} read from {root}; "
            f"see {failed} for each row's reason ({dict(reasons)})"
        )
    logger.info(
        "dataset '%s': read %d = kept %d + rejected %d %s",
        name,
        read,
        kept,
        summary.rejected,
        dict(sorted(reasons.items())),
    )
    return summary


def read_prepared_summary(path: str | os.PathLike) -> dict:
    """The counts and config stored in a prepared parquet's metadata."""
    meta = pq.read_metadata(path).metadata or {}  # the footer's key-value pairs (not the Arrow schema's)
    return json.loads(meta[SUMMARY_KEY]) if SUMMARY_KEY in meta else {}
