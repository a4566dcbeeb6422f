"""Running one source through ``prepare_dataset`` and reading back what it wrote."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from medlens.config import DatasetConfig, from_dict
from medlens.data.prepare import PrepareSummary, prepare_dataset


@dataclass
class Prepared:
    rows: dict[str, dict]  # native id -> row (meta decoded, image bytes kept)
    rejected: dict[str, dict]  # native id -> rejected.csv row (the last, where an id is rejected twice)
    summary: PrepareSummary
    parquet: Path
    rejected_rows: list[dict]  # every rejected.csv row, in order

    def image(self, native_id: str) -> Image.Image:
        return Image.open(io.BytesIO(self.rows[native_id]["image"]))


def prepare(tmp_path: Path, name: str, settings: dict, *, workers: int = 1) -> Prepared:
    """Prepare dataset ``name`` defined by ``settings`` (a ``datasets.<name>`` mapping) into ``tmp_path/out``."""
    cfg = from_dict(DatasetConfig, settings, source="test", prefix=f"datasets.{name}")
    out = Path(tmp_path) / "out"
    parquet, rejected = out / f"{name}.parquet", out / f"{name}.rejected.csv"
    summary = prepare_dataset(cfg, name, out / "raw", parquet, rejected, workers=workers)
    rows = {}
    for row in pq.read_table(parquet).to_pylist():
        row["meta"] = json.loads(row["meta"])
        rows[row["id"].split("/", 1)[1]] = row
    with open(rejected, newline="") as f:
        rejected_rows = list(csv.DictReader(f))
    rejects = {r["id"].split("/", 1)[1]: r for r in rejected_rows}
    assert summary.read == len(rows) + len(rejected_rows), "every record read is either kept or rejected"
    return Prepared(rows, rejects, summary, parquet, rejected_rows)
