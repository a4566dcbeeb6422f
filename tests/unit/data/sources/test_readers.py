"""readers: CSV quirks become named errors or row problems; file lookup; label maps; CheXpert codes."""

from __future__ import annotations

import gzip
import re

import pytest

from medlens.data.sources import readers as R
from medlens.errors import ConfigError, DataError


def test_bom_trailing_commas_blank_lines_and_gzip_are_read(tmp_path):
    text = "\ufeffa,b,c,\n1,2,3,\n\n4,5,6,\n"
    (tmp_path / "t.csv").write_text(text)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("t.csv", "t.csv.gz"):
        table = R.CsvTable(tmp_path / name, required=("a", ("B", "b")))
        assert table.columns == ["a", "b", "c"] and table.column(("B", "b")) == "b"
        rows = list(table)
        assert [(r.line, r.values, r.problem) for r in rows] == [
            (2, {"a": "1", "b": "2", "c": "3"}, None),
            (4, {"a": "4", "b": "5", "c": "6"}, None),
        ]


def test_rows_of_bare_commas_a_spreadsheet_leaves_are_not_records(tmp_path):
    # Excel saves the empty rows below a table as ",,"; each was a rejected row ("malformed row: 1 field" or an
    # empty id), noise that hid the real rejections
    (tmp_path / "t.csv").write_text("a,b,c\r\n1,2,3\r\n,,\r\n,\r\n , ,\r\n4,5,6\r\n,,\r\n")
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.values, r.problem) for r in rows] == [
        (2, {"a": "1", "b": "2", "c": "3"}, None),
        (6, {"a": "4", "b": "5", "c": "6"}, None),
    ]


def test_a_row_with_too_many_fields_is_a_row_problem(tmp_path):
    (tmp_path / "t.csv").write_text('a,b\n1,2\n3,"x, y",extra\n5,6\n')
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [r.problem for r in rows] == [None, "malformed row", None]
    assert rows[1].detail == "3 fields; the header has 2"


def test_a_quoted_multiline_cell_keeps_the_line_of_its_row(tmp_path):
    (tmp_path / "t.csv").write_text('id,text\n1,"two\nlines"\n2,one\n')
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.values["text"]) for r in rows] == [(2, "two\nlines"), (4, "one")]


def test_header_faults_are_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(
        DataError, match=r"empty\.csv: the file is empty or has no header row; expected a CSV header"
    ):
        R.CsvTable(tmp_path / "empty.csv", required=("a",))
    (tmp_path / "latin.csv").write_bytes(b"Path,S\xe9x\n1,2\n")
    with pytest.raises(DataError, match=r"latin\.csv: row 1: the header holds bytes that are not UTF-8"):
        R.CsvTable(tmp_path / "latin.csv")
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        R.CsvTable(tmp_path / "nope.csv")


def test_json_syntax_error_names_line_and_column(tmp_path):
    (tmp_path / "a.json").write_text('{"train": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"a\.json: row 2: not valid JSON \(.* at column \d+\)"):
        R.read_json_file(tmp_path / "a.json")


@pytest.mark.parametrize(
    "text", ['[{"qid": ' + "9" * 5000 + "}]", "[" * 100_000 + "]" * 100_000], ids=["huge-int", "deep"]
)
def test_json_python_cannot_hold_is_a_data_error_naming_the_file(tmp_path, text):
    # valid JSON all the same, so json raised ValueError / RecursionError, not JSONDecodeError: a bare traceback
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(DataError, match=r"a\.json: cannot be parsed \((ValueError|RecursionError): "):
        R.read_json_file(tmp_path / "a.json")


def test_find_file_prefers_the_shallowest_and_skips_junk(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "labels.csv").write_text("junk")
    (tmp_path / "x" / "y" / "labels.csv").write_text("deep")
    (tmp_path / "x" / "labels.csv").write_text("shallow")
    assert R.find_file(tmp_path, ("labels.csv",)).read_text() == "shallow"
    with pytest.raises(
        DataError, match=r"label file not found; expected a file named 'a\.csv' or 'b\.csv' within 3"
    ):
        R.find_file(tmp_path, ("a.csv", "b.csv"), what="label file")


def test_index_files_keeps_the_shallowest_copy(tmp_path):
    for rel in ("images_001/images/a.png", "a_copy/deeper/more/a.png", "images_002/images/b.PNG", "c.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    index = R.index_files(tmp_path, (".png",))
    assert index == {
        "a.png": tmp_path / "images_001/images/a.png",
        "b.PNG": tmp_path / "images_002/images/b.PNG",
    }


def test_index_files_lists_names_whose_copies_differ(tmp_path):
    for rel, data in (("p1/a.png", b"x"), ("p1/p1/a.png", b"x"), ("p2/b.png", b"y"), ("p3/deep/b.png", b"z")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    index = R.index_files(tmp_path, (".png",))
    assert index["b.png"] == tmp_path / "p2/b.png" and index.ambiguous("a.png") is None  # a.png: same bytes
    assert index.ambiguous("b.png") == (
        "several different files with this name",
        f"{tmp_path / 'p2/b.png'}; {tmp_path / 'p3/deep/b.png'}",
    )


def test_index_files_takes_copies_it_cannot_compare_as_differing(tmp_path, monkeypatch):
    # an OSError (EIO) while comparing two copies stopped the whole dataset; which copy a row means is unknown
    for rel in ("p1/a.png", "p2/deep/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")

    def failing(a, b, shallow=True):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(R.filecmp, "cmp", failing)
    index = R.index_files(tmp_path, (".png",))
    assert index.ambiguous("a.png")[0] == "several different files with this name"


def test_a_label_map_pointing_outside_its_vocabulary_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("vocabulary: chexpert14\nlabels:\n  Effusion: [Pleural Efusion]\n")
    monkeypatch.setattr(R, "resource_path", lambda *parts: tmp_path / parts[-1])
    R.load_label_map.cache_clear()
    try:
        with pytest.raises(
            ConfigError,
            match=r"bad\.yaml: labels\.Effusion: 'Effusion' maps to unknown label "
            r"'Pleural Efusion'",
        ):
            R.load_label_map("bad")
    finally:
        R.load_label_map.cache_clear()


def test_label_map_lookup_and_case(tmp_path):
    knee = R.load_label_map("knee_kl")
    assert knee.map(["0Normal", "severe", "KL2", "7"]) == (["KL0", "KL4", "KL2"], ["7"])
    nih = R.load_label_map("nih14")
    assert nih.map(["Hernia", "Effusion"]) == (["Pleural Effusion"], [])
    assert nih.lookup("effusion") is None  # NIH names are case-sensitive


def test_chexpert_codes_by_name_and_policy():
    columns = {"Edema": "Edema", "Atelectasis": "Atel", "No Finding": "No Finding", "Fracture": "Fracture"}
    row = {"Edema": "1.0", "Atel": "-1.0", "No Finding": "", "Fracture": "maybe"}
    zeros = R.chexpert_values(row, columns, "zeros")
    assert (zeros.labels, zeros.uncertain, zeros.invalid) == (
        ["Edema"],
        ["Atelectasis"],
        [("Fracture", "maybe")],
    )
    assert R.chexpert_values(row, columns, "ones").labels == ["Edema", "Atelectasis"]
    assert R.chexpert_values({"Edema": "0"}, columns, "zeros").negative == ["Edema"]  # integer 0/1 files too


@pytest.mark.parametrize(
    "raw, split",
    [
        ("validate", "val"),
        ("Valid", "val"),
        ("validation", "val"),
        ("train", "train"),
        ("test", "test"),
        ("", None),
        ("holdout", "holdout"),
    ],
)
def test_normalise_split(raw, split):
    assert R.normalise_split(raw) == split


@pytest.mark.parametrize(
    "raw, view, frontal",
    [
        ("PA", "PA", True),
        ("ap supine", "AP SUPINE", True),
        ("L", "LATERAL", False),
        ("Lateral", "LATERAL", False),
        ("postero-anterior", "PA", True),
        ("", None, False),
    ],
)
def test_views(raw, view, frontal):
    assert R.normalise_view(raw) == view and R.is_frontal(view) is frontal


@pytest.mark.parametrize(
    "raw, value", [("True", True), ("FALSE", False), ("UNK", "unknown"), ("", None), ("3.0", "3.0")]
)
def test_parse_bool(raw, value):
    assert R.parse_bool(raw) == value


def test_an_unclosed_quote_loses_no_record(tmp_path):
    # csv alone reads these 5 records as 2: the quote on line 3 swallows every line after it
    (tmp_path / "t.csv").write_text('id,text\n1,fine\n2,"never closed\n3,three\n4,four\n5,five\n')
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.problem) for r in rows] == [
        (2, None),
        (3, "malformed record"),
        (4, None),
        (5, None),
        (6, None),
    ]
    assert "a quote opened in this record is never closed" in rows[1].detail
    assert [r.values["text"] for r in rows if not r.problem] == ["fine", "three", "four", "five"]
    (tmp_path / "t.csv").write_text('id,text\n1,"open\n2,two\n3,"three"\n4,four\n')  # closes at a later quote
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.problem) for r in rows] == [(2, "malformed record"), (3, None), (4, None), (5, None)]


def test_a_field_over_the_parser_limit_is_one_rejected_record(tmp_path):
    (tmp_path / "t.csv").write_text("id,text\n1,ok\n2," + "x" * 1_000_000 + "\n3,ok\n")
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.problem) for r in rows] == [(2, None), (3, "malformed record"), (4, None)]
    assert "field larger than field limit" in rows[1].detail


def test_a_legitimate_multiline_report_stays_one_record(tmp_path):
    (tmp_path / "t.csv").write_text(
        'id,text\n1,"FINDINGS:\nNo effusion, no pneumothorax.\n\nIMPRESSION: normal"\n2,"x\u2028y"\n'
    )
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.problem) for r in rows] == [(2, None), (6, None)]
    assert rows[0].values["text"].endswith("IMPRESSION: normal") and rows[1].values["text"] == "x\u2028y"


def test_a_repeated_header_column_is_an_error_not_a_silent_choice(tmp_path):
    (tmp_path / "t.csv").write_text("image,text,image\na.png,x,b.png\n")
    with pytest.raises(
        DataError, match=r"t\.csv: row 1: the header repeats the column 'image' \(columns 1, 3\)"
    ):
        R.CsvTable(tmp_path / "t.csv")


@pytest.mark.parametrize(
    "ending", [pytest.param("\n", id="LF"), pytest.param("\r\n", id="CRLF"), pytest.param("\r", id="CR")]
)
def test_cr_crlf_and_lf_line_endings_are_read_record_by_record(tmp_path, ending):
    # Excel for Mac writes CR-only line endings; the audit read 0 records from such a file
    lines = ["id,text", "1,one", '2,"two', 'lines"', '3,"never closed', "4,four", "", "5,five"]
    (tmp_path / "t.csv").write_bytes(ending.join(lines).encode() + ending.encode())
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.problem) for r in rows] == [
        (2, None),
        (3, None),
        (5, "malformed record"),
        (6, None),
        (8, None),
    ]
    assert [r.values["text"] for r in rows if not r.problem] == ["one", f"two{ending}lines", "four", "five"]


def test_a_lone_carriage_return_in_a_file_of_lf_lines_is_a_rejected_record_never_a_cut_report(tmp_path):
    # a CR in an unquoted report is not a line end there: splitting at it kept "left lung" as the report
    (tmp_path / "t.csv").write_bytes(b'id,text\n1,left lung\rclear\n2,"quoted\rstays"\n3,three\r\n')
    rows = list(R.CsvTable(tmp_path / "t.csv"))
    assert [(r.line, r.values, r.problem) for r in rows] == [
        (2, {}, "malformed record"),
        (3, {"id": "2", "text": "quoted\rstays"}, None),
        (4, {"id": "3", "text": "three"}, None),
    ]
    assert "a carriage return inside an unquoted field" in rows[0].detail


@pytest.mark.parametrize("sep", [";", "\t"], ids=["semicolon", "tab"])
def test_a_file_separated_by_something_else_than_commas_says_so(tmp_path, sep):
    # a spreadsheet in a European locale saves ';'-separated "CSV": the header arrives as one column
    (tmp_path / "t.csv").write_text(
        sep.join(["image", "text"]) + "\n" + sep.join(["a.png", "Normal."]) + "\n"
    )
    with pytest.raises(
        R.DataError,
        match=r"missing column 'image' \(the header is one field: the file is separated by "
        + re.escape(repr(sep)),
    ):
        R.CsvTable(tmp_path / "t.csv", required=("image", "text"))
