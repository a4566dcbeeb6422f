"""The paper table's paired differences: which pairs are compared, on what, and why a pair is not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
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


def _mixed_pairs(path, n=60):
    """Knee, skin and VQA test rows (no images needed: the comparison reads labels, metadata and texts)."""
    from medlens.data.schema import PAIRS_SCHEMA
    from medlens.evaluate.modality import MODALITY_TASKS

    skin = MODALITY_TASKS["dermatology"][1]
    rows = []
    for i in range(n):
        kind = ("knee_xray", "dermatology", "vqa")[i % 3]
        if kind == "knee_xray":
            labels, text, meta = [f"KL{i % 5}"], f"Kellgren-Lawrence grade {i % 5}.", {}
        elif kind == "dermatology":
            labels, text, meta = [skin[i % 6]], f"{skin[i % 6]}.", {}
        else:
            closed = i % 2 == 0
            text = ("yes" if i % 4 == 0 else "no") if closed else f"left lung {i}"
            labels, meta = [], {"answer_type": "CLOSED" if closed else "OPEN"}
        rows.append(
            {
                **dict.fromkeys(("study_id", "view"), None),
                "id": f"m/{i}",
                "dataset": "mixed",
                "patient_id": f"p{i}",
                "image": b"",
                "width": 1,
                "height": 1,
                "modality": "chest_xray" if kind == "vqa" else kind,
                "text": text,
                "text_source": "vqa" if kind == "vqa" else "labels",
                "labels": labels,
                "meta": json.dumps(meta),
                "split": "test",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), path)
    return rows


def _generated(tmp_path, name, rows, pairs, answer):
    root = tmp_path / name
    root.mkdir()
    with open(root / "generations.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "reference": r["text"], "generated": answer(r)}) + "\n")
    return {
        "name": name,
        "stages": ["decoder"],
        "config": {"evaluate": {"bootstrap_samples": 200, "seed": 0}},
        "decoder_eval": {},
        "paired_inputs": {"generations": str(root / "generations.jsonl"), "pairs": str(pairs)},
    }


def test_knee_skin_and_vqa_are_compared_on_their_own_metrics(tmp_path):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score

    pairs = tmp_path / "pairs.parquet"
    rows = _mixed_pairs(pairs)
    exact = _generated(tmp_path, "exact", rows, pairs, lambda r: r["text"])

    def blind_answer(r):  # always grade 0 / nevus / "no", and the first word of an open answer
        if r["modality"] == "knee_xray":
            return "Kellgren-Lawrence grade 0."
        if r["modality"] == "dermatology":
            return "Nevus."
        return "no" if json.loads(r["meta"])["answer_type"] == "CLOSED" else r["text"].split()[0]

    blind = _generated(tmp_path, "blind", rows, pairs, blind_answer)
    by = {r["metric"]: r for r in experiment_differences([exact, blind])}
    knee = [r for r in rows if r["modality"] == "knee_xray"]
    truth = [int(r["labels"][0][2]) for r in knee]
    assert by["knee_xray accuracy (from the text)"]["difference"] == pytest.approx(
        1 - accuracy_score(truth, [0] * len(knee))
    )
    kappa = by["knee_xray quadratic-weighted kappa (from the text)"]
    assert kappa["n"] == len(knee) == 20 and kappa["difference"] == pytest.approx(
        1 - cohen_kappa_score(truth, [0] * 20, weights="quadratic", labels=range(5))
    )
    skin = [r["labels"][0] for r in rows if r["modality"] == "dermatology"]
    assert by["dermatology balanced accuracy (from the text)"]["difference"] == pytest.approx(
        1 - balanced_accuracy_score(skin, ["Nevus"] * len(skin))
    )
    assert by["dermatology macro-F1 (from the text)"]["excludes_zero"] is True
    closed = [r for r in rows if json.loads(r["meta"]).get("answer_type") == "CLOSED"]
    yes = sum(r["text"] == "yes" for r in closed)
    assert by["VQA closed accuracy"]["n"] == len(closed) and by["VQA closed accuracy"]["difference"] == (
        pytest.approx(yes / len(closed))
    )
    assert by["VQA open accuracy"]["difference"] == 1.0  # one word of three is never the whole answer
    assert 0 < by["VQA open recall"]["difference"] < 1 and by["VQA open recall"]["excludes_zero"] is True
    # no chest reports in either: no clinical rows; the text metrics cover every generation
    assert not any(m.startswith("clinical") for m in by) and by["BLEU-4"]["n"] == len(rows)


def test_the_encoders_knee_and_skin_classes_are_compared_zero_shot_and_by_probe(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from medlens.evaluate.paired import write_class_predictions

    truth = [f"KL{i % 5}" for i in range(40)]

    def experiment(name, zero_shot, probe):
        path = tmp_path / f"{name}.csv"
        rows = [
            {
                "id": f"k/{i}",
                "modality": "knee_xray",
                "truth": t,
                "zero_shot": zero_shot(i),
                "linear_probe": probe(i),
            }
            for i, t in enumerate(truth)
        ]
        write_class_predictions(path, rows)
        return {
            "name": name,
            "stages": ["encoder"],
            "config": {"evaluate": {"bootstrap_samples": 100, "seed": 0}},
            "paired_inputs": {"class_predictions": str(path)},
        }

    good = experiment("good", lambda i: truth[i], lambda i: truth[i])
    poor = experiment("poor", lambda i: "KL0", lambda i: "")  # its probe could not be fit
    by = {r["metric"]: r for r in experiment_differences([good, poor])}
    kappa = by["knee_xray quadratic-weighted kappa (zero-shot)"]
    assert kappa["n"] == 40 and kappa["excludes_zero"] is True
    assert kappa["difference"] == pytest.approx(
        1 - cohen_kappa_score(truth, ["KL0"] * 40, weights="quadratic", labels=[f"KL{g}" for g in range(5)])
    )
    assert by["knee_xray accuracy (zero-shot)"]["difference"] == pytest.approx(1 - 8 / 40)
    assert by["knee_xray accuracy (linear probe)"]["not_computed"] == "no linear_probe for both"
    assert not any(m.startswith("dermatology") for m in by)  # neither classified skin lesions
