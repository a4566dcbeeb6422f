"""The paper table: rows from the evaluation JSONs, CSV at full precision, LaTeX escaped and rounded."""

from __future__ import annotations

import csv

from medlens.report.tables import (
    CSV_COLUMNS,
    HEADER_GROUPS,
    SUMMARY_COLUMNS,
    SUMMARY_TABLES,
    TEXT_COLUMNS,
    latex_table,
    summary_row,
    table_keys,
    write_paper_tables,
)


def _exp(name, enc=None, dec=None):
    return {
        "name": name,
        "datasets": ["a", "b"],
        "encoder_preset": "tiny",
        "decoder_preset": None,
        "encoder_eval": enc,
        "decoder_eval": dec,
    }


def test_row_reads_every_metric_and_leaves_absent_ones_none():
    row = summary_row(
        _exp(
            "x",
            enc={
                "zero_shot": {"mean": {"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9}},
                "linear_probe": {"single_label": {"accuracy": {"value": 0.6}}},
            },
            dec={"overall": {"text": {"bleu4": 0, "rouge_l": "n/a"}}},
        )
    )
    assert row["datasets"] == "a, b" and row["decoder"] is None
    assert (row["zero_shot_auc"], row["probe_accuracy"], row["bleu4"]) == (0.8, 0.6, 0.0)  # a real 0 stays 0
    assert row["rouge_l"] is None and row["probe_auc_nih14"] is None and row["clinical_f1_micro_5"] is None
    assert set(CSV_COLUMNS) <= set(row)


def test_latex_escapes_names_and_writes_missing_as_dashes():
    row = summary_row(
        _exp("a_b&c%", enc={"zero_shot": {"mean": {"auc": 0.81234, "ci_low": 0.7, "ci_high": 0.9}}})
    )
    tex = latex_table([row])
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == len(SUMMARY_TABLES)
    lines = [line for line in tex.splitlines() if line.startswith("a")]
    assert len(lines) == len(SUMMARY_TABLES)  # one row per table
    cells = {}
    for line, (_, _, text_keys, groups) in zip(lines, SUMMARY_TABLES, strict=True):
        values = [c.strip() for c in line.removesuffix(r"\\").split(" & ")]  # an escaped \& has no spaces
        keys = table_keys(text_keys, groups)
        assert len(values) == len(keys)
        cells.update(zip(keys, values, strict=True))
    assert set(cells) == {key for key, _ in SUMMARY_COLUMNS}  # every column is in one of the tables
    assert cells["experiment"] == r"a\_b\&c\%"
    assert cells["decoder"] == "--"  # no decoder
    assert cells["zero_shot_auc"] == "0.812 [0.70, 0.90]"
    assert {
        v for k, v in cells.items() if k not in ("experiment", "datasets", "encoder", "zero_shot_auc")
    } == {"--"}


def test_csv_round_trips_full_precision(tmp_path):
    value = 0.123456789012345
    row = summary_row(_exp("x", dec={"overall": {"text": {"bleu1": value}}}))
    write_paper_tables([row], tmp_path / "s.csv", tmp_path / "s.tex")
    with open(tmp_path / "s.csv", newline="") as f:
        got = next(csv.DictReader(f))
    assert float(got["bleu1"]) == value and got["bleu2"] == ""
    assert (tmp_path / "s.tex").read_text().count(r"\\") == 2 * len(SUMMARY_TABLES)  # header and one row each


def test_the_html_header_groups_cover_the_metric_columns_in_order():
    grouped = [key for _, cols in HEADER_GROUPS for key, _ in cols]
    assert grouped == [key for key, _ in SUMMARY_COLUMNS[TEXT_COLUMNS:]]


def test_the_field_metrics_say_which_were_not_asked_for_and_why_one_was_not_computed():
    exp = _exp("x", dec={"overall": {}})
    exp["report_metrics_eval"] = {
        "metrics": {
            "bertscore": {"not_computed": "weights not in the cache: distilroberta-base"},
            "radgraph": {"partial": {"mean": 0.3, "ci_low": 0.2, "ci_high": 0.4}},
        }
    }
    row = summary_row(exp)
    assert row["not_computed"] == {"bertscore": "weights not in the cache: distilroberta-base"}
    assert (row["radgraph_f1"], row["radgraph_f1_ci_low"], row["radgraph_f1_ci_high"]) == (0.3, 0.2, 0.4)
    assert "green" in row["not_asked"] and "radgraph_f1" not in row["not_asked"]
    assert "bertscore" not in row["not_asked"] and row["bertscore"] is None
    assert latex_table([row]).count("0.300 [0.20, 0.40]") == 1
    # an experiment scored before the field's metrics existed: plainly missing, not "not asked"
    assert summary_row(_exp("y"))["not_asked"] == []
