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


def _rows(*cells: dict) -> list[dict]:
    """One manifest row per dict: image `r{i}.png`, a distinct report, the dict's cells over those."""
    return [
        {"id": f"r{i}", "image": f"r{i}.png", "text": f"Report number {i} is clear.", **c}
        for i, c in enumerate(cells)
    ]


def test_an_exported_empty_patient_id_is_no_patient_not_one_giant_patient(tmp_path):
    # a pandas export writes an empty cell as `nan`: as an id it grouped 16 unrelated rows as one patient
    cells = [{"patient_id": p, "study_id": p} for p in ("nan", "NaN", "None", "N/A", " ", "P1", "P1")]
    fixture = manifest.build(
        tmp_path / "m", _rows(*cells), columns=["id", "image", "text", "patient_id", "study_id"]
    )
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    assert out.rejected == {}
    assert [out.rows[f"r{i}"]["patient_id"] for i in range(7)] == [None] * 5 + ["P1", "P1"]
    assert [out.rows[f"r{i}"]["study_id"] for i in range(7)] == [None] * 5 + ["P1", "P1"]


def test_a_modality_medlens_does_not_know_is_a_rejected_row_listing_the_known_ones(tmp_path):
    spellings = ["Chest X-ray", "CXR", "chest-xray", "CHEST_XRAY", "dermatology", ""]
    fixture = manifest.build(
        tmp_path / "m",
        _rows(*({"modality": m} for m in spellings)),
        columns=["id", "image", "text", "modality"],
    )
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        f"r{i}": (
            "unknown modality",
            f"{m!r}; expected one of chest_xray, ct, dermatology, knee_xray, mri, xray",
        )
        for i, m in enumerate(spellings[:3])
    }
    assert {k: r["modality"] for k, r in out.rows.items()} == {
        "r3": "chest_xray",
        "r4": "dermatology",
        "r5": "chest_xray",  # an empty cell is the default
    }
    assert out.image("r3").mode == "L" and out.image("r4").mode == "RGB"


def test_rows_the_chat_conversion_would_refuse_are_rejected_at_prepare(tmp_path):
    # each of these passed prepare, then stopped convert_to_chat for the whole experiment
    cells = [
        {"text": "Heart size normal. <image> No effusion."},
        {"text_source": "vqa"},  # no question and answer columns
        {"text_source": "vqa", "question": "Is there an effusion?", "answer": ""},
        {"text_source": "vqa", "question": "<image>What is shown?", "answer": "A chest."},
        {"text_source": "vqa", "question": "Is there an effusion?", "answer": "No."},
        {},
        {
            "text_source": "vqa",
            "text": "Shown: None",
            "question": "Which diseases are shown?",
            "answer": "None",
        },
    ]
    columns = ["id", "image", "text", "text_source", "question", "answer"]
    fixture = manifest.build(tmp_path / "m", _rows(*cells), columns=columns)
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        "r0": ("<image> in text", "the text holds the chat image placeholder <image>"),
        "r1": ("vqa row without question and answer", "expected non-empty question and answer fields"),
        "r2": ("vqa row without question and answer", "expected non-empty question and answer fields"),
        "r3": ("<image> in text", "the question holds the chat image placeholder <image>"),
    }
    assert (
        set(out.rows) == {"r4", "r5", "r6"} and out.rows["r4"]["meta"]["question"] == "Is there an effusion?"
    )
    assert out.rows["r6"]["meta"]["answer"] == "None"  # in VQA an answer, not an exported empty cell


def test_an_exported_empty_text_is_empty_whatever_min_text_chars_allows(tmp_path):
    texts = ["nan", "None", "N/A", "NULL", "<NA>", "OK"]
    cells = [{"text": t} for t in texts]
    cells.append({"text": "None", "text_source": "vqa", "question": "Which diseases?", "answer": "None"})
    columns = ["id", "image", "text", "text_source", "question", "answer"]
    fixture = manifest.build(tmp_path / "m", _rows(*cells), columns=columns)
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root), "min_text_chars": 1})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        f"r{i}": ("empty text", t) for i, t in enumerate(texts[:5])
    }
    assert set(out.rows) == {"r5", "r6"}  # "None" answers a VQA question
    assert out.rows["r5"]["text"] == "OK"


def test_a_signed_or_decimal_number_as_a_label_is_a_rejected_row(tmp_path):
    labels = ["-1", "1.0", "0.0", "Cardiomegaly|+1", "Cardiomegaly|No Finding 2", "2", "486"]
    fixture = manifest.build(
        tmp_path / "m", _rows(*({"labels": x} for x in labels)), columns=["id", "image", "text", "labels"]
    )
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        f"r{i}": ("invalid label", f"{value!r} is a signed or decimal number, not a class name")
        for i, value in enumerate(["-1", "1.0", "0.0", "+1"])
    }
    # a plain integer can name a class: a KL grade, a BI-RADS category, an ICD-9 code
    assert {k: r["labels"] for k, r in out.rows.items()} == {
        "r4": ["Cardiomegaly", "No Finding 2"],
        "r5": ["2"],
        "r6": ["486"],
    }


def test_rows_with_an_exported_empty_patient_id_are_split_one_by_one(tmp_path):
    # 16 of 20 rows with patient_id `nan` were one patient: the split came out 18/1/1 from 5 "patients"
    from medlens.config import LeakageConfig, SplitConfig
    from medlens.data.split import split_pairs

    cells = [
        {"patient_id": "nan" if i < 16 else f"P{i}", "labels": "Cardiomegaly" if i % 2 else "No Finding"}
        for i in range(20)
    ]
    columns = ["id", "image", "text", "patient_id", "labels"]
    fixture = manifest.build(tmp_path / "m", _rows(*cells), columns=columns)
    out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    stats = split_pairs(
        [out.parquet],
        SplitConfig(leakage=LeakageConfig(enabled=False)),
        tmp_path / "pairs.parquet",
        tmp_path / "dropped.csv",
        tmp_path / "split.json",
    )
    assert stats["patients"] == 20
    assert stats["rows_per_split"] == {"train": 16, "val": 2, "test": 2}


def test_a_label_spelled_two_ways_is_kept_and_named_in_a_warning(tmp_path, caplog):
    # rejecting all but the first spelling seen would drop most of a dataset for one typo in its first row
    labels = ["cardiomegaly", "Cardiomegaly", "Edema|CARDIOMEGALY", "Cardiomegaly|Edema", "Cardiomegaly"]
    fixture = manifest.build(
        tmp_path / "m", _rows(*({"labels": x} for x in labels)), columns=["id", "image", "text", "labels"]
    )
    with caplog.at_level("WARNING", logger="medlens.data.prepare"):
        out = prepare(tmp_path, "m", {"source": "manifest", "path": str(fixture.root)})
    assert out.rejected == {} and len(out.rows) == 5
    warnings = [r.getMessage() for r in caplog.records if "spelled" in r.getMessage()]
    assert warnings == [
        "dataset 'm': one label spelled 3 ways, each its own class: 'Cardiomegaly' (3 records), "
        "'cardiomegaly' (1 records), 'CARDIOMEGALY' (1 records); make the spelling one in the source"
    ]
