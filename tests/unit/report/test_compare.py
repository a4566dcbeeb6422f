"""The paper table's paired differences: which pairs are compared, on what, and why a pair is not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

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


def _probed(
    tmp_path, name, probes, *, eval_key="encoder_eval", scores_key="probe_scores", stages=("encoder",)
):
    """A collected experiment whose evaluation JSON holds multi-label probes and whose per-row scores file
    holds their test rows: ``{evaluation: (ids, labels, scores, targets)}``."""
    from medlens.evaluate.paired import write_probe_scores

    evaluation: dict = {}
    for key in probes:
        *where, label_set = key.split("/")
        node = evaluation
        for part in where:
            node = node.setdefault(part, {})
        node[label_set] = {"mean": {"auc": 0.5}}
    path = tmp_path / f"{name}.{scores_key}.csv"
    write_probe_scores(
        path,
        [
            {"evaluation": key, "ids": ids, "labels": labels, "scores": np.array(s), "targets": np.array(t)}
            for key, (ids, labels, s, t) in probes.items()
        ],
    )
    return {
        "name": name,
        "stages": list(stages),
        "config": {"evaluate": {"bootstrap_samples": 200, "seed": 0}},
        eval_key: evaluation,
        "paired_inputs": {scores_key: str(path)},
    }


# a tiny probe test set: 8 rows, two labels, each with both classes
_IDS = [f"nih/{i}" for i in range(8)]
_TRUTH = [[1, 0], [1, 1], [0, 1], [0, 0], [1, 0], [0, 1], [0, 0], [1, 1]]
_GOOD = [[0.9, 0.2], [0.8, 0.7], [0.3, 0.9], [0.1, 0.1], [0.7, 0.4], [0.2, 0.8], [0.4, 0.3], [0.6, 0.6]]
_POOR = [[0.5, 0.6], [0.2, 0.3], [0.6, 0.5], [0.4, 0.2], [0.3, 0.9], [0.7, 0.1], [0.1, 0.4], [0.8, 0.7]]


def test_external_probes_are_compared_row_by_row_against_scikit_learn(tmp_path):
    labels = ["Cardiomegaly", "Effusion"]
    own = "linear_probe/chexpert5"
    external = "external_probes/nih14/nih14"
    shuffled = [7, 3, 0, 5, 1, 6, 2, 4]  # rows are matched by id, not by their order in the file
    good = _probed(
        tmp_path, "good", {own: (_IDS, labels, _GOOD, _TRUTH), external: (_IDS, labels, _GOOD, _TRUTH)}
    )
    poor = _probed(
        tmp_path,
        "poor",
        {
            own: (_IDS, labels, _POOR, _TRUTH),
            external: (
                [_IDS[k] for k in shuffled],
                labels,
                [_POOR[k] for k in shuffled],
                [_TRUTH[k] for k in shuffled],
            ),
        },
    )
    unprobed = _probed(tmp_path, "unprobed", {own: (_IDS, labels, _POOR, _TRUTH)})  # no probe dataset
    resplit = _probed(
        tmp_path, "resplit", {external: (_IDS[:6], labels, _GOOD[:6], _TRUTH[:6])}
    )  # other seed
    by = {(r["metric"], r["a"], r["b"]): r for r in experiment_differences([good, poor, unprobed, resplit])}
    truth, a, b = (np.array(x) for x in (_TRUTH, _GOOD, _POOR))
    mean_auc = lambda s: np.mean([roc_auc_score(truth[:, j], s[:, j]) for j in range(2)])  # noqa: E731
    # worked by hand: good ranks every positive first (AUC 1, 1); poor wins 8 and 6 of 16 pairs
    assert mean_auc(a) - mean_auc(b) == pytest.approx((1 - 8 / 16 + 1 - 6 / 16) / 2)
    row = by[("linear-probe mean AUC (nih14, probe dataset nih14)", "good", "poor")]
    assert row["n"] == 8 and row["difference"] == pytest.approx(mean_auc(a) - mean_auc(b))
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] and not row["not_computed"]
    assert by[("linear-probe mean AUC (chexpert5)", "good", "poor")]["difference"] == pytest.approx(0.5625)
    # a probe only one experiment ran gets no row; the own-split probe both ran still does
    assert {m for m, x, y in by if (x, y) == ("good", "unprobed")} == {
        "zero-shot mean AUC",
        "linear-probe mean AUC (chexpert5)",
    }
    # the same probe dataset split another way: not the same rows, so the row says why
    assert by[("linear-probe mean AUC (nih14, probe dataset nih14)", "good", "resplit")]["not_computed"] == (
        "different test rows or labels (8 and 6 rows)"
    )
    assert ("linear-probe mean AUC (chexpert5)", "good", "resplit") not in by


def test_a_captioners_tower_probes_are_compared_and_a_missing_file_is_said(tmp_path):
    labels = ["Cardiomegaly", "Effusion"]
    key = "encoder_final_external_probes/nih14/chexpert5"
    tower = {"eval_key": "decoder_eval", "scores_key": "tower_probe_scores", "stages": ("decoder",)}
    good = _probed(tmp_path, "good", {key: (_IDS, labels, _GOOD, _TRUTH)}, **tower)
    poor = _probed(tmp_path, "poor", {key: (_IDS, labels, _POOR, _TRUTH)}, **tower)
    old = _probed(tmp_path, "old", {key: (_IDS, labels, _POOR, _TRUTH)}, **tower)
    Path(old["paired_inputs"]["tower_probe_scores"]).unlink()  # evaluated before the file existed
    for exp in (good, poor, old):
        exp["decoder_eval"]["overall"] = {"clinical": {"labeler": "rules", "uncertain_policy": "positive"}}
    rows = experiment_differences([good, poor, old])
    by = {(r["metric"], r["a"], r["b"]): r for r in rows}
    metric = "captioner tower linear-probe mean AUC (chexpert5, probe dataset nih14)"
    assert by[(metric, "good", "poor")]["difference"] == pytest.approx(0.5625)
    assert by[(metric, "poor", "old")]["not_computed"] == (
        "an experiment has no tower_probe_scores.csv (evaluated before it existed)"
    )
