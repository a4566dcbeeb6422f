"""The data contract shared by ``prepared/{dataset}.parquet`` and ``pairs.parquet`` (DESIGN.md)."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["PREPARED_SCHEMA", "PAIRS_SCHEMA", "REJECTED_COLUMNS", "TEXT_SOURCES", "SPLITS", "IMAGE_TOKEN"]

TEXT_SOURCES = ("report", "from_labels", "vqa", "caption")
SPLITS = ("train", "val", "test")
IMAGE_TOKEN = (
    "<image>"  # the chat files' image placeholder (LLaMA-Factory's); no text of the data may hold it
)

PREPARED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # unique, "{dataset}/{native id}"
        pa.field("dataset", pa.string(), nullable=False),  # config name of the source
        pa.field("patient_id", pa.string()),  # leakage-free splits group on it
        pa.field("study_id", pa.string()),
        pa.field("image", pa.binary(), nullable=False),  # PNG (grey X-rays) or JPEG (photographs)
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),  # chest_xray, knee_xray, dermatology, ct, mri
        pa.field("view", pa.string()),  # PA, AP, LATERAL, ...
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_source", pa.string(), nullable=False),  # one of TEXT_SOURCES
        pa.field("labels", pa.list_(pa.string()), nullable=False),
        pa.field("meta", pa.string(), nullable=False),  # JSON object of source-specific extras
    ]
)

PAIRS_SCHEMA = PREPARED_SCHEMA.append(pa.field("split", pa.string(), nullable=False))

# rejected.csv: one row per record that could not be used, with the reason (nothing is dropped silently)
REJECTED_COLUMNS = ("id", "dataset", "source_ref", "reason", "detail")
