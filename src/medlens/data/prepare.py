"""``prepare_datasets``: turn one source's records into ``prepared/{dataset}.parquet`` + ``rejected.csv``.

Records are decoded, converted and shrunk in a process pool (images are the cost; the records
themselves are cheap to produce), written in row groups so memory does not grow with the dataset,
and validated: every record is either kept or written to ``rejected.csv`` with its reason, and
``read = kept + rejected`` is checked before the outputs are renamed into place.
"""

from __future__ import annotations

import collections
import concurrent.futures
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
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from medlens.config import DatasetConfig, to_dict
from medlens.data.chat_format import IMAGE_TOKEN
from medlens.data.images import encode_image, prepare_image
from medlens.data.schema import PREPARED_SCHEMA, REJECTED_COLUMNS, SPLITS, TEXT_SOURCES
from medlens.data.sources import RawRecord, data_root, get_adapter
from medlens.errors import DataError, MedlensError
from medlens.io import atomic_path

__all__ = ["prepare_dataset", "PrepareSummary", "Decoded", "read_prepared_summary"]

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
# a signed or decimal number (`-1`, `1.0`: a one-hot or uncertainty value exported as a label) names no
# class; a plain integer may (a KL grade `2`, a BI-RADS category `4`, an ICD-9 code `486`)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _empty(value: str | None) -> bool:
    """Whether a cell is empty or holds what an export writes for an empty cell (``nan``, ``None``, ``N/A``)."""
    return value is None or not str(value).strip() or str(value).strip().lower() in _EMPTY_LABELS


def _check_text(text: str | None, cfg: DatasetConfig, text_source: str) -> tuple[str | None, str | None]:
    """Return (clean text, rejection reason)."""
    # `nan` / `None` / `N/A` is an exported empty cell, whatever min_text_chars allows; in VQA, "None" answers
    if _empty(text) if text_source != "vqa" else not str(text or "").strip():
        return None, "empty text"
    if _CONTROL.search(str(text)):
        return None, "control characters in text"
    text = " ".join(str(text).split())
    if len(text) < cfg.min_text_chars:
        return None, f"text shorter than {cfg.min_text_chars} characters"
    if len(text) > cfg.max_text_chars:
        return None, f"text longer than {cfg.max_text_chars} characters"
    return text, None


def _escape_bytes(value: str) -> str:
    """``value`` with the bytes that were not UTF-8 written as ``\\xe9``. Readers keep such bytes as lone
    surrogates so that the row holding them is found and rejected; written as they are, they stopped the whole
    job with a UnicodeEncodeError while the rejected row (an id, a path or a file name) was being recorded."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no byte maps to (a JSON ``"\\ud800"`` escape)
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Decoded(NamedTuple):
    """A record with its image decoded, converted and shrunk by a worker, or the reason it could not be."""

    record: RawRecord
    image: bytes | None  # PNG (grey) or JPEG (colour) at the dataset's store size
    width: int
    height: int
    reason: str | None  # why the image is unusable, None when it is usable
    detail: str


def _process(args: tuple[RawRecord, int]) -> Decoded:
    """Worker: decode, convert and shrink one record's image."""
    rec, store_size = args
    if rec.reject:
        return Decoded(rec, None, 0, 0, None, "")  # the source already knows it is unusable: no decoding
    try:
        src = rec.image() if callable(rec.image) else rec.image
        img = prepare_image(src, modality=rec.modality, store_size=store_size)
        return Decoded(rec, encode_image(img), img.width, img.height, None, "")
    except DataError as e:
        return Decoded(rec, None, 0, 0, "unreadable image", str(e))
    except (OSError, ValueError) as e:  # raised by renderers/decoders outside load_image's own checks
        return Decoded(rec, None, 0, 0, "unreadable image", f"{type(e).__name__}: {e}")


def _process_batch(batch: list[tuple[RawRecord, int]]) -> list:
    return [_process(item) for item in batch]


def _pool_map(items: Iterable[tuple[RawRecord, int]], workers: int, batch_size: int = 8) -> Iterator:
    """``map(_process, items)`` in ``workers`` processes, in order, with a bounded number of batches in flight.

    Hand-written instead of ``Executor.map``/``Pool.imap``: both submit the whole input at once, so memory
    would grow with the dataset.
    """
    if workers <= 1:
        yield from map(_process, items)
        return
    it = iter(items)
    window: collections.deque = collections.deque()
    # fork keeps already-imported adapters; spawn would re-import torch-free medlens anyway
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        while True:
            try:
                while len(window) < 4 * workers and (batch := list(itertools.islice(it, batch_size))):
                    window.append((pool.submit(_process_batch, batch), batch))
                if not window:
                    return
                done = window[0][0].result()
            except concurrent.futures.process.BrokenProcessPool:  # multiprocessing.Pool waited forever here
                ids = [rec.native_id for _, batch in window for rec, _ in batch]
                when = f"while records {ids[0]!r} to {ids[-1]!r} were in flight" if ids else "between batches"
                raise MedlensError(
                    f"a process decoding images died (killed, most often for memory) {when}; give the job more "
                    "memory or fewer workers (snakemake --set-threads prepare_datasets=N)"
                ) from None
            window.popleft()
            yield from done
    finally:
        # Stopped early (an error, or the consumer closed us): cancel what has not started and let the
        # running batches end. multiprocessing.Pool's terminate() here could hang forever (it did in CI).
        pool.shutdown(wait=True, cancel_futures=True)


class _Ledger:
    """The verdict on each record (kept, or rejected with its reason), and what has been seen so far."""

    def __init__(self, name: str, rejected_csv):
        self.name, self.rejected = name, csv.writer(rejected_csv)
        self.rejected.writerow(REJECTED_COLUMNS)
        self.reasons: Counter[str] = Counter()
        self.seen_ids: set[str] = set()
        self.seen_content: dict[tuple[str, str], str] = {}  # (image digest, text) -> id
        self.spellings: dict[str, Counter[str]] = {}  # casefolded label -> its spellings in kept records

    def warn_spellings(self) -> None:
        """Name the labels kept under several spellings (`Cardiomegaly`, `cardiomegaly`): each is its own class.

        Kept as they are, not rejected: which spelling is right is the source's to say, and rejecting all but
        the first seen could drop most of a dataset for one typo in its first row."""
        for spellings in self.spellings.values():
            if len(spellings) > 1:
                logger.warning(
                    "dataset '%s': one label spelled %d ways, each its own class: %s; make the spelling one in "
                    "the source",
                    self.name,
                    len(spellings),
                    ", ".join(f"{s!r} ({n} records)" for s, n in spellings.most_common()),
                )

    def reject(self, rec: RawRecord, reason: str, detail: str = "") -> None:
        self.reasons[reason] += 1
        row = [f"{self.name}/{rec.native_id}", self.name, rec.source_ref, reason, detail]
        self.rejected.writerow([_escape_bytes(str(x)) for x in row])

    def verdict(self, d: Decoded, text: str | None, text_reason: str | None) -> tuple[str, str] | None:
        """``(reason, detail)`` when the record cannot be kept; None when it is kept (and now seen)."""
        rec, rid = d.record, f"{self.name}/{d.record.native_id}"
        if rec.reject:
            return rec.reject, rec.reject_detail
        if d.reason:
            return d.reason, d.detail
        if text_reason:
            raw = rec.text or ""
            return text_reason, (repr(raw) if text_reason.startswith("control") else raw)[:80]
        if not rec.native_id.isprintable() or not rec.native_id.strip():
            return "invalid id", repr(rec.native_id)[:80]
        if bad := [lab for lab in rec.labels if lab.strip().lower() in _EMPTY_LABELS]:
            return "invalid label", f"{bad[0]!r} is how an export writes an empty cell"
        if bad := [lab for lab in rec.labels if _NUMBER.fullmatch(s := lab.strip()) and not s.isdigit()]:
            return "invalid label", f"{bad[0]!r} is a signed or decimal number, not a class name"
        if rid in self.seen_ids:
            return "duplicate id", rid
        if rec.text_source not in TEXT_SOURCES:
            return "invalid text_source", f"{rec.text_source!r} not in {TEXT_SOURCES}"
        # what convert_to_chat needs of the row, checked here so one row cannot stop it for every dataset
        # ("None" is an answer in VQA, not an exported empty cell)
        blank = [k for k in ("question", "answer") if not str(rec.meta.get(k) or "").strip()]
        if rec.text_source == "vqa" and blank:
            return "vqa row without question and answer", "expected non-empty question and answer fields"
        fields = {"text": text, "question": rec.meta.get("question"), "answer": rec.meta.get("answer")}
        if marked := [k for k, v in fields.items() if IMAGE_TOKEN in str(v or "")]:
            return f"{IMAGE_TOKEN} in text", f"the {marked[0]} holds the chat image placeholder {IMAGE_TOKEN}"
        if rec.official_split is not None and rec.official_split not in SPLITS:
            return "invalid split", f"{rec.official_split!r} not in {SPLITS}"
        key = (hashlib.sha1(d.image).hexdigest(), text)
        if key in self.seen_content:
            return "duplicate image and text", f"same as {self.seen_content[key]}"
        self.seen_ids.add(rid)
        self.seen_content[key] = rid
        for lab in rec.labels:
            self.spellings.setdefault(lab.casefold(), Counter())[lab] += 1
        return None


def _row(name: str, d: Decoded, text: str) -> dict[str, Any]:
    """The prepared-parquet row of a kept record."""
    rec = d.record
    meta = dict(rec.meta)
    if rec.official_split is not None:
        meta["official_split"] = rec.official_split
    return {
        "id": f"{name}/{rec.native_id}",
        "dataset": name,
        # an exported empty cell (`nan`) is no id: as one it would make every such row one patient
        "patient_id": None if _empty(rec.patient_id) else rec.patient_id,
        "study_id": None if _empty(rec.study_id) else rec.study_id,
        "image": d.image,
        "width": d.width,
        "height": d.height,
        "modality": rec.modality,
        "view": rec.view,
        "text": text,
        "text_source": rec.text_source,
        "labels": sorted(set(rec.labels)),
        "meta": json.dumps(meta, sort_keys=True),
    }


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
    records = itertools.islice(adapter.records(cfg, root), cfg.limit)  # limit None: every record
    read = kept = 0
    with (
        atomic_path(out_parquet) as tmp_parquet,
        atomic_path(out_rejected) as tmp_rejected,
        open(tmp_rejected, "w", newline="") as rejected_csv,
        _ParquetWriter(tmp_parquet) as writer,
    ):
        ledger = _Ledger(name, rejected_csv)
        for d in _pool_map(((rec, cfg.store_size) for rec in records), workers):
            read += 1
            text, text_reason = _check_text(d.record.text, cfg, d.record.text_source)
            verdict = ledger.verdict(d, text, text_reason)
            if verdict:
                ledger.reject(d.record, *verdict)
            else:
                writer.add(_row(name, d, text))
                kept += 1
        summary = PrepareSummary(name, read, kept, sum(ledger.reasons.values()), dict(ledger.reasons))
        ledger.warn_spellings()
        writer.metadata = {**summary.as_dict(), "config": to_dict(cfg), "adapter": adapter.name}
        if summary.read != summary.kept + summary.rejected:
            raise MedlensError(f"{name}: read {read} records but kept {kept} + rejected {summary.rejected}")
    if kept == 0:  # the job fails and Snakemake removes its outputs: the reasons go where it does not look
        failed = Path(out_rejected).with_name(Path(out_rejected).name.removesuffix(".csv") + ".failed.csv")
        os.replace(out_rejected, failed)
        Path(out_parquet).unlink()
        raise MedlensError(
            f"{name}: no usable records out of {read} read from {root}; "
            f"see {failed} for each row's reason ({summary.reasons})"
        )
    logger.info(
        "dataset '%s': read %d = kept %d + rejected %d %s",
        name,
        read,
        kept,
        summary.rejected,
        dict(sorted(summary.reasons.items())),
    )
    return summary


class _ParquetWriter:
    """Rows written in row groups of ``ROW_GROUP``, with the summary in the footer, closed however the block ends."""

    def __init__(self, path: Path):
        self.writer = pq.ParquetWriter(path, PREPARED_SCHEMA, compression="zstd")
        self.batch: list[dict[str, Any]] = []
        self.metadata: dict[str, Any] | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.batch.append(row)
        if len(self.batch) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.writer.write_table(pa.Table.from_pylist(self.batch, schema=PREPARED_SCHEMA))
            self.batch.clear()

    def __enter__(self) -> _ParquetWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self._flush()
                if self.metadata is not None:
                    self.writer.add_key_value_metadata(
                        {SUMMARY_KEY: json.dumps(self.metadata, sort_keys=True).encode()}
                    )
        finally:
            self.writer.close()


def read_prepared_summary(path: str | os.PathLike) -> dict:
    """The counts and config stored in a prepared parquet's metadata."""
    meta = pq.read_metadata(path).metadata or {}  # the footer's key-value pairs (not the Arrow schema's)
    return json.loads(meta[SUMMARY_KEY]) if SUMMARY_KEY in meta else {}
