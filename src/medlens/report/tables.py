"""The paper table: one row per experiment, as the report's summary and as CSV and LaTeX under ``results/paper/``.

Every number is read from the evaluation JSONs by a fixed key path; a metric that is absent stays
``None``, which the CSV writes as an empty cell, LaTeX as ``--`` and the HTML as "missing", never 0.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from typing import Any

from medlens.config import dig
from medlens.io import atomic_path

__all__ = [
    "SUMMARY_COLUMNS",
    "HEADER_GROUPS",
    "SUMMARY_TABLES",
    "TEXT_COLUMNS",
    "CSV_COLUMNS",
    "METRIC_PATHS",
    "summary_row",
    "write_paper_tables",
    "latex_table",
    "table_keys",
]


def _with_interval(key: str, which: str, path: str) -> dict[str, tuple[str, str]]:
    """``key`` and its 95 % interval, ``{key}_ci_low`` and ``{key}_ci_high``, siblings of the value in the JSON."""
    parent = path.rsplit(".", 1)[0]
    return {
        key: (which, path),
        f"{key}_ci_low": (which, f"{parent}.ci_low"),
        f"{key}_ci_high": (which, f"{parent}.ci_high"),
    }


# summary key -> (evaluation, dotted key path into eval/encoder.json or eval/decoder.json); every metric the
# evaluation gives an interval has it as {key}_ci_low and {key}_ci_high (METEOR has none)
METRIC_PATHS: dict[str, tuple[str, str]] = {
    **_with_interval("zero_shot_auc", "encoder", "zero_shot.mean.auc"),
    **{
        k: v
        for label_set in ("chexpert5", "nih14", "chexpert14")
        for k, v in _with_interval(
            f"probe_auc_{label_set}", "encoder", f"linear_probe.{label_set}.mean.auc"
        ).items()
    },
    **_with_interval("probe_accuracy", "encoder", "linear_probe.single_label.accuracy.value"),
    **{
        k: v
        for key, direction in (("i2t", "image_to_text"), ("t2i", "text_to_image"))
        for n in (1, 5, 10)
        for k, v in _with_interval(
            f"{key}_r@{n}", "encoder", f"retrieval.{direction}.recall@{n}.value"
        ).items()
    },
    **{
        f"{metric}{end}": ("decoder", path)
        for metric in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rouge_l", "cider_d")
        for end, path in (
            ("", f"overall.text.{metric}"),
            ("_ci_low", f"overall.text.intervals.{metric}.ci_low"),
            ("_ci_high", f"overall.text.intervals.{metric}.ci_high"),
        )
    },
    "meteor": ("decoder", "overall.text.meteor"),
    **{
        k: v
        for n in (14, 5)
        for average in ("micro", "macro", "macro_all")
        for k, v in _with_interval(
            f"clinical_f1_{average}_{n}", "decoder", f"overall.clinical.chexpert{n}.{average}.f1"
        ).items()
    },
    # the field's report-generation metrics (eval/report_metrics.json), each with its interval
    **{
        k: v
        for key, path in (
            ("bertscore", "bertscore.f1.mean"),
            ("chexbert_f1_micro_14", "chexbert.chexpert14.micro.f1"),
            ("chexbert_f1_macro_14", "chexbert.chexpert14.macro.f1"),
            ("chexbert_f1_micro_5", "chexbert.chexpert5.micro.f1"),
            ("chexbert_f1_macro_5", "chexbert.chexpert5.macro.f1"),
            ("chexbert_f1_macro_all_14", "chexbert.chexpert14.macro_all.f1"),
            ("chexbert_f1_macro_all_5", "chexbert.chexpert5.macro_all.f1"),
            ("sembscore", "sembscore.score.mean"),
            ("radgraph_f1", "radgraph.partial.mean"),
            ("radcliq_v1", "radcliq.v1.mean"),
            ("ratescore", "ratescore.score.mean"),
            ("green", "green.score.mean"),
        )
        for k, v in _with_interval(key, "report_metrics", f"metrics.{path}").items()
    },
}

# (key in summary_row, column title) in paper order: the HTML summary and the LaTeX table
SUMMARY_COLUMNS = [
    ("experiment", "Experiment"),
    ("datasets", "Data"),
    ("encoder", "Encoder"),
    ("decoder", "Decoder"),
    ("zero_shot_auc", "Zero-shot AUC"),
    ("probe_auc_chexpert5", "Probe AUC CheXpert-5"),
    ("probe_auc_nih14", "Probe AUC NIH-14"),
    ("probe_accuracy", "Probe acc."),
    ("i2t_r@1", "R@1"),
    ("i2t_r@5", "R@5"),
    ("i2t_r@10", "R@10"),
    ("bleu1", "BLEU-1"),
    ("bleu2", "BLEU-2"),
    ("bleu3", "BLEU-3"),
    ("bleu4", "BLEU-4"),
    ("rouge_l", "ROUGE-L"),
    ("cider_d", "CIDEr-D"),
    ("clinical_f1_micro_14", "F1 micro-14"),
    ("clinical_f1_macro_all_14", "F1 macro-14"),
    ("clinical_f1_micro_5", "F1 micro-5"),
    ("clinical_f1_macro_all_5", "F1 macro-5"),
    ("bertscore", "BERTScore"),
    ("chexbert_f1_micro_14", "CheXbert F1 micro-14"),
    ("sembscore", "SembScore"),
    ("radgraph_f1", "RadGraph F1"),
    ("radcliq_v1", "RadCliQ-v1"),
    ("ratescore", "RaTEScore"),
    ("green", "GREEN"),
]
TEXT_COLUMNS = 4  # experiment, data, encoder, decoder
# the HTML header groups the metric columns under one heading each, so the short titles fit a screen
ENCODER_GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Zero-shot", [("zero_shot_auc", "AUC")]),
    (
        "Linear probe",
        [("probe_auc_chexpert5", "CheXpert-5"), ("probe_auc_nih14", "NIH-14"), ("probe_accuracy", "acc.")],
    ),
    ("Image → text", [("i2t_r@1", "R@1"), ("i2t_r@5", "R@5"), ("i2t_r@10", "R@10")]),
]
GENERATION_GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("BLEU", [("bleu1", "1"), ("bleu2", "2"), ("bleu3", "3"), ("bleu4", "4")]),
    ("Report text", [("rouge_l", "ROUGE-L"), ("cider_d", "CIDEr-D")]),
    # the papers' macro (sklearn's, every observation averaged); the CSV also has the one over those present
    ("Clinical F1-14", [("clinical_f1_micro_14", "micro"), ("clinical_f1_macro_all_14", "macro")]),
    ("Clinical F1-5", [("clinical_f1_micro_5", "micro"), ("clinical_f1_macro_all_5", "macro")]),
]
FIELD_GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "ReXrank metrics",
        [
            ("bertscore", "BERTScore"),
            ("chexbert_f1_micro_14", "CheXbert µ-14"),
            ("sembscore", "SembScore"),
            ("radgraph_f1", "RadGraph"),
            ("radcliq_v1", "RadCliQ ↓"),
            ("ratescore", "RaTEScore"),
            ("green", "GREEN"),
        ],
    ),
]
HEADER_GROUPS = ENCODER_GROUPS + GENERATION_GROUPS + FIELD_GROUPS
# the HTML summary is three tables, (id, title, text columns, header groups), so that each fits the width
# of an A4 landscape page with its intervals: the 24 metric columns side by side do not
SUMMARY_TABLES: list[tuple[str, str, list[str], list[tuple[str, list[tuple[str, str]]]]]] = [
    ("summary-encoder", "Encoders", ["experiment", "datasets", "encoder"], ENCODER_GROUPS),
    ("summary-generation", "Report generation", ["experiment", "datasets", "decoder"], GENERATION_GROUPS),
    ("summary-field", "The field's report metrics", ["experiment", "datasets", "decoder"], FIELD_GROUPS),
]
# the CSV holds every number at full precision, CIs and the second retrieval direction included
CSV_COLUMNS = [k for k, _ in SUMMARY_COLUMNS[:TEXT_COLUMNS]] + list(METRIC_PATHS)

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


_STAGE = {"report_metrics": "decoder"}  # the stage whose output an evaluation scores


def summary_row(exp: dict[str, Any]) -> dict[str, Any]:
    """One paper-table row of a collected experiment: what was trained on what, and its numbers (None when absent)."""
    evals = {
        "encoder": exp.get("encoder_eval") or {},
        "decoder": exp.get("decoder_eval") or {},
        "report_metrics": exp.get("report_metrics_eval") or {},
    }
    stages = exp.get("stages") or ["encoder", "decoder"]
    row: dict[str, Any] = {
        "experiment": exp["name"],
        "datasets": ", ".join(exp["datasets"]),
        "encoder": exp["encoder_preset"] if "encoder" in stages else None,
        "decoder": exp["decoder_preset"] if "decoder" in stages else None,
        # metrics of a stage the experiment does not have: "n/a", not "missing"
        "not_trained": [
            key for key, (which, _) in METRIC_PATHS.items() if _STAGE.get(which, which) not in stages
        ],
    }
    for key, (which, path) in METRIC_PATHS.items():
        value = dig(evals[which], path)
        # a bool or string where a number belongs is not a number to print
        row[key] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    # the field's metrics the experiment did not ask for, and why one it asked for was not computed
    scored = evals["report_metrics"].get("metrics")
    row["not_asked"], row["not_computed"] = [], {}
    for key, (which, path) in METRIC_PATHS.items():
        if which != "report_metrics" or scored is None or key.endswith(("_ci_low", "_ci_high")):
            continue
        metric = scored.get(path.split(".")[1])
        if metric is None:
            row["not_asked"].append(key)
        elif "not_computed" in metric:
            row["not_computed"][key] = metric["not_computed"]
    return row


def _tex(value: Any) -> str:
    if value is None:
        return "--"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return re.sub(r"[\\&%_#${}~^]", lambda m: _TEX_ESCAPES[m.group()], text)  # one pass: escapes stay intact


def table_keys(text_keys: list[str], groups: list[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    """The column keys of one of :data:`SUMMARY_TABLES`, in order."""
    return text_keys + [key for _, cols in groups for key, _ in cols]


def latex_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as booktabs ``tabular``s, one per :data:`SUMMARY_TABLES` entry, as in the HTML.

    3 decimals, each metric's 95 % interval in brackets where the evaluation gives one, missing as ``--``.
    """

    def cell(row: dict[str, Any], key: str) -> str:
        text = _tex(row.get(key))
        low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
        if row.get(key) is not None and low is not None and high is not None:
            text += f" [{low:.2f}, {high:.2f}]"
        return text

    titles = dict(SUMMARY_COLUMNS)
    lines = [
        "% generated by medlens; regenerate with: snakemake results/report.html",
        "% requires \\usepackage{booktabs}",
    ]
    for i, (_, title, text_keys, groups) in enumerate(SUMMARY_TABLES):
        keys = table_keys(text_keys, groups)
        lines += ["", r"\medskip", ""] if i else []  # a paragraph each: the tables stack, never side by side
        lines += [f"% {title}"]
        lines += [
            r"\begin{tabular}{" + "l" * len(text_keys) + "r" * (len(keys) - len(text_keys)) + "}",
            r"\toprule",
            " & ".join(_tex(titles[k]) for k in keys) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(cell(row, k) for k in keys) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_paper_tables(
    rows: Sequence[dict[str, Any]], out_csv: str | os.PathLike, out_tex: str | os.PathLike
) -> None:
    """The summary as CSV (full precision, empty cell when missing) and as LaTeX (:func:`latex_table`)."""
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with atomic_path(out_tex) as tmp:
        tmp.write_text(latex_table(rows))
