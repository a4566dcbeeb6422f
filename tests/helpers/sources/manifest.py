"""A user's own folder for the ``manifest`` source: images plus a CSV pairing each with its text.

Covers the optional columns (id, labels, patient_id, study_id, view, split), ``validate`` as a split
name, a view spelled ``L``, an image in a subfolder, an absolute image path, an extra column that
must reach ``meta``, and a quoted multi-line text.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_png

COLUMNS = ["id", "image", "text", "labels", "patient_id", "view", "split", "hospital"]


@dataclass
class ManifestFixture:
    root: Path
    rows: list[dict]


def default_rows(root: Path) -> list[dict]:
    return [
        {
            "id": "a1",
            "image": "a1.png",
            "text": "Right lower lobe consolidation.",
            "labels": "Pneumonia|Consolidation",
            "patient_id": "P1",
            "view": "PA",
            "split": "train",
            "hospital": "north",
        },
        {
            "id": "a2",
            "image": "lateral/a2.png",
            "text": "Lateral view.\nNo effusion.",
            "labels": "No Finding",
            "patient_id": "P1",
            "view": "L",
            "split": "train",
            "hospital": "north",
        },
        {
            "id": "b1",
            "image": str(Path(root).resolve() / "b1.png"),
            "text": "Cardiomegaly without edema.",
            "labels": "Cardiomegaly",
            "patient_id": "P2",
            "view": "AP",
            "split": "validate",
            "hospital": "",
        },
        {
            "id": "c1",
            "image": "c1.png",
            "text": "Clear lungs.",
            "labels": "",
            "patient_id": "",
            "view": "",
            "split": "",
            "hospital": "south",
        },
    ]


def build(root: Path, rows: list[dict] | None = None, *, columns: list[str] | None = None) -> ManifestFixture:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = default_rows(root) if rows is None else rows
    columns = columns or COLUMNS
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    for i, row in enumerate(rows):
        path = Path(row.get("image") or f"_unused{i}.png")
        path = path if path.is_absolute() else root / path
        if not path.exists() and row.get("image"):
            write_png(path, seed=1100 + i, size=(36, 40))
    return ManifestFixture(root, rows)
