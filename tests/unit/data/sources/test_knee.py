"""Knee KL grades: Kaggle OAI (patients, sides, official split, auto_test skipped) and Mendeley (expert consensus)."""

from __future__ import annotations

import pytest

from helpers.sources import knee
from helpers.sources.run import prepare
from medlens.data.sources.knee import parse_oai_name


def test_oai_rows_labels_patients_sides_and_split(tmp_path):
    fixture = knee.build_oai(tmp_path / "oai")
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    assert out.rejected == {}
    assert set(out.rows) == set(knee.OAI)  # auto_test (a copy of test) is not read
    for rel, (label, patient, side, split) in knee.OAI.items():
        row = out.rows[rel]
        assert (row["labels"], row["patient_id"], row["meta"]["side"]) == ([label], patient, side)
        assert row["meta"]["official_split"] == split
        assert f"{side} knee" in row["text"].lower()
        assert row["modality"] == "knee_xray" and out.image(rel).mode == "L"
    assert out.rows["train/0/9001695L.png"]["study_id"] == "9001695L"


def test_mendeley_keeps_one_row_per_image_and_rejects_duplicates_and_disagreements(tmp_path):
    fixture = knee.build_mendeley(tmp_path / "m")
    out = prepare(
        tmp_path, "knee", {"source": "path", "adapter": "knee_kl_mendeley", "path": str(fixture.root)}
    )
    assert {k: r["labels"] for k, r in out.rows.items()} == {k: [v] for k, v in knee.MENDELEY_KEPT.items()}
    assert {k: r["reason"] for k, r in out.rejected.items()} == knee.MENDELEY_REJECTED
    disagree = out.rejected[f"{knee.BASE}/MedicalExpert-I/1Doubtful/DoubtfulG1 (66).png"]["detail"]
    assert disagree == "MedicalExpert-I: 1Doubtful; MedicalExpert-II: 2Mild"
    duplicate = out.rejected[f"{knee.BASE}/MedicalExpert-I/3Moderate/ModerateG3 (5).png"]["detail"]
    assert (
        "same bytes as Digital Knee X-ray Images/Knee X-ray Images/MedicalExpert-I/3Moderate/ModerateG3 (2).png"
        in duplicate
    )
    assert out.summary.read == len(knee.MENDELEY)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("9001695L.png", ("9001695", "left")),
        ("9002430r.png", ("9002430", "right")),
        ("NormalG0 (1).png", (None, None)),
    ],
)
def test_parse_oai_name(name, expected):
    assert parse_oai_name(name) == expected
