"""NIH ChestX-ray14: both header variants, Kaggle/Box/sample layouts, CheXpert-14 mapping, official split."""

from __future__ import annotations

import re

import pytest

from helpers.sources import nih
from helpers.sources.run import prepare
from medlens.data.sources.nih import parse_age
from medlens.errors import DataError


@pytest.mark.parametrize("layout", ["kaggle", "box"])
def test_full_set_rows_labels_patients_in_both_layouts(tmp_path, layout):
    fixture = nih.build_full(tmp_path / "nih", layout=layout)
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert out.rejected == {}
    assert set(out.rows) == set(nih.FULL_EXPECTED)
    for native_id, (labels, natives, patient, _) in nih.FULL_EXPECTED.items():
        row = out.rows[native_id]
        assert row["labels"] == labels, native_id
        assert row["meta"]["native_labels"] == natives, native_id
        assert row["patient_id"] == patient
        assert row["text_source"] == "from_labels" and row["text"]
    follow = [
        out.rows["00000001_000.png"]["meta"]["follow_up"],
        out.rows["00000001_001.png"]["meta"]["follow_up"],
    ]
    assert follow == [0, 1]
    sex = out.rows["00000003_000.png"]["meta"]["sex"]
    assert sex == "F"  # read from `Patient Gender` (Kaggle) or `Patient Sex` (Box)
    assert out.rows["00000001_000.png"]["meta"]["original_width"] == 2682.0
    assert out.rows["00000001_000.png"]["meta"]["original_height"] == 2749.0


def test_official_split_lists_and_boxes_give_split_and_side(tmp_path):
    fixture = nih.build_full(tmp_path / "nih", layout="kaggle")
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    for native_id, (*_, split) in nih.FULL_EXPECTED.items():
        assert out.rows[native_id]["meta"]["official_split"] == split
    train_patients = {r["patient_id"] for r in out.rows.values() if r["meta"]["official_split"] == "train"}
    test_patients = {r["patient_id"] for r in out.rows.values() if r["meta"]["official_split"] == "test"}
    assert not train_patients & test_patients
    boxed = out.rows["00013118_008.png"]
    assert {b["label"] for b in boxed["meta"]["bboxes"]} == {"Atelectasis", "Infiltrate"}
    # the Atelectasis box lies on the image's left, which is the patient's right; the Infiltrate box the other way
    assert re.search(r"right (basal )?atelectasis", boxed["text"].lower())
    assert re.search(r"left (pulmonary )?infiltrat", boxed["text"].lower())


def test_sample_reads_nnny_ages_and_plain_size_columns(tmp_path):
    fixture = nih.build_sample(tmp_path / "sample")
    out = prepare(
        tmp_path, "s", {"source": "path", "adapter": "nih_chest_xray_sample", "path": str(fixture.root)}
    )
    assert out.rejected == {}
    assert set(out.rows) == set(nih.SAMPLE_EXPECTED)
    for native_id, (labels, patient, age) in nih.SAMPLE_EXPECTED.items():
        row = out.rows[native_id]
        assert (row["labels"], row["patient_id"], row["meta"]["age"]) == (labels, patient, age)
        assert "official_split" not in row["meta"]  # the sample has no split lists
    assert out.rows["00000013_005.png"]["meta"]["original_width"] == 3056.0


@pytest.mark.parametrize(
    "raw, years",
    [("57", 57.0), ("57.0", 57.0), ("060Y", 60.0), ("006M", 0.5), ("", None), ("abc", None), ("5.5", None)],
)
def test_parse_age(raw, years):
    assert parse_age(raw) == years


def test_an_image_in_both_official_split_lists_is_rejected(tmp_path):
    # the audit: listed in test_list.txt and train_val_list.txt, the image silently went to test
    fixture = nih.build_full(tmp_path / "nih", layout="kaggle")
    with open(fixture.root / "train_val_list.txt", "a") as f:
        f.write("00000003_000.png\n")
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        "00000003_000.png": (
            "in both official split lists",
            "00000003_000.png is in test_list.txt and train_val_list.txt",
        )
    }
    assert set(out.rows) == set(nih.FULL_EXPECTED) - {"00000003_000.png"}
    assert out.summary.read == len(nih.FULL_EXPECTED)


def test_an_image_index_with_a_latin1_byte_is_a_rejected_row_not_a_crash(tmp_path):
    # the audit: the row was rejected, then writing its id to rejected.csv raised UnicodeEncodeError for the job
    fixture = nih.build_full(tmp_path / "nih", layout="box")
    data = fixture.csv.read_bytes().replace(b"00000002_000.png,", b"00000002_00\xe9.png,")
    fixture.csv.write_bytes(data)
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert {k: r["reason"] for k, r in out.rejected.items()} == {
        "00000002_00\\xe9.png": "non-UTF-8 bytes in row"
    }
    assert set(out.rows) == set(nih.FULL_EXPECTED) - {"00000002_000.png"}


def test_a_box_for_a_finding_the_image_does_not_list_is_not_described(tmp_path):
    # the audit: a box labelled "Covid" (or with a Latin-1 byte) stopped the whole dataset with a ConfigError
    # about the text templates; a box for a finding the row does not list put that finding's side in the text
    fixture = nih.build_full(tmp_path / "nih", layout="kaggle")
    with open(fixture.root / "BBox_List_2017.csv", "ab") as f:
        f.write(b"00000002_000.png,Covid,100.0,500.0,80.0,80.0,,,\n")
        f.write(b"00000001_000.png,Mass,100.0,500.0,80.0,80.0,,,\n")
        f.write(b"00000001_000.png,Atel\xe9ctasis,100.0,500.0,80.0,80.0,,,\n")
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert out.rejected == {} and set(out.rows) == set(nih.FULL_EXPECTED)
    assert "mass" not in out.rows["00000001_000.png"]["text"].lower()
    assert "atelecta" not in out.rows["00000001_000.png"]["text"].lower()


def test_no_finding_beside_a_finding_is_a_contradiction_not_two_labels(tmp_path):
    fixture = nih.build_full(tmp_path / "nih", layout="box")
    data = fixture.csv.read_text().replace(
        "00000002_000.png,No Finding,", "00000002_000.png,No Finding|Mass,"
    )
    fixture.csv.write_text(data)
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        "00000002_000.png": ("contradictory labels", "No Finding|Mass: No Finding with a finding")
    }


def test_an_image_listed_twice_with_other_labels_is_rejected_on_both_rows(tmp_path):
    # the first row was kept and the second rejected as a duplicate id: whichever came first set the labels
    fixture = nih.build_full(tmp_path / "nih", layout="box")
    with open(fixture.csv, "a") as f:
        f.write("00000002_000.png,Mass,0,2,80,M,PA,2500,2048,0.171,0.171\n")  # line 8; line 4 says No Finding
        f.write(nih.FULL_ROWS[0] + "\n")  # an identical repeat: read once
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert {(k, r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        (
            "00000002_000.png",
            "repeated id with different rows",
            "Image Index 00000002_000.png is on lines 4, 8 with different values",
        ),
        ("00000001_000.png", "duplicate id", "nih/00000001_000.png"),
    }
    assert out.summary.reasons["repeated id with different rows"] == 2
    assert set(out.rows) == set(nih.FULL_EXPECTED) - {"00000002_000.png"}


def test_a_split_list_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    # the audit: a list re-saved as UTF-16 matched no image, and every image silently lost its official split
    fixture = nih.build_full(tmp_path / "nih", layout="kaggle")
    test_list = fixture.root / "test_list.txt"
    test_list.write_bytes(test_list.read_text().encode("utf-16"))
    with pytest.raises(DataError, match=r"test_list\.txt: row 1: byte b'\\xff' at offset 0 is not UTF-8"):
        prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})


def test_split_lists_with_bom_crlf_or_folders_name_the_same_images(tmp_path):
    fixture = nih.build_full(tmp_path / "nih", layout="kaggle")
    test_list = fixture.root / "test_list.txt"
    names = test_list.read_text().split()
    test_list.write_bytes(b"\xef\xbb\xbf" + "".join(f"images_002/images/{n}\r\n" for n in names).encode())
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    assert {k for k, r in out.rows.items() if r["meta"].get("official_split") == "test"} == set(names)
