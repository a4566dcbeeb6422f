"""CheXpert: Path prefix vs root, labels by uncertainty policy, views, patients, official train/valid split."""

from __future__ import annotations

import pytest

from helpers.sources import chexpert
from helpers.sources.images import write_jpeg
from helpers.sources.run import prepare
from medlens.data.sources.chexpert import _age, strip_prefix
from medlens.data.text_from_labels import load_templates
from medlens.errors import DataError


def run(tmp_path, **settings):
    fixture = chexpert.build(tmp_path / "archive")
    return prepare(
        tmp_path, "cx", {"source": "path", "adapter": "chexpert", "path": str(fixture.root), **settings}
    )


@pytest.mark.parametrize("policy, column", [("zeros", 0), ("ones", 1)])
def test_rows_labels_patients_and_split(tmp_path, policy, column):
    out = run(tmp_path, uncertain_policy=policy)
    assert set(out.rows) == set(chexpert.EXPECTED)
    for rel, expected in chexpert.EXPECTED.items():
        row = out.rows[rel]
        assert row["labels"] == expected[column], rel
        patient, study = rel.split("/")[1:3]
        assert (row["patient_id"], row["study_id"]) == (patient, f"{patient}/{study}")
        assert row["meta"]["official_split"] == ("val" if rel.startswith("valid/") else "train")
        assert row["text_source"] == "from_labels" and row["text"]


def test_a_row_with_every_label_blank_is_rejected_with_its_reason(tmp_path):
    out = run(tmp_path)
    assert set(out.rejected) == {chexpert.ALL_BLANK}
    assert out.rejected[chexpert.ALL_BLANK]["reason"] == "no findings recorded"
    assert out.rejected[chexpert.ALL_BLANK]["source_ref"].endswith("train.csv:7")


def test_ignore_policy_keeps_uncertain_findings_apart_and_hedges_them(tmp_path):
    out = run(tmp_path, uncertain_policy="ignore")
    row = out.rows["train/patient00002/study2/view1_frontal.jpg"]
    assert row["labels"] == ["Fracture", "Lung Opacity"]
    assert row["meta"]["uncertain"] == [
        "Cardiomegaly",
        "Edema",
        "Consolidation",
        "Atelectasis",
        "Pleural Effusion",
    ]
    assert any(w in row["text"].lower() for w in ("possible", "cannot be excluded", "borderline", "may be"))


def test_explicit_negatives_are_stated_in_the_text(tmp_path):
    out = run(tmp_path)
    entries = load_templates("chest_xray")["labels"]
    negative_sentences = {p for e in entries.values() for p in e.get("negative", ())}
    text = out.rows["valid/patient64541/study1/view1_frontal.jpg"]["text"]
    stated = [s for s in negative_sentences if s in text]
    # eight 0.0 findings, of which max_negatives (4) are spelled out; the default pool would give at most 3
    assert len(stated) == 4, text


def test_views_sex_and_age_pitfalls(tmp_path):
    out = run(tmp_path)
    assert out.rows["train/patient00002/study1/view2_lateral.jpg"]["view"] == "LATERAL"
    ll = out.rows["train/patient00003/study1/view1_lateral.jpg"]
    assert (
        ll["view"] == "LL" and ll["meta"]["frontal"] is True and "age" not in ll["meta"]
    )  # Age 0 is unknown
    assert out.rows["train/patient00004/study1/view2_frontal.jpg"]["meta"]["sex"] == "Unknown"
    assert out.rows["train/patient00001/study1/view1_frontal.jpg"]["meta"]["age"] == 68


def test_frontal_only_follows_the_frontal_lateral_column_not_the_file_name(tmp_path):
    out = run(tmp_path, frontal_only=True)
    filtered = {k for k, r in out.rejected.items() if r["reason"].startswith("filtered")}
    assert filtered == {"train/patient00002/study1/view2_lateral.jpg"}
    assert "train/patient00003/study1/view1_lateral.jpg" in out.rows


def test_path_prefix_is_stripped_for_both_versions():
    assert (
        strip_prefix("CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg")
        == "train/patient1/study1/view1_frontal.jpg"
    )
    assert strip_prefix("CheXpert-v1.0/valid/p/s/v.jpg") == "valid/p/s/v.jpg"


@pytest.mark.parametrize(
    "renamed, message",
    [
        ("Edemaa", r"missing label column 'Edema' \(found 'Edemaa': renamed\?\)"),
        ("cardiomegaly", r"missing label column 'Cardiomegaly' \(found 'cardiomegaly': renamed\?\)"),
    ],
)
def test_a_renamed_label_column_is_an_error_not_a_finding_silently_negative(tmp_path, renamed, message):
    # the audit: the column was skipped, so every image read as without that finding
    fixture = chexpert.build(tmp_path / "archive")
    train = fixture.root / "train.csv"
    header, rest = train.read_text().split("\n", 1)
    original = {"Edemaa": "Edema", "cardiomegaly": "Cardiomegaly"}[renamed]
    train.write_text(header.replace(f",{original},", f",{renamed},") + "\n" + rest)
    with pytest.raises(
        DataError, match=rf"train\.csv: row 1: {message}; expected a column for each of the 14"
    ):
        prepare(tmp_path, "cx", {"source": "path", "adapter": "chexpert", "path": str(fixture.root)})


def test_a_path_leaving_the_dataset_folder_is_a_rejected_row(tmp_path):
    # as for manifests and SLAKE: a Path of "../outside.jpg" was read from wherever it led
    fixture = chexpert.build(tmp_path / "archive")
    write_jpeg(tmp_path / "outside.jpg", seed=3, size=(40, 48))
    train = fixture.root / "train.csv"
    first = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    train.write_text(train.read_text().replace(first, "../outside.jpg"))
    settings = {"source": "path", "adapter": "chexpert", "path": str(fixture.root)}
    out = prepare(tmp_path, "cx", settings)
    assert (out.rejected["../outside.jpg"]["reason"], out.rejected["../outside.jpg"]["detail"]) == (
        "image outside the dataset folder",
        "../outside.jpg (allow_outside_paths: true reads it)",
    )
    assert "../outside.jpg" in prepare(tmp_path, "cx", {**settings, "allow_outside_paths": True}).rows


def test_an_image_on_two_rows_with_other_labels_is_rejected_on_both(tmp_path):
    fixture = chexpert.build(tmp_path / "archive")
    train = fixture.root / "train.csv"
    first = train.read_text().splitlines()[1]
    with open(train, "a") as f:
        f.write(first.replace(",1.0,,,,,,,,,0.0,", ",1.0,,,,,,,,,1.0,") + "\n")  # Pneumothorax 0.0 -> 1.0
    out = prepare(tmp_path, "cx", {"source": "path", "adapter": "chexpert", "path": str(fixture.root)})
    rel = "train/patient00001/study1/view1_frontal.jpg"
    assert (out.rejected[rel]["reason"], out.rejected[rel]["detail"]) == (
        "repeated id with different rows",
        f"train.csv: Path {chexpert.PREFIX}{rel} is on lines 2, 8 with different values",
    )
    assert out.summary.reasons["repeated id with different rows"] == 2 and rel not in out.rows


@pytest.mark.parametrize(
    "raw, age", [("68", 68), ("68.0", 68), ("0", None), ("0.0", None), ("", None), ("x", None)]
)
def test_age_reads_a_re_saved_float_and_zero_is_unknown(raw, age):
    assert _age(raw) == age  # "68.0" from a pandas re-save was dropped without a word
