"""One split of ``pairs.parquet`` as a memory-mapped Arrow IPC file, for training's random access.

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
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medlens.io import atomic_path

__all__ = ["map_split", "open_mapped"]

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
