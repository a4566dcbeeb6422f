"""manifest: a user's folder + CSV, optional columns, extras in meta; the real ../shared/realdata read in place."""

from __future__ import annotations

import csv
from collections import Counter

from helpers.sources import manifest
from helpers.sources.run import prepare


def test_rows_keep_ids_labels_patients_views_and_splits(tmp_path):
    fixture = manifest.build(tmp_path / "mine")
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert out.rejected == {}
    assert set(out.rows) == {"a1", "a2", "b1", "c1"}
    a1, a2, b1, c1 = (out.rows[k] for k in ("a1", "a2", "b1", "c1"))
    assert a1["labels"] == ["Consolidation", "Pneumonia"] and a1["patient_id"] == "P1"
    assert a2["view"] == "LATERAL" and a2["text"] == "Lateral view. No effusion."
    assert b1["meta"]["official_split"] == "val"  # `validate` is read as val
    assert a1["meta"]["hospital"] == "north" and "hospital" not in b1["meta"]
    assert c1["patient_id"] is None and c1["labels"] == [] and "official_split" not in c1["meta"]


def test_real_chest_xrays_with_clinical_text_are_read_in_place(tmp_path, realdata):
    out = prepare(tmp_path, "realdata", {"source": "manifest", "path": str(realdata)}, workers=2)
    with open(realdata / "manifest.csv", newline="") as f:
        source = list(csv.DictReader(f))
    assert out.summary.read == len(source) == 110
    assert out.rejected == {}
    for r in source:
        row = out.rows[r["id"]]
        assert row["patient_id"] == r["patient_id"]
        assert row["labels"] == sorted(r["labels"].split("|"))
        assert row["text"] == " ".join(r["text"].split())
        assert max(row["width"], row["height"]) <= 320
    assert Counter(r["view"] for r in out.rows.values()) == {"PA": 55, "AP": 38, "LATERAL": 17}
