"""Knee KL grades: Kaggle OAI (patients, sides, official split, auto_test not read) and Mendeley (expert consensus)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from helpers.sources import knee
from helpers.sources.run import prepare
from medlens.data.sources.knee import parse_oai_name

# OAI's auto_test/ repeats test/: each of its files is a rejected record, not a silent skip
AUTO_TEST = {
    rel.replace("test/", "auto_test/", 1): "copy: same bytes as its counterpart"
    for rel in knee.OAI
    if rel.startswith("test/")
}


def test_oai_rows_labels_patients_sides_and_split(tmp_path):
    fixture = knee.build_oai(tmp_path / "oai")
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    assert set(out.rows) == set(knee.OAI)  # auto_test (a copy of test) is not read, each file counted
    assert {k: r["reason"] for k, r in out.rejected.items()} == AUTO_TEST
    detail = out.rejected["auto_test/3/9003126L.png"]["detail"]
    assert detail == f"same bytes as {fixture.root / 'KneeXrayData' / 'test' / '3' / '9003126L.png'}"
    for rel, (label, patient, side, split) in knee.OAI.items():
        row = out.rows[rel]
        assert (row["labels"], row["patient_id"], row["meta"]["side"]) == ([label], patient, side)
        assert row["meta"]["official_split"] == split
        assert f"{side} knee" in row["text"].lower()
        assert row["modality"] == "knee_xray" and out.image(rel).mode == "L"
    assert out.rows["train/0/9001695L.png"]["study_id"] == "9001695L"


def test_oai_the_same_image_under_two_grades_is_rejected_not_kept_twice(tmp_path):
    # the audit: both copies were kept, one as KL0 and one as KL3 (the texts differ, so prepare saw no duplicate)
    fixture = knee.build_oai(tmp_path / "oai")
    tree = fixture.root / "KneeXrayData"
    (tree / "train" / "3").mkdir()
    shutil.copy(tree / "train" / "0" / "9001695L.png", tree / "train" / "3" / "9001695L.png")
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    copies = {"train/0/9001695L.png", "train/3/9001695L.png"}
    assert set(out.rows) == set(knee.OAI) - copies
    for rel in copies:
        assert (out.rejected[rel]["reason"], out.rejected[rel]["detail"]) == (
            "grade folders disagree",
            "the same bytes in several class folders: train/0/9001695L.png; train/3/9001695L.png",
        )


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


def test_oai_every_file_is_read_or_rejected_with_a_reason(tmp_path):
    # the audit: valid/ instead of val/, .bmp/.tif images and stray files were skipped without a count
    fixture = knee.build_oai(tmp_path / "oai")
    tree = fixture.root / "KneeXrayData"
    (tree / "val").rename(tree / "valid")
    Image.new("L", (32, 32), 90).save(tree / "train" / "2" / "9004175L.bmp")
    Image.new("L", (32, 32), 120).save(tree / "test" / "3" / "9004175R.tif")
    (tree / "train" / "2" / "notes.xyz").write_text("not an image")
    (tree / "train" / "README.txt").write_text("grades 0..4")
    (tree / "extra" / "0").mkdir(parents=True)
    Image.new("L", (32, 32), 60).save(tree / "extra" / "0" / "9009999L.png")
    (tree / "train" / "0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # junk: ignored, not data
    (tree / "Thumbs.db").write_bytes(b"\xd0\xcf")
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    kept = {rel.replace("val/", "valid/", 1) for rel in knee.OAI} | {
        "train/2/9004175L.bmp",
        "test/3/9004175R.tif",
    }
    assert set(out.rows) == kept
    assert out.rows["valid/1/9002430R.png"]["meta"]["official_split"] == "val"
    assert out.rows["train/2/9004175L.bmp"]["labels"] == ["KL2"]
    assert {k: r["reason"] for k, r in out.rejected.items()} == AUTO_TEST | {
        "train/2/notes.xyz": "unsupported image suffix .xyz",
        "train/README.txt": "not in a grade folder",
        "extra/0/9009999L.png": "unknown split folder 'extra' (expected train/val/test)",
    }
    assert (
        "expected one of .bmp, .dcm, .jpeg, .jpg, .png, .tif, .tiff, .webp"
        in (out.rejected["train/2/notes.xyz"]["detail"])
    )
    assert out.summary.read == len(kept) + 3 + len(AUTO_TEST)


def test_a_second_copy_of_the_oai_tree_is_rejected_file_by_file(tmp_path):
    fixture = knee.build_oai(tmp_path / "oai")
    shutil.copytree(fixture.root / "KneeXrayData", fixture.root / "copy" / "KneeXrayData")
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    assert set(out.rows) == set(knee.OAI)
    second = {f"copy/KneeXrayData/{rel}" for rel in [*knee.OAI, *AUTO_TEST]}
    assert {k: r["reason"] for k, r in out.rejected.items()} == AUTO_TEST | dict.fromkeys(
        second, "copy: same bytes as its counterpart"
    )


def test_val_beside_validation_reads_both_but_no_image_twice(tmp_path):
    # a tree with val/ and a validation/ copy of it read both: the same images twice in one split
    fixture = knee.build_oai(tmp_path / "oai")
    tree = fixture.root / "KneeXrayData"
    shutil.copytree(tree / "val", tree / "validation")
    Image.new("L", (32, 32), 140).save(tree / "validation" / "1" / "9009997L.png")  # only here: read
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    val = [rel for rel in knee.OAI if rel.startswith("val/")]
    assert set(out.rows) == set(knee.OAI) | {"validation/1/9009997L.png"}
    assert out.rows["validation/1/9009997L.png"]["meta"]["official_split"] == "val"
    copies = {rel.replace("val/", "validation/", 1): "copy: same bytes as its counterpart" for rel in val}
    assert {k: r["reason"] for k, r in out.rejected.items()} == AUTO_TEST | copies


def test_an_auto_test_that_is_not_a_copy_of_test_shows_what_differs(tmp_path):
    # auto_test/ was skipped unread on the strength of "it repeats test/"; a file that does not is named
    fixture = knee.build_oai(tmp_path / "oai")
    auto_test = fixture.root / "KneeXrayData" / "auto_test"
    Image.new("L", (32, 32), 200).save(auto_test / "0" / "9009998R.png")  # in auto_test/ only
    Image.new("L", (32, 32), 10).save(auto_test / "3" / "9003126L.png")  # other bytes than test/'s
    out = prepare(tmp_path, "knee", {"source": "path", "adapter": "knee_kl_oai", "path": str(fixture.root)})
    assert set(out.rows) == set(knee.OAI)
    reasons = {k: r["reason"] for k, r in out.rejected.items()}
    assert reasons == AUTO_TEST | {
        "auto_test/0/9009998R.png": "copy: no counterpart",
        "auto_test/3/9003126L.png": "copy: other bytes than its counterpart",
    }
    assert "has no 9009998R.png" in out.rejected["auto_test/0/9009998R.png"]["detail"]


def test_mendeley_files_that_are_not_images_of_a_grade_folder_are_rejected(tmp_path):
    fixture = knee.build_mendeley(tmp_path / "m")
    expert = fixture.root / knee.BASE / "MedicalExpert-I"
    Image.new("L", (48, 26), 70).save(expert / "4Severe" / "SevereG4 (9).bmp")
    (expert / "4Severe" / "SevereG4 (9).xyz").write_bytes(b"??")
    (expert / "loose.png").write_bytes(b"??")
    out = prepare(
        tmp_path, "knee", {"source": "path", "adapter": "knee_kl_mendeley", "path": str(fixture.root)}
    )
    assert out.rows[f"{knee.BASE}/MedicalExpert-I/4Severe/SevereG4 (9).bmp"]["labels"] == ["KL4"]
    assert out.rejected[f"{knee.BASE}/MedicalExpert-I/4Severe/SevereG4 (9).xyz"]["reason"] == (
        "unsupported image suffix .xyz"
    )
    assert out.rejected[f"{knee.BASE}/MedicalExpert-I/loose.png"]["reason"] == "not in a grade folder"
    assert out.summary.read == len(knee.MENDELEY) + 3


def test_mendeley_images_outside_the_expert_folders_are_rejected_not_skipped(tmp_path):
    # the audit: a folder renamed "Medical Expert 1" was never read and none of its images was counted
    fixture = knee.build_mendeley(tmp_path / "m")
    base = fixture.root / knee.BASE
    (base / "MedicalExpert-I").rename(base / "Medical Expert 1")
    (base / "notes.txt").write_text("grades by two experts")
    out = prepare(
        tmp_path, "knee", {"source": "path", "adapter": "knee_kl_mendeley", "path": str(fixture.root)}
    )
    renamed = {rel.replace("MedicalExpert-I/", "Medical Expert 1/") for rel in knee.MENDELEY if "-I/" in rel}
    outside = {k for k, r in out.rejected.items() if r["reason"] == "not in a MedicalExpert folder"}
    assert outside == {f"{knee.BASE}/{rel}" for rel in renamed}
    assert out.summary.read == len(knee.MENDELEY)


def test_a_file_that_cannot_be_read_while_grouping_does_not_stop_the_dataset(tmp_path, monkeypatch):
    # hashing for the duplicate check opened every file; one OSError (EIO) was a traceback for the whole set
    from medlens.data.sources import folders

    fixture = knee.build_mendeley(tmp_path / "m")

    def failing(path, *args, **kwargs):
        if str(path).endswith("SevereG4 (1).png"):
            raise OSError(5, "Input/output error")
        return open(path, *args, **kwargs)

    monkeypatch.setattr(folders, "open", failing, raising=False)
    out = prepare(
        tmp_path, "knee", {"source": "path", "adapter": "knee_kl_mendeley", "path": str(fixture.root)}
    )
    assert out.summary.read == len(knee.MENDELEY)
    assert out.rows[f"{knee.BASE}/MedicalExpert-I/4Severe/SevereG4 (1).png"]["meta"]["sha1"].startswith(
        "unreadable:"
    )
