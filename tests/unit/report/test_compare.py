"""The paper table's paired differences: which pairs are compared, on what, and why a pair is not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers.pairs import write_pairs
from medlens.evaluate.paired import write_scores
from medlens.evaluate.text_metrics import corpus_bleu
from medlens.report.compare import experiment_differences, write_differences


def _test_rows(pairs, rows=None):
    table = pq.read_table(pairs, columns=["id", "text", "labels", "split"]).to_pylist()
    return [r for r in table if r["split"] == "test"][:rows]


def _experiment(tmp_path, name, pairs, generate, *, signal, stages=("encoder", "decoder"), rows=None):
    test = _test_rows(pairs, rows)
    root = tmp_path / name
    root.mkdir()
    labels = ["Cardiomegaly", "Pleural Effusion"]
    targets = np.array([[int(lab in r["labels"]) for lab in labels] for r in test])
    noise = np.random.default_rng(len(name)).normal(0, 1, targets.shape)
    write_scores(root / "scores.csv", [r["id"] for r in test], labels, signal * targets + noise, targets)
    with open(root / "generations.jsonl", "w") as f:
        for r in test:
            f.write(
                json.dumps({"id": r["id"], "reference": r["text"], "generated": generate(r["text"])}) + "\n"
            )
    return {
        "name": name,
        "stages": list(stages),
        "config": {"evaluate": {"bootstrap_samples": 200, "seed": 0, "labeler": "rules"}},
        "decoder_eval": {"overall": {"clinical": {"labeler": "rules", "uncertain_policy": "positive"}}},
        "paired_inputs": {
            "zero_shot_scores": str(root / "scores.csv"),
            "generations": str(root / "generations.jsonl"),
            "pairs": str(pairs),
        },
    }


def test_pairs_on_the_same_rows_get_paired_differences_and_the_others_a_reason(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=300)
    exact = _experiment(tmp_path, "exact", pairs, lambda t: t, signal=3.0)
    blind = _experiment(
        tmp_path, "blind", pairs, lambda t: "Heart size is normal. No pleural effusion.", signal=0.0
    )
    fewer = _experiment(tmp_path, "fewer", pairs, lambda t: t, signal=3.0, rows=20)
    encoder_only = _experiment(tmp_path, "enc", pairs, lambda t: t, signal=3.0, stages=("encoder",))
    rows = experiment_differences([exact, blind, fewer, encoder_only])
    by = {(r["metric"], r["a"], r["b"]): r for r in rows}
    auc = by[("zero-shot mean AUC", "exact", "blind")]
    assert auc["n"] == 45 and auc["difference"] > 0.3 and auc["excludes_zero"] is True
    # the copied reports are better on every clinical F1 and text metric, the interval excluding zero
    for metric in (
        *(f"clinical {avg}-F1 (CheXpert-{n})" for n in (14, 5) for avg in ("micro", "macro")),
        "BLEU-2",
        "BLEU-4",
        "ROUGE-L",
        "CIDEr-D",
    ):
        row = by[(metric, "exact", "blind")]
        assert row["n"] == 45 and row["difference"] > 0.1 and row["ci_low"] > 0, metric
        assert row["excludes_zero"] is True and not row["not_computed"], metric
    assert by[("BLEU-4", "exact", "blind")]["difference"] == pytest.approx(
        1
        - corpus_bleu(
            ["Heart size is normal. No pleural effusion."] * 45, [r["text"] for r in _test_rows(pairs)]
        )[0]
    )
    assert "different" in by[("zero-shot mean AUC", "exact", "fewer")]["not_computed"]
    assert (
        "different chest test reports"
        in by[("clinical macro-F1 (CheXpert-5)", "blind", "fewer")]["not_computed"]
    )
    assert "different test generations" in by[("ROUGE-L", "blind", "fewer")]["not_computed"]
    # an encoder-only experiment is compared on the encoder's metric only
    assert {m for m, a, b in by if "enc" in (a, b)} == {"zero-shot mean AUC"}
    write_differences(rows, tmp_path / "differences.csv")
    with open(tmp_path / "differences.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and written[0]["excludes_zero"] == "True"


def _with_report_scores(exp, values, computed=("bertscore",)):
    """Give a collected experiment per-report scores of the field's metrics (``score_reports``'s outputs)."""
    lines = Path(exp["paired_inputs"]["generations"]).read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    path = f"{exp['paired_inputs']['generations']}.scores.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "bertscore"])
        w.writerows(zip(ids, values, strict=True))
    exp["paired_inputs"]["report_metric_scores"] = path
    exp["report_metrics_eval"] = {
        "metrics": {
            m: {"f1": {}} if m in computed else {"not_computed": "weights"} for m in ("bertscore", "radgraph")
        }
    }
    return exp


def test_the_field_metrics_are_compared_report_by_report(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=300)
    good = _experiment(tmp_path, "good", pairs, lambda t: t, signal=1.0)
    poor = _experiment(tmp_path, "poor", pairs, lambda t: "No findings.", signal=1.0)
    n = len(Path(good["paired_inputs"]["generations"]).read_text().splitlines())
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.6, 0.9, n), rng.uniform(0.6, 0.9, n) - 0.2
    rows = experiment_differences([_with_report_scores(good, a), _with_report_scores(poor, b)])
    by = {r["metric"]: r for r in rows}
    bert = by["BERTScore F1"]
    assert bert["n"] == n and bert["difference"] == np.mean(a) - np.mean(b)
    assert bert["ci_low"] < bert["difference"] < bert["ci_high"] and bert["excludes_zero"] is True
    assert "RadGraph F1 (partial)" not in by  # computed by neither: no row
    # computed for one of them only: the row says why
    scores = Path(poor["paired_inputs"]["report_metric_scores"])
    scores.write_text("".join(line.split(",")[0] + "\n" for line in scores.read_text().splitlines()))
    poor["report_metrics_eval"]["metrics"]["bertscore"] = {"not_computed": "weights not in the cache"}
    rows = {r["metric"]: r for r in experiment_differences([good, poor])}
    assert rows["BERTScore F1"]["not_computed"] == "bertscore was not computed for both"
