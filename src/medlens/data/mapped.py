"""One split of ``pairs.parquet``, or of the chat conversations, as a memory-mapped Arrow IPC file, for
training's random access.

Parquet pages are encoded, so reading a split from it puts every image of the split in the process's own
memory (MIMIC-CXR's 377,000 images: tens of GB, once per GPU process). An uncompressed Arrow IPC file
maps instead: the operating system reads pages on demand and keeps them in its page cache, shared by
every process and loader worker on the node, so a job's own memory stays flat as the data grows (the
mechanism of Hugging Face ``datasets``' cache). The file is written once per training run, streaming the
parquet row group by row group, and reused on resume while the parquet it came from is unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medlens.io import atomic_path

__all__ = ["MappedRecords", "map_chat", "map_split", "open_mapped"]

_SOURCE_KEY = b"medlens.source"
_BATCH_ROWS = 1024  # rows per record batch: a random read resolves its batch by binary search


def _source(pairs_path: Path, split: str, columns: tuple[str, ...]) -> bytes:
    """What the file was made from: a changed parquet (size or time) or another selection rewrites it."""
    stat = pairs_path.stat()
    key = {"path": str(pairs_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return json.dumps({**key, "split": split, "columns": list(columns)}, sort_keys=True).encode()


def open_mapped(path: str | os.PathLike) -> pa.Table:
    """A table whose buffers point into the memory-mapped file (nothing is read until it is used)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def map_split(
    pairs_path: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike,
    columns: tuple[str, ...] = ("id", "image", "text"),
) -> Path:
    """The path of ``cache_dir/{split}.arrow``, the ``columns`` of the rows of ``split``, written if missing or
    stale. Memory stays at one parquet row group while it is written.

    In a job of several processes, call it on the main process first (accelerate's ``main_process_first``):
    the others then find the file made.
    """
    pairs_path, cache = Path(pairs_path), Path(cache_dir)
    path = cache / f"{split}.arrow"
    source = _source(pairs_path, split, columns)
    if path.is_file():
        with pa.memory_map(str(path), "r") as f:
            if (pa.ipc.open_file(f).schema.metadata or {}).get(_SOURCE_KEY) == source:
                return path
    cache.mkdir(parents=True, exist_ok=True)
    # pre_buffer (pyarrow's default) keeps every row group it has read in memory until the file is closed
    parquet = pq.ParquetFile(pairs_path, pre_buffer=False)
    fields = [parquet.schema_arrow.field(c) for c in columns]
    out_schema = pa.schema(fields, metadata={_SOURCE_KEY: source})
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, out_schema) as writer,
    ):
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[*columns, "split"]):
            rows = batch.filter(pc.equal(batch.column("split"), split))
            if rows.num_rows:
                writer.write_batch(
                    pa.RecordBatch.from_arrays([rows.column(c) for c in columns], schema=out_schema)
                )
    return path


def map_chat(chat_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The path of ``cache_dir/{name}.arrow``: the conversations of a chat JSONL, validated and with absolute
    image paths (:func:`medlens.data.chat_format.iter_chat`), one JSON string each, written if missing or
    stale. Memory stays at one batch of records while it is written; call it on the main process first."""
    from medlens.data.chat_format import iter_chat

    chat_path, cache = Path(chat_path), Path(cache_dir)
    path = cache / f"{chat_path.name.removesuffix('.jsonl')}.arrow"
    stat = chat_path.stat()
    source = json.dumps(
        {"path": str(chat_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, sort_keys=True
    ).encode()
    if path.is_file():
        with pa.memory_map(str(path), "r") as f:
            if (pa.ipc.open_file(f).schema.metadata or {}).get(_SOURCE_KEY) == source:
                return path
    cache.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([pa.field("record", pa.large_string())], metadata={_SOURCE_KEY: source})
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        batch: list[str] = []
        for record in iter_chat(chat_path):
            batch.append(json.dumps(record, ensure_ascii=False))
            if len(batch) == _BATCH_ROWS:
                writer.write_batch(
                    pa.RecordBatch.from_arrays([pa.array(batch, pa.large_string())], schema=schema)
                )
                batch = []
        if batch:
            writer.write_batch(
                pa.RecordBatch.from_arrays([pa.array(batch, pa.large_string())], schema=schema)
            )
    return path


class MappedRecords(Sequence):
    """The conversations of a file written by :func:`map_chat`, read on demand: a record is parsed when it is
    indexed, the file's pages are shared through the page cache by every process and loader worker, and the
    object pickles as its path (a spawned worker maps the file again)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._column = open_mapped(self.path).column("record")

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return json.loads(self._column[i].as_py())

    def __reduce__(self):
        return MappedRecords, (self.path,)
