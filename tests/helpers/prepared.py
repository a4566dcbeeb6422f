"""Builders of small prepared parquets for data-stage tests."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medlens.data.schema import PREPARED_SCHEMA


def png(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


def textured_png(seed: int, size: int = 32) -> bytes:
    """A grey image with structure (random 8x8 blocks, smoothly upscaled): unlike ``png``'s flat squares,
    two seeds give difference hashes far apart, so only intended copies are duplicates."""
    rng = random.Random(seed)
    blocks = Image.frombytes("L", (8, 8), bytes(rng.randrange(256) for _ in range(64)))
    buf = io.BytesIO()
    blocks.resize((size, size), Image.Resampling.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def make_prepared(tmp_path):
    """write(name, rows) -> path; rows are dicts with id suffix, patient, labels and optional meta/text."""

    def write(name: str, rows: list[dict]) -> str:
        records = []
        for i, r in enumerate(rows):
            records.append(
                {
                    "id": f"{name}/{r['id']}",
                    "dataset": name,
                    "patient_id": r.get("patient"),
                    "study_id": None,
                    "image": r.get("image", png(i % 256)),
                    "width": 8,
                    "height": 8,
                    "modality": "chest_xray",
                    "view": "PA",
                    "text": r.get("text", f"report {r['id']}"),
                    "text_source": r.get("text_source", "report"),
                    "labels": r.get("labels", []),
                    "meta": json.dumps(r.get("meta", {})),
                }
            )
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(records, schema=PREPARED_SCHEMA), path, row_group_size=7)
        return str(path)

    return write


def population(n_patients: int, seed: int = 0) -> list[dict]:
    """Patients with 1-3 studies each and a realistic mix of labels (a rare one included)."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_patients):
        labels = rng.choice(
            [["No Finding"]] * 6
            + [["Cardiomegaly"], ["Pleural Effusion"], ["Cardiomegaly", "Pleural Effusion"]]
        )
        if p % 40 == 0:
            labels = ["Pneumothorax"]
        for s in range(rng.randint(1, 3)):
            rows.append({"id": f"p{p}-s{s}", "patient": f"p{p}", "labels": labels})
    return rows
