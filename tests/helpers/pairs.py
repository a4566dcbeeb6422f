"""A small ``pairs.parquet`` with a real image-text signal (shapes that the text names), for training tests."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from medlens.data.schema import PAIRS_SCHEMA


def write_pairs(path: str | Path, n: int = 120, seed: int = 0, size: int = 40) -> Path:
    """Rows whose image shows a big blob ("enlarged heart") and/or a bright lower-left corner ("effusion")."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        img = Image.new("L", (size, size), 40)
        draw = ImageDraw.Draw(img)
        labels, text = [], []
        if rng.random() < 0.4:
            labels.append("Cardiomegaly")
            draw.ellipse([size * 0.3, size * 0.4, size * 0.85, size * 0.9], fill=200)
            text.append("The heart is enlarged.")
        else:
            text.append("Heart size is normal.")
        if rng.random() < 0.3:
            labels.append("Pleural Effusion")
            draw.rectangle([0, size * 0.75, size * 0.35, size], fill=230)
            text.append("Right pleural effusion.")
        else:
            text.append("No pleural effusion.")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        split = "train" if i < n * 0.7 else "val" if i < n * 0.85 else "test"
        rows.append(
            {
                "id": f"toy/{i}",
                "dataset": "toy",
                "patient_id": f"p{i}",
                "study_id": None,
                "image": buf.getvalue(),
                "width": size,
                "height": size,
                "modality": "chest_xray",
                "view": "PA",
                "text": " ".join(text),
                "text_source": "report",
                "labels": labels or ["No Finding"],
                "meta": "{}",
                "split": split,
            }
        )
    path = Path(path)
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), path)
    return path
