"""IU X-ray: Kaggle CSV form (findings + impression, Problems -> CheXpert-14) and R2Gen form (its split)."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.sources import iu_xray
from helpers.sources.images import write_png
from helpers.sources.run import prepare
from medlens.errors import DataError


def test_kaggle_form_one_row_per_image_with_the_study_report(tmp_path):
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert out.rejected == {}
    assert set(out.rows) == {name for _, name, _ in iu_xray.PROJECTIONS}  # uid 5 has no image: no record
    for uid, name, projection in iu_xray.PROJECTIONS:
        row = out.rows[name]
        labels, sections = iu_xray.KAGGLE_EXPECTED[uid]
        assert row["labels"] == labels and row["meta"]["report_sections"] == sections, name
        # each section apart, for ReXrank's section_findings / section_impression
        assert list(row["meta"]["sections"]) == sections, name
        assert " ".join(row["meta"]["sections"].values()) == row["text"], name
        assert row["patient_id"] == uid and row["text_source"] == "report"
        assert row["view"] == ("FRONTAL" if projection == "Frontal" else "LATERAL")
    report_1 = out.rows["1_IM-0001-4001.dcm.png"]["text"]
    assert report_1.startswith("The cardiac silhouette") and report_1.endswith("Normal chest x-XXXX.")
    assert (
        out.rows["3_IM-1384-2001.dcm.png"]["text"] == "Left basilar subsegmental atelectasis versus opacity."
    )
    assert out.rows["2_IM-0652-1001.dcm.png"]["meta"]["native_labels"] == ["Cardiomegaly", "Pulmonary Artery"]


def test_kaggle_form_frontal_only_rejects_laterals_with_a_count(tmp_path):
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    out = prepare(
        tmp_path,
        "iu",
        {"source": "path", "adapter": "iu_xray", "path": str(fixture.root), "frontal_only": True},
    )
    laterals = {name for _, name, p in iu_xray.PROJECTIONS if p == "Lateral"}
    assert set(out.rejected) == laterals
    assert all(r["reason"].startswith("filtered: view LATERAL") for r in out.rejected.values())
    assert out.summary.reasons == {"filtered: view LATERAL is not frontal (frontal_only)": len(laterals)}


def test_r2gen_form_keeps_its_split_and_groups_by_report(tmp_path):
    fixture = iu_xray.build_r2gen(tmp_path / "data")
    out = prepare(tmp_path, "r2", {"source": "path", "adapter": "iu_xray_r2gen", "path": str(fixture.root)})
    assert out.rejected == {}
    expected = {
        rel: (split, e["id"])
        for split, entries in iu_xray.ANNOTATION.items()
        for e in entries
        for rel in e["image_path"]
    }
    assert set(out.rows) == set(expected)
    for rel, (split, study) in expected.items():
        row = out.rows[rel]
        assert row["meta"]["official_split"] == split and row["study_id"] == study
        assert row["patient_id"] == study.split("_")[0]
    assert out.rows["CXR3_1_IM-1384/1.png"]["patient_id"] == "CXR3"


def test_r2gen_entry_whose_split_field_disagrees_keeps_its_list_and_is_named(tmp_path, caplog):
    # R2Gen's loader reads ann["train"]: the list decides; an edited "split" field must not pass unseen
    edited = json.loads(json.dumps(iu_xray.ANNOTATION))
    edited["train"][1]["split"] = "test"
    fixture = iu_xray.build_r2gen(tmp_path / "data", annotation=edited)
    with caplog.at_level("WARNING"):
        out = prepare(
            tmp_path, "r2", {"source": "path", "adapter": "iu_xray_r2gen", "path": str(fixture.root)}
        )
    study = edited["train"][1]["id"]
    assert {out.rows[rel]["meta"]["official_split"] for rel in edited["train"][1]["image_path"]} == {"train"}
    assert "1 entries have a 'split' field other than the list" in caplog.text
    assert f"train[1] ({study}) says split 'test'" in caplog.text


def test_r2gen_annotation_with_a_renamed_key_is_refused(tmp_path):
    renamed = {
        "train": iu_xray.ANNOTATION["train"],
        "val": iu_xray.ANNOTATION["val"],
        "testing": iu_xray.ANNOTATION["test"],
    }
    fixture = iu_xray.build_r2gen(tmp_path / "data", annotation=renamed)
    with pytest.raises(
        DataError,
        match=r"annotation\.json.*top-level keys are \['testing', 'train', 'val'\]"
        r".*expected an object with the lists 'train', 'val' and 'test'",
    ):
        prepare(tmp_path, "r2", {"source": "path", "adapter": "iu_xray_r2gen", "path": str(fixture.root)})


def test_r2gen_entry_without_image_list_is_a_rejected_row(tmp_path):
    broken = json.loads(json.dumps(iu_xray.ANNOTATION))
    broken["train"][1]["image_path"] = "CXR1000_IM-0003-1001/0.png"
    fixture = iu_xray.build_r2gen(tmp_path / "data", annotation=broken)
    out = prepare(tmp_path, "r2", {"source": "path", "adapter": "iu_xray_r2gen", "path": str(fixture.root)})
    assert out.rejected["train[1]"]["reason"] == "malformed entry"
    assert "annotation.json:train[1]" in out.rejected["train[1]"]["source_ref"]


def _append_report(fixture, row):
    with open(fixture.root / "indiana_reports.csv", "a", newline="") as f:
        csv.writer(f).writerow(row)


def test_a_uid_repeated_with_a_different_report_rejects_its_images_naming_both_lines(tmp_path):
    # the audit: the later row silently replaced the earlier report of the same uid
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    _append_report(fixture, [*iu_xray.REPORTS[1][:-1], "Large right pleural effusion."])  # uid 2, line 7
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    uid_2 = {name for uid, name, _ in iu_xray.PROJECTIONS if uid == "2"}
    assert set(out.rejected) == uid_2 and len(out.rows) == len(iu_xray.PROJECTIONS) - len(uid_2)
    reports = fixture.root / "indiana_reports.csv"
    for name in uid_2:
        assert out.rejected[name]["reason"] == "repeated uid with different reports"
        assert out.rejected[name]["detail"] == f"{reports}:3: uid 2 has different rows on lines 3, 7"
    assert out.summary.read == len(iu_xray.PROJECTIONS)


def test_a_uid_repeated_with_the_same_report_is_read_once(tmp_path):
    # an identical repeat holds no second report to choose from, so nothing is lost by keeping it once
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    _append_report(fixture, iu_xray.REPORTS[0])
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert out.rejected == {} and set(out.rows) == {name for _, name, _ in iu_xray.PROJECTIONS}


def test_an_image_whose_report_row_is_malformed_points_at_that_row(tmp_path):
    # the audit: the images were rejected as "uid 3 is not in indiana_reports.csv"
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    reports = fixture.root / "indiana_reports.csv"
    lines = reports.read_bytes().decode().split("\r\n")
    assert lines[3].startswith("3,")
    lines[3] = '3,Opacity,Opacity,Xray Chest,"rib pain never closed,,,Left basilar opacity.'
    reports.write_bytes("\r\n".join(lines).encode())
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert set(out.rejected) == {"3_IM-1384-2001.dcm.png"}
    bad = out.rejected["3_IM-1384-2001.dcm.png"]
    assert bad["reason"] == "report row malformed"
    assert bad["detail"].startswith(
        f"uid 3: its report row {reports}:4 (malformed record: a quote opened in this record is never closed"
    )
    assert len(out.rows) == len(iu_xray.PROJECTIONS) - 1  # uid 4 after the broken row is still read


def test_a_section_exported_as_nan_is_empty_not_report_text(tmp_path):
    # a table re-saved with `df.astype(str)` writes "nan" for the 514 empty findings: the report read "nan Left..."
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    reports = fixture.root / "indiana_reports.csv"
    with open(reports, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        w.writerows([[c or "nan" for c in row] for row in iu_xray.REPORTS])
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert out.rejected == {}
    row = out.rows["3_IM-1384-2001.dcm.png"]
    assert row["text"] == "Left basilar subsegmental atelectasis versus opacity."
    assert row["meta"]["report_sections"] == ["impression"] and "comparison" not in row["meta"]
    assert out.rows["4_IM-2050-1001-0001.dcm.png"]["meta"]["report_sections"] == ["findings"]


def test_an_r2gen_image_path_leaving_the_dataset_folder_is_a_rejected_row(tmp_path):
    # as for manifests and SLAKE: "../../../outside.png" was read from wherever it led
    changed = json.loads(json.dumps(iu_xray.ANNOTATION))
    changed["train"][0]["image_path"][1] = "../../../outside.png"  # images/ -> iu_xray/ -> data/ -> tmp_path
    fixture = iu_xray.build_r2gen(tmp_path / "data", annotation=changed)
    write_png(tmp_path / "outside.png", seed=9, size=(40, 44))
    settings = {"source": "path", "adapter": "iu_xray_r2gen", "path": str(fixture.root)}
    out = prepare(tmp_path, "r2", settings)
    assert (
        out.rejected["../../../outside.png"]["reason"],
        out.rejected["../../../outside.png"]["detail"],
    ) == (
        "image outside the dataset folder",
        "../../../outside.png (allow_outside_paths: true reads it)",
    )
    assert "../../../outside.png" in prepare(tmp_path, "r2", {**settings, "allow_outside_paths": True}).rows


def test_an_image_under_two_uids_is_rejected_on_both_rows(tmp_path):
    # the image took the report of whichever uid came first; the other row was a "duplicate id"
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    with open(fixture.root / "indiana_projections.csv", "a", newline="") as f:
        csv.writer(f).writerow(["2", "1_IM-0001-4001.dcm.png", "Frontal"])
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        "1_IM-0001-4001.dcm.png": (
            "repeated id with different rows",
            f"indiana_projections.csv: filename 1_IM-0001-4001.dcm.png is on lines 2, {len(iu_xray.PROJECTIONS) + 2} "
            "with different values",
        )
    }
    assert out.summary.reasons == {"repeated id with different rows": 2}


def test_uids_re_saved_as_floats_still_find_their_reports(tmp_path):
    # a reports table re-saved through pandas writes uid 1.0; every image was "no report for this image"
    fixture = iu_xray.build_kaggle(tmp_path / "iu")
    reports = fixture.root / "indiana_reports.csv"
    with open(reports, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        w.writerows([[f"{row[0]}.0", *row[1:]] for row in iu_xray.REPORTS])
    out = prepare(tmp_path, "iu", {"source": "path", "adapter": "iu_xray", "path": str(fixture.root)})
    assert out.rejected == {} and set(out.rows) == {name for _, name, _ in iu_xray.PROJECTIONS}
    assert out.rows["3_IM-1384-2001.dcm.png"]["patient_id"] == "3"
