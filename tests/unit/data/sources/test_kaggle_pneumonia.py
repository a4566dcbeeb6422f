"""chest_xray_pneumonia: folder labels and splits, three naming schemes, nested copy rejected, junk ignored."""

from __future__ import annotations

import os
import shutil

import pytest
from PIL import Image

from helpers.sources import pneumonia
from helpers.sources.run import prepare
from medlens.data.sources.kaggle_pneumonia import parse_filename


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pneumonia")
    fixture = pneumonia.build(tmp / "data")
    return fixture, prepare(
        tmp, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )


def _nested_copy(kept) -> dict[str, str]:
    """The zip's nested duplicate tree: each file rejected as a copy of the one read."""
    return {f"chest_xray/chest_xray/{rel}": "copy: same bytes as its counterpart" for rel in kept}


def test_every_image_of_one_tree_is_kept_with_its_label_patient_and_split(result):
    fixture, out = result
    assert set(out.rows) == set(fixture.expected)  # the nested duplicate, __MACOSX and .DS_Store are not read
    assert {k: r["reason"] for k, r in out.rejected.items()} == _nested_copy(fixture.expected)
    for native_id, (labels, patient, split) in fixture.expected.items():
        row = out.rows[native_id]
        assert row["labels"] == labels, native_id
        assert row["patient_id"] == patient, native_id
        assert row["meta"]["official_split"] == split, native_id
        assert row["text_source"] == "from_labels" and row["modality"] == "chest_xray"


def test_same_basename_in_two_splits_and_person1_in_train_and_test_stay_apart(result):
    _, out = result
    assert (
        out.rows["train/NORMAL/IM-0001-0001.jpeg"]["patient_id"]
        != out.rows["test/NORMAL/IM-0001-0001.jpeg"]["patient_id"]
    )
    assert out.rows["train/PNEUMONIA/person1_bacteria_1.jpeg"]["patient_id"] == "train/person1"
    assert out.rows["test/PNEUMONIA/person1_virus_6.jpeg"]["patient_id"] == "test/person1"


def test_subtype_from_the_file_name_reaches_meta_and_text(result):
    _, out = result
    for native_id, subtype in pneumonia.SUBTYPES.items():
        row = out.rows[native_id]
        assert row["meta"]["pneumonia_type"] == subtype
        assert "pneumonia" in row["text"].lower()
    assert "pneumonia_type" not in out.rows["train/NORMAL/IM-0115-0001.jpeg"]["meta"]


def test_rgb_and_tiny_images_are_stored_as_grey_png_without_enlarging(result):
    _, out = result
    rgb = out.image(pneumonia.RGB_FILE)
    assert rgb.format == "PNG" and rgb.mode == "L"
    tiny = out.image(pneumonia.TINY_FILE)
    assert tiny.size == (18, 14)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("IM-0115-0001.jpeg", ("IM-0115", None)),
        ("IM-0005-0001-0002.jpeg", ("IM-0005", None)),
        ("NORMAL2-IM-0262-0001.jpeg", ("NORMAL2-IM-0262", None)),
        ("person23_bacteria_76.jpeg", ("person23", "bacterial")),
        ("person1_virus_6.jpeg", ("person1", "viral")),
        ("VIRUS-1049278-0002.jpeg", ("1049278", "viral")),
        ("scan.jpeg", (None, None)),
    ],
)
def test_parse_filename_knows_every_naming_scheme(name, expected):
    assert parse_filename(name) == expected


def test_every_file_in_the_tree_is_read_or_rejected_with_a_reason(tmp_path):
    # the audit: a validation/ folder and .bmp images were skipped without a count
    fixture = pneumonia.build(tmp_path / "data")
    (fixture.tree / "val").rename(fixture.tree / "validation")
    (fixture.tree / "chest_xray" / "val").rename(fixture.tree / "chest_xray" / "validation")
    Image.new("L", (40, 40), 80).save(fixture.tree / "train" / "NORMAL" / "IM-0500-0001.bmp")
    (fixture.tree / "train" / "NORMAL" / "IM-0500-0002.xyz").write_bytes(b"??")
    (fixture.tree / "train" / "labels.txt").write_text("NORMAL, PNEUMONIA")
    (fixture.tree / "train" / "NORMAL" / "Thumbs.db").write_bytes(b"\xd0\xcf")  # junk: ignored, not data
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    kept = {rel.replace("val/", "validation/", 1) for rel in fixture.expected} | {
        "train/NORMAL/IM-0500-0001.bmp"
    }
    assert set(out.rows) == kept
    assert out.rows["validation/PNEUMONIA/person1946_bacteria_4874.jpeg"]["meta"]["official_split"] == "val"
    assert out.rows["train/NORMAL/IM-0500-0001.bmp"]["labels"] == ["No Finding"]
    copies = _nested_copy(kept - {"train/NORMAL/IM-0500-0001.bmp"})
    assert {k: r["reason"] for k, r in out.rejected.items()} == copies | {
        "train/NORMAL/IM-0500-0002.xyz": "unsupported image suffix .xyz",
        "train/labels.txt": "not in a class folder",
    }
    assert out.summary.read == len(kept) + 2 + len(copies)


def test_a_nested_copy_with_more_images_is_read_and_no_file_is_counted_twice(tmp_path):
    # the review: with the inner tree read, the outer "copy" walked into it and rejected every kept file too
    fixture = pneumonia.build(tmp_path / "data")
    (fixture.tree / "train" / "NORMAL" / "IM-0115-0001.jpeg").unlink()  # a partial unzip of the outer tree
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    assert set(out.rows) == set(fixture.expected)  # the inner tree, complete, is read
    outer = {f"chest_xray/{rel}" for rel in fixture.expected} - {"chest_xray/train/NORMAL/IM-0115-0001.jpeg"}
    assert {k: r["reason"] for k, r in out.rejected.items()} == dict.fromkeys(
        outer, "copy: same bytes as its counterpart"
    )
    assert out.summary.read == 2 * len(fixture.expected) - 1  # every image file on disk, once


def test_a_file_name_that_is_not_utf8_is_a_rejected_row_not_a_crash(tmp_path):
    # a zip made on Windows names files in its code page; the rejected row's id stopped the job when written
    fixture = pneumonia.build(tmp_path / "data")
    folder = fixture.root / "chest_xray" / "train" / "NORMAL"
    os.rename(folder / "IM-0115-0001.jpeg", os.fsencode(folder) + b"/IM-0115-0001\xe9.jpeg")
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    assert out.rejected["train/NORMAL/IM-0115-0001\\xe9.jpeg"]["reason"] == "invalid id"
    assert set(out.rows) == set(fixture.expected) - {"train/NORMAL/IM-0115-0001.jpeg"}


def test_the_same_image_under_normal_and_pneumonia_is_rejected_not_kept_twice(tmp_path):
    # both copies were kept, one labelled normal and one pneumonia (their texts differ, so no duplicate)
    fixture = pneumonia.build(tmp_path / "data")
    train = fixture.root / "chest_xray" / "train"
    shutil.copy(train / "NORMAL" / "IM-0115-0001.jpeg", train / "PNEUMONIA" / "IM-0115-0001.jpeg")
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    copies = {"train/NORMAL/IM-0115-0001.jpeg", "train/PNEUMONIA/IM-0115-0001.jpeg"}
    for rel in copies:
        assert (out.rejected[rel]["reason"], out.rejected[rel]["detail"]) == (
            "class folders disagree",
            "the same bytes in several class folders: " + "; ".join(sorted(copies)),
        )
    assert set(out.rows) == set(fixture.expected) - copies


def test_a_file_that_cannot_be_compared_with_its_copy_does_not_stop_the_dataset(tmp_path, monkeypatch):
    # the nested copy is compared byte for byte with the tree read; one OSError (EIO) was a traceback
    import filecmp

    fixture = pneumonia.build(tmp_path / "data")
    cmp = filecmp.cmp

    def failing(a, b, shallow=True):
        if str(a).endswith("person23_bacteria_76.jpeg"):
            raise OSError(5, "Input/output error")
        return cmp(a, b, shallow=shallow)

    monkeypatch.setattr(filecmp, "cmp", failing)
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    assert set(out.rows) == set(fixture.expected)
    nested = "chest_xray/chest_xray/train/PNEUMONIA/person23_bacteria_76.jpeg"
    assert (out.rejected[nested]["reason"], out.rejected[nested]["detail"]) == (
        "copy: cannot be compared",
        f"Input/output error comparing it with {fixture.root / 'chest_xray/train/PNEUMONIA/person23_bacteria_76.jpeg'}",
    )
