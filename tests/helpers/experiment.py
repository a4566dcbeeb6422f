"""A small experiment folder laid out as the pipeline writes it: results/<exp>/{data,encoder}, results/prepared."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from helpers.encoders import save_tiny_open_clip
from helpers.pairs import write_pairs
from medlens.data.prepare import SUMMARY_KEY
from medlens.data.schema import PREPARED_SCHEMA

STORE_SIZE = 48
LABELS = ["Cardiomegaly", "Pleural Effusion"]


def write_prepared(path: Path, store_size: int, adapter: str | None = None) -> Path:
    """An empty prepared parquet whose footer holds the dataset config (and adapter), as prepare_dataset writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(path, PREPARED_SCHEMA)
    writer.write_table(PREPARED_SCHEMA.empty_table())
    summary = {"config": {"store_size": store_size}, **({"adapter": adapter} if adapter else {})}
    writer.add_key_value_metadata({SUMMARY_KEY: json.dumps(summary).encode()})
    writer.close()
    return path


def make_experiment(results: Path) -> Path:
    """results/exp: pairs of dataset 'toy' (chest_xray, 40 px) stored at STORE_SIZE px, and a tiny encoder."""
    exp = results / "exp"
    (exp / "data").mkdir(parents=True)
    write_pairs(exp / "data" / "pairs.parquet", n=20, size=40)
    write_prepared(results / "prepared" / "toy.parquet", STORE_SIZE)
    encoder = save_tiny_open_clip(exp / "encoder")
    (encoder / "medlens.json").write_text(
        json.dumps(
            {
                "kind": "open_clip",
                "steps": 3,
                "best_metric": "val/loss",
                "best_value": 1.5,
                "best_step": 2,
                "config": {"preset": "tiny"},
                "zero_shot": {"labels": LABELS, "templates": "report"},
            }
        )
    )
    (encoder / "README.md").write_text("# tiny encoder\n\n- trained for a test\n")
    return exp


class RecordingGenerator:
    """Stands in for a decoder (``load_generator``'s result): records its calls, answers with mode and size."""

    reads_prompts = True  # a VLM; False stands in for a captioner

    def __init__(self):
        self.calls = []

    def generate(self, images, prompts=None, generation=None, batch_size=8):
        self.calls.append((images, prompts, generation))
        return [f"{im.mode} {im.size[0]}x{im.size[1]}" for im in images]
