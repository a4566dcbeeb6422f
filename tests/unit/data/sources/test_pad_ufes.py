"""PAD-UFES-20: six diagnoses, patients and lesions, blank/UNK never guessed, images across imgs_part_N."""

from __future__ import annotations

import re

import pytest

from helpers.sources import pad_ufes
from helpers.sources.images import write_png
from helpers.sources.run import prepare
from medlens.errors import DataError


@pytest.fixture
def out(tmp_path):
    fixture = pad_ufes.build(tmp_path / "pad")
    return prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})


def test_every_row_with_its_diagnosis_patient_and_lesion(out):
    assert out.rejected == {}
    assert set(out.rows) == set(pad_ufes.EXPECTED)
    for img_id, (label, patient, study) in pad_ufes.EXPECTED.items():
        row = out.rows[img_id]
        assert (row["labels"], row["patient_id"], row["study_id"]) == ([label], patient, study)
        assert row["modality"] == "dermatology" and row["text_source"] == "from_labels"
        assert out.image(img_id).format == "JPEG" and out.image(img_id).mode == "RGB"  # RGBA flattened too


def test_text_states_recorded_facts_only(out):
    full = out.rows["PAT_46_881_14.png"]["text"].lower()
    assert "basal cell carcinoma" in full and "neck" in full and re.search(r"6 (x|by) 5 mm", full)
    assert "biopsy" in full
    unk = out.rows["PAT_771_1491_390.png"]["text"].lower()
    assert "grow" not in unk and "change" not in unk  # UNK answers are not stated either way
    blank = out.rows["PAT_1516_1765_530.png"]["text"].lower()
    assert "mm" not in blank and "biopsy" not in blank  # no diameters recorded, not biopsied


def test_meta_parses_booleans_numbers_and_spellings(out):
    excel = out.rows["PAT_9_1_100.png"]["meta"]
    assert excel["smoke"] is True and excel["drink"] is False and excel["fitzpatrick"] == 2
    assert excel["background_father"] == "BRAZIL" and excel["diameter_1_mm"] == 10.0
    assert out.rows["PAT_771_1491_390.png"]["meta"]["grew"] == "unknown"
    blank = out.rows["PAT_1516_1765_530.png"]["meta"]
    assert "smoke" not in blank and "gender" not in blank and blank["age"] == 8


def test_an_unknown_diagnosis_is_a_rejected_row(tmp_path):
    rows = list(pad_ufes.ROWS)
    rows[5] = rows[5].replace(",SEK,", ",DF,")
    fixture = pad_ufes.build(tmp_path / "pad", rows=rows)
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    assert set(out.rejected) == {"PAT_12_20_200.png"}
    rejected = out.rejected["PAT_12_20_200.png"]
    assert rejected["reason"] == "unknown label 'DF'" and "metadata.csv:7" in rejected["source_ref"]
    assert "expected one of ACK, BCC, BOD, MEL, NEV, SCC, SEK" in rejected["detail"]


def test_unextracted_archives_are_named(tmp_path):
    root = tmp_path / "pad"
    (root / "images").mkdir(parents=True)
    (root / "metadata.csv").write_text(pad_ufes.HEADER + "\n")
    (root / "images" / "imgs_part_1.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(
        DataError, match=r"no \.png images found; the archives \['imgs_part_1\.zip'\] are not extracted"
    ):
        prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(root)})


def test_non_finite_numbers_are_missing_values_not_text_or_a_crash(tmp_path):
    # a pandas re-save writes nan for blank cells; inf/1e999 overflowed int() and killed the dataset
    rows = list(pad_ufes.ROWS)
    rows[1] = rows[1].replace(",3.0,NECK,6.0,5.0,", ",nan,NECK,nan,nan,")
    rows[4] = rows[4].replace(",70,", ",inf,").replace(",2,CHEST,10,8,", ",-inf,CHEST,10,1e999,")
    fixture = pad_ufes.build(tmp_path / "pad", rows=rows)
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    assert out.rejected == {} and set(out.rows) == set(pad_ufes.EXPECTED)
    assert out.summary.read == len(pad_ufes.EXPECTED)
    for img_id in ("PAT_46_881_14.png", "PAT_9_1_100.png"):
        text, meta = out.rows[img_id]["text"], out.rows[img_id]["meta"]
        assert "nan" not in text.lower() and "inf" not in text.lower() and " mm" not in text
        assert not {"fitzpatrick", "diameter_2_mm"} & set(meta)
    assert "age" not in out.rows["PAT_9_1_100.png"]["meta"]
    assert out.rows["PAT_9_1_100.png"]["meta"]["diameter_1_mm"] == 10.0
    assert out.rows["PAT_46_881_14.png"]["meta"]["age"] == 55


def test_exported_empty_cells_are_missing_values_not_words_in_the_text(tmp_path):
    # `df.astype(str).to_csv()` writes "nan" for every blank cell; the text said "a skin lesion on the nan"
    rows = list(pad_ufes.ROWS)
    rows[0] = rows[0].replace(",ARM,", ",nan,").replace(",NEV,False,", ",NEV,nan,")
    rows[1] = rows[1].replace(",FEMALE,", ",nan,").replace("POMERANIA,POMERANIA", "nan,NaN")
    fixture = pad_ufes.build(tmp_path / "pad", rows=rows)
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    assert out.rejected == {} and set(out.rows) == set(pad_ufes.EXPECTED)
    for img_id in ("PAT_1516_1765_530.png", "PAT_46_881_14.png"):
        row = out.rows[img_id]
        assert "nan" not in row["text"].lower(), row["text"]
        assert "nan" not in str(row["meta"]).lower(), row["meta"]
    assert "itch" not in out.rows["PAT_1516_1765_530.png"]["meta"]


def test_an_image_listed_twice_with_another_diagnosis_is_rejected_on_both_rows(tmp_path):
    rows = [*pad_ufes.ROWS, pad_ufes.ROWS[0].replace(",NEV,", ",MEL,")]
    fixture = pad_ufes.build(tmp_path / "pad", rows=rows)
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    line = len(rows) + 1
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        "PAT_1516_1765_530.png": (
            "repeated id with different rows",
            f"img_id PAT_1516_1765_530.png is on lines 2, {line} with different values",
        )
    }
    assert out.summary.reasons == {"repeated id with different rows": 2}
    assert set(out.rows) == set(pad_ufes.EXPECTED) - {"PAT_1516_1765_530.png"}


def test_numbers_no_lesion_or_patient_can_have_are_missing_values(tmp_path, caplog):
    # the text said "It measures -6 x 5 mm" and the metadata held Fitzpatrick type 9
    rows = list(pad_ufes.ROWS)
    rows[1] = rows[1].replace(",3.0,NECK,6.0,5.0,", ",9.0,NECK,-6.0,5.0,").replace(",55,", ",430,")
    fixture = pad_ufes.build(tmp_path / "pad", rows=rows)
    with caplog.at_level("WARNING", logger="medlens.data.sources.pad_ufes"):
        out = prepare(
            tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)}
        )
    row = out.rows["PAT_46_881_14.png"]
    assert " mm" not in row["text"] and "-6" not in row["text"]
    assert not {"fitzpatrick", "diameter_1_mm", "age"} & set(row["meta"])
    assert row["meta"]["diameter_2_mm"] == 5.0
    assert any(
        "metadata.csv:3: diameter_1=-6.0, fitspatrick=9.0, age=430 out of range" in r.getMessage()
        for r in caplog.records
    )


def test_an_image_name_held_by_two_different_files_is_rejected_not_guessed(tmp_path):
    # images are found by name across imgs_part_1..3; the shallower of two different files was taken silently
    fixture = pad_ufes.build(tmp_path / "pad")
    other = fixture.root / "images" / "imgs_part_3" / "extra" / "PAT_46_881_14.png"
    write_png(other, seed=1, size=(64, 48))
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    bad = out.rejected["PAT_46_881_14.png"]
    assert bad["reason"] == "several different files with this name"
    assert bad["detail"].endswith(f"; {other}") and bad["detail"].count(";") == 1
    assert set(out.rows) == set(pad_ufes.EXPECTED) - {"PAT_46_881_14.png"}


def test_images_no_row_describes_are_named_in_a_warning(tmp_path, caplog):
    # an image metadata.csv does not list (a row deleted, a file added) was left out without a word
    fixture = pad_ufes.build(tmp_path / "pad")
    write_png(fixture.root / "images" / "imgs_part_2" / "PAT_999_1_1.png", seed=4, size=(64, 48))
    with caplog.at_level("WARNING", logger="medlens.data.sources.readers"):
        out = prepare(
            tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)}
        )
    assert set(out.rows) == set(pad_ufes.EXPECTED)
    assert [r.getMessage() for r in caplog.records if "are in no row of" in r.getMessage()] == [
        f"1 images are in no row of {fixture.root / 'metadata.csv'} and are not read (PAT_999_1_1.png)"
    ]
