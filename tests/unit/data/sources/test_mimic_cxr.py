"""MIMIC-CXR-JPG: FINDINGS/IMPRESSION sections, CheXpert labels by policy, official split with validate -> val."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.sources import mimic
from helpers.sources.mimic import D1, D2, D3, D4, D5, D6
from helpers.sources.run import prepare
from medlens.config import SplitConfig
from medlens.data.sources.mimic_cxr import parse_study_time, report_text
from medlens.data.split import split_pairs
from medlens.errors import DataError


def run(tmp_path, **settings):
    fixture = mimic.build(tmp_path / "mimic", gzipped=settings.pop("gzipped", True))
    return prepare(
        tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root), **settings}
    )


@pytest.mark.parametrize("gzipped", [True, False])
def test_every_image_is_a_row_with_its_study_report_patient_and_split(tmp_path, gzipped):
    out = run(tmp_path, gzipped=gzipped)
    assert out.rejected == {}
    assert set(out.rows) == set(mimic.IMAGES)
    for dicom, (subject, study, view, *_) in mimic.IMAGES.items():
        row = out.rows[dicom]
        text, sections = mimic.EXPECTED_TEXT[study]
        assert row["text"] == text and row["meta"]["report_sections"] == sections, study
        if sections == ["last_paragraph"]:  # no sections to give ReXrank's export
            assert "sections" not in row["meta"], study
        else:  # each section apart, for ReXrank's section_findings / section_impression
            assert list(row["meta"]["sections"]) == sections, study
            assert " ".join(row["meta"]["sections"].values()) == text, study
        assert (row["patient_id"], row["study_id"], row["view"]) == (subject, study, view)
        assert row["text_source"] == "report"
    splits = {d: out.rows[d]["meta"]["official_split"] for d in mimic.IMAGES}
    assert splits == {D1: "train", D2: "train", D3: "train", D4: "val", D5: "test", D6: "train"}


def test_labels_follow_the_uncertainty_policy(tmp_path):
    zeros = run(tmp_path / "z")
    ones = run(tmp_path / "o", uncertain_policy="ones")
    ignore = run(tmp_path / "i", uncertain_policy="ignore")
    assert zeros.rows[D1]["labels"] == ["Pleural Effusion"]
    assert ones.rows[D1]["labels"] == ["Atelectasis", "Pleural Effusion"]
    assert ignore.rows[D1]["labels"] == ["Pleural Effusion"]
    assert ignore.rows[D1]["meta"]["uncertain"] == ["Atelectasis"]
    assert zeros.rows[D1]["meta"]["negative"] == ["Cardiomegaly"]
    assert zeros.rows[D3]["labels"] == ["No Finding"]
    assert zeros.rows[D4]["labels"] == ["Edema", "Support Devices"]
    assert zeros.rows[D5]["labels"] == [] and zeros.rows[D5]["meta"]["labelled"] is True  # every label blank
    assert zeros.rows[D6]["labels"] == [] and zeros.rows[D6]["meta"]["labelled"] is False  # no label row


def test_study_time_without_its_leading_zero_is_read(tmp_path):
    out = run(tmp_path)
    assert out.rows[D3]["meta"]["study_time"] == "08:05:56"
    assert out.rows[D4]["meta"]["study_time"] == "00:12:34"
    assert out.rows[D1]["meta"]["study_date"] == "21800506"


def test_frontal_only_rejects_the_lateral_with_its_reason(tmp_path):
    out = run(tmp_path, frontal_only=True)
    assert set(out.rejected) == {D2}
    assert out.rejected[D2]["reason"] == "filtered: view LATERAL is not frontal (frontal_only)"


def test_a_missing_report_is_a_rejected_row(tmp_path):
    fixture = mimic.build(tmp_path / "mimic")
    (mimic.study_dir(fixture.root / "mimic-cxr-reports", "10000764", "57375967").with_suffix(".txt")).unlink()
    out = prepare(tmp_path, "m", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})
    assert out.rejected[D4]["reason"] == "missing report file"
    assert "s57375967.txt" in out.rejected[D4]["detail"]


def test_official_split_survives_the_split_stage_without_patient_leakage(tmp_path):
    out = run(tmp_path)
    pairs = tmp_path / "pairs.parquet"
    stats = split_pairs(
        [out.parquet], SplitConfig(official=True), pairs, tmp_path / "dropped.csv", tmp_path / "split.json"
    )
    rows = pq.read_table(pairs, columns=["id", "patient_id", "split"]).to_pylist()
    assert {r["id"].split("/", 1)[1]: r["split"] for r in rows} == {
        D1: "train",
        D2: "train",
        D3: "train",
        D4: "val",
        D5: "test",
        D6: "train",
    }
    assert stats["moved_to_keep_patients_together"] == 0


def test_report_sections_as_mit_lcp_names_them():
    report = "\n FINAL REPORT\n CONCLUSION:  Mild edema.\n \n FINDINGS:\n \n \n IMPRESSION:  \n"
    assert report_text(report) == ("Mild edema.", ["impression"])  # empty sections do not count
    assert report_text("\n no headers at all") == ("", [])


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("213014.531", "21:30:14"),
        ("80556.875", "08:05:56"),
        ("5.0", "00:00:05"),
        ("", None),
        ("256000", None),
        ("inf", None),  # was an OverflowError that stopped the dataset
        ("1e400", None),
    ],
)
def test_parse_study_time(raw, expected):
    assert parse_study_time(raw) == expected


def test_repeated_split_and_label_rows_conflicting_are_rejected_identical_are_read_once(tmp_path):
    # the audit: with a key on two rows the last row won silently
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    split_csv = fixture.root / "mimic-cxr-2.0.0-split.csv"
    labels_csv = fixture.root / "mimic-cxr-2.0.0-chexpert.csv"
    split_lines = split_csv.read_text().splitlines()
    label_lines = labels_csv.read_text().splitlines()
    split_csv.write_text(
        "\n".join([*split_lines, f"{D5},51029426,11000011,train", split_lines[4]])
        + "\n"  # D5 test->train; D4 twice
    )
    assert label_lines[1].startswith("10000032,50414267,") and label_lines[2].startswith("10000032,53911762,")
    changed = label_lines[1].split(",")
    changed[2] = "1.0" if changed[2] != "1.0" else "0.0"
    labels_csv.write_text("\n".join([*label_lines, ",".join(changed), label_lines[2]]) + "\n")
    out = prepare(tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})
    assert {k: r["reason"] for k, r in out.rejected.items()} == {
        D5: "conflicting split rows",
        D1: "conflicting label rows",
        D2: "conflicting label rows",
    }
    assert out.rejected[D5]["detail"] == f"{split_csv}: dicom_id {D5} is on lines 6, 8 with different values"
    assert (
        out.rejected[D1]["detail"]
        == f"{labels_csv}: study_id 50414267 is on lines 2, 6 with different values"
    )
    assert set(out.rows) == {D3, D4, D6}
    assert out.rows[D4]["meta"]["official_split"] == "val" and out.rows[D3]["labels"] == ["No Finding"]
    assert out.summary.read == len(mimic.IMAGES)


def test_an_unusable_label_or_split_row_rejects_its_images_instead_of_leaving_them_unlabelled(tmp_path):
    # the audit: a Latin-1 byte in a chexpert row only logged a warning, and the study's two images were kept
    # with no labels at all (read as negative for every finding); a split row with a field lost, without split
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    labels_csv = fixture.root / "mimic-cxr-2.0.0-chexpert.csv"
    split_csv = fixture.root / "mimic-cxr-2.0.0-split.csv"
    labels_csv.write_bytes(labels_csv.read_bytes().replace(b",1.0,", b",1.0\xe9,", 1))
    split_csv.write_text(
        split_csv.read_text().replace(f"{D4},57375967,10000764,validate", f"{D4},57375967,val")
    )
    out = prepare(tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})
    assert {k: r["reason"] for k, r in out.rejected.items()} == {
        D1: "label row unusable",
        D2: "label row unusable",
        D4: "split row unusable",
    }
    assert out.rejected[D1]["detail"].startswith(f"{labels_csv}:2: non-UTF-8 bytes in row (")
    assert out.rejected[D4]["detail"] == f"{split_csv}:5: malformed row (3 fields; the header has 4)"
    assert set(out.rows) == {D3, D5, D6}


def test_a_report_that_is_not_utf8_is_rejected_not_kept_with_replacement_characters(tmp_path):
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    report = next(fixture.root.rglob("s57375967.txt"))
    report.write_bytes(report.read_bytes().replace(b"Moderate", b"Mod\xe9rate"))
    offset = report.read_bytes().index(b"\xe9")
    out = prepare(tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        D4: ("report not UTF-8", f"{report}: byte b'\\xe9' at offset {offset}")
    }


def test_a_missing_label_column_is_an_error_naming_it(tmp_path):
    # the audit: with `Edema` gone from the chexpert table, every image was read as without edema
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    labels_csv = fixture.root / "mimic-cxr-2.0.0-chexpert.csv"
    rows = [line.split(",") for line in labels_csv.read_text().splitlines()]
    where = rows[0].index("Edema")
    labels_csv.write_text("\n".join(",".join(r[:where] + r[where + 1 :]) for r in rows) + "\n")
    with pytest.raises(
        DataError, match=r"chexpert\.csv: row 1: missing label column 'Edema'; expected a column"
    ):
        prepare(tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})


def test_ids_re_saved_as_floats_still_join_the_label_table(tmp_path):
    # the audit: a chexpert table re-saved through pandas writes study_id 50414267.0, which matched no image,
    # so every study was kept without labels (and only "labelled: false" said so)
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    settings = {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)}
    expected = prepare(tmp_path / "before", "mimic", settings).rows
    labels_csv = fixture.root / "mimic-cxr-2.0.0-chexpert.csv"
    header, *rows = labels_csv.read_text().splitlines()
    rows = [",".join(f"{c}.0" if i < 2 else c for i, c in enumerate(r.split(","))) for r in rows]
    labels_csv.write_text("\n".join([header, *rows]) + "\n")
    out = prepare(tmp_path / "after", "mimic", settings)
    assert set(out.rows) == set(expected)
    for dicom, row in expected.items():
        assert out.rows[dicom]["labels"] == row["labels"], dicom
        assert out.rows[dicom]["meta"]["labelled"] == row["meta"]["labelled"], dicom
    assert any(row["labels"] for row in expected.values())


def test_label_and_split_rows_no_image_has_are_named_in_a_warning(tmp_path, caplog):
    # a split or label table mentioning a study the metadata lacks was ignored without a word
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    with open(fixture.root / "mimic-cxr-2.0.0-split.csv", "a") as f:
        f.write("ffffffff-12345678-9abcdef0-0fedcba9-87654321,59999999,19999999,train\n")
    with open(fixture.root / "mimic-cxr-2.0.0-chexpert.csv", "a") as f:
        f.write("19999999,59999999" + ",1.0" * 14 + "\n")
    with caplog.at_level("WARNING", logger="medlens.data.sources.mimic_cxr"):
        out = prepare(
            tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)}
        )
    assert out.summary.read == len(mimic.IMAGES)
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "chexpert.csv: 1 rows name a study_id that is in no row of" in m and "59999999" in m for m in warned
    )
    assert any(
        "split.csv: 1 rows name a dicom_id that is in no row of" in m and "ffffffff-" in m for m in warned
    )


def test_a_report_that_cannot_be_read_rejects_its_images_and_the_rest_go_on(tmp_path, monkeypatch):
    # an OSError (EIO on a network disk) from one report file stopped the whole dataset
    fixture = mimic.build(tmp_path / "mimic", gzipped=False)
    report = next(fixture.root.rglob("s57375967.txt"))
    read_bytes = Path.read_bytes

    def failing(self):
        if self == report:
            raise OSError(5, "Input/output error")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    out = prepare(tmp_path, "mimic", {"source": "path", "adapter": "mimic_cxr", "path": str(fixture.root)})
    assert {k: (r["reason"], r["detail"]) for k, r in out.rejected.items()} == {
        D4: ("report unreadable", f"{report}: cannot be read (OSError: Input/output error)")
    }
