"""Every pair of experiments scored on the same test rows, compared by paired bootstrap (the paper table's
second part, ``results/paper/differences.csv``).

Two experiments are paired on a metric only when they scored exactly the same rows (same ids, same
truth); otherwise the row says why not. Zero-shot mean AUC is compared from ``eval/zero_shot_scores.csv``;
clinical micro- and macro-F1 (CheXpert-14 and -5) from ``eval/generations.jsonl``, the chest radiograph
reports of both labelled by the labeler both evaluations used; BLEU-2/4, ROUGE-L and CIDEr-D from every
generation; the field's metrics from ``eval/report_metric_scores.csv``. Each difference is ``a - b`` with its 95 % interval over
the shared resamples and whether that interval excludes zero. Linear-probe mean AUCs (the encoder's and a
captioner's tower's, on the experiment's split and on each probe dataset's) are compared by
:mod:`medlens.report.compare_probes`.
"""

# long: one comparator per family of metrics (encoder, clinical, text, modality, VQA, the field's), sharing
# the readers of the experiments' per-row outputs and the rule for when two experiments can be paired
from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import FINDINGS, dig
from medlens.evaluate.clinical import CHEXPERT5
from medlens.evaluate.modality import MODALITY_TASKS
from medlens.io import atomic_path
from medlens.report.compare_probes import compare_probes, read_experiment_probes

__all__ = ["experiment_differences", "write_differences", "DIFFERENCE_COLUMNS"]

DIFFERENCE_COLUMNS = [
    "metric",
    "a",
    "b",
    "n",
    "difference",
    "ci_low",
    "ci_high",
    "excludes_zero",
    "n_skipped_resamples",
    "not_computed",
]


def _settings(exp: dict[str, Any]) -> tuple[int, int]:
    evaluate = exp["config"].get("evaluate") or {}
    return int(evaluate.get("bootstrap_samples", 1000)), int(evaluate.get("seed", 0))


def _zero_shot(a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    from medlens.evaluate.paired import paired_auc_difference, read_scores

    paths = [e["paired_inputs"].get("zero_shot_scores") for e in (a, b)]
    if not all(p and Path(p).is_file() for p in paths):
        return {
            "not_computed": "an experiment has no zero_shot_scores.csv (no encoder, or evaluated before it existed)"
        }
    (ids_a, labels_a, sa, ta), (ids_b, labels_b, sb, tb) = (read_scores(p) for p in paths)
    if ids_a != ids_b or labels_a != labels_b or not np.array_equal(ta, tb):
        return {"not_computed": f"different test rows or labels ({len(ids_a)} and {len(ids_b)} rows)"}
    result = paired_auc_difference(sa, sb, ta, n_resamples=n_resamples, seed=seed)
    return {**result, "n": len(ids_a)}


def _generations(exp: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """id -> record of an experiment's ``eval/generations.jsonl`` (None without one)."""
    from medlens.evaluate.rexrank import read_generations

    path = exp["paired_inputs"].get("generations")
    if not path or not Path(path).is_file():
        return None
    return {g["id"]: g for g in read_generations(path)}


def _described(
    exp: dict[str, Any], generations: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]] | None:
    """id -> the generation record with its row's modality, text source, labels and metadata from
    ``pairs.parquet`` (None without generations)."""
    from medlens.data.split import pair_rows

    pairs = exp["paired_inputs"].get("pairs")
    if generations is None or not pairs or not Path(pairs).is_file():
        return None
    rows = pair_rows(pairs, ["modality", "text_source", "labels", "meta"], set(generations))
    return {i: {**g, **rows[i]} for i, g in generations.items() if i in rows}


def _reports_of(exp: dict[str, Any], keep) -> dict[str, tuple[str, str]] | None:
    """id -> (reference, generated) of the generations whose described row ``keep`` accepts."""
    described = exp["described"]
    if described is None:
        return None
    return {i: (g.get("reference", ""), g["generated"]) for i, g in described.items() if keep(g)}


def _chest_reports(exp: dict[str, Any]) -> dict[str, tuple[str, str]] | None:
    """id -> (reference, generated) of the chest radiograph reports of an experiment's generations."""
    return _reports_of(exp, _chest_row)


def _chest_row(g: dict[str, Any]) -> bool:
    return g["modality"] == "chest_xray" and g["text_source"] != "vqa"


def _same_references(ra: dict[str, tuple[str, str]], rb: dict[str, tuple[str, str]], what: str) -> str | None:
    """Why two experiments' reports cannot be paired, or None when they answer the same references."""
    if not ra or ra.keys() != rb.keys():
        return f"different {what} ({len(ra)} and {len(rb)})"
    if any(ra[i][0] != rb[i][0] for i in ra):
        return f"the two experiments' references of the {what} differ"
    return None


# (row name, label set, average) of the clinical F1 differences; macro is sklearn's, as papers report it
_CLINICAL = tuple(
    (f"clinical {average}-F1 ({name})", label_set, average)
    for name, label_set in (("CheXpert-14", FINDINGS), ("CheXpert-5", CHEXPERT5))
    for average in ("micro", "macro")
)


def _clinical(a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """The clinical F1 differences of :data:`_CLINICAL`, the reports labelled once."""
    from medlens.evaluate.clinical import binarize, create_labeler
    from medlens.evaluate.paired import paired_f1_difference

    def every(reason: str) -> dict[str, dict[str, Any]]:
        return {row: {"not_computed": reason} for row, _, _ in _CLINICAL}

    labelers = {dig(e, "decoder_eval.overall.clinical.labeler") for e in (a, b)}
    policies = {dig(e, "decoder_eval.overall.clinical.uncertain_policy") for e in (a, b)}
    if len(labelers) != 1 or len(policies) != 1 or None in labelers:
        return every(f"not both scored by one labeler with one policy ({sorted(map(str, labelers))})")
    reports = [_chest_reports(e) for e in (a, b)]
    if any(r is None for r in reports):
        return every("an experiment has no generations.jsonl (no decoder stage)")
    ra, rb = reports
    if reason := _same_references(ra, rb, "chest test reports"):
        return every(reason)
    ids = sorted(ra)
    config_labeler = (a["config"].get("evaluate") or {}).get("labeler", "rules")
    labeler = create_labeler(config_labeler)
    (policy,) = policies

    def labels(texts: list[str]) -> np.ndarray:
        return binarize(labeler.label_texts(texts), FINDINGS, policy)

    gen_a, gen_b, ref = (labels([r[i][k] for i in ids]) for r, k in ((ra, 1), (rb, 1), (ra, 0)))
    out = {}
    for row, label_set, average in _CLINICAL:
        cols = [FINDINGS.index(f) for f in label_set]
        result = paired_f1_difference(
            gen_a[:, cols], gen_b[:, cols], ref[:, cols], average=average, n_resamples=n_resamples, seed=seed
        )
        out[row] = {**result, "n": len(ids), "labeler": labeler.name}
    return out


# the text metrics compared on every generated text (the rows of eval/decoder.json's overall.text)
_TEXT = (("BLEU-2", 2), ("BLEU-4", 4), ("ROUGE-L", "rouge_l"), ("CIDEr-D", "cider_d"))  # the table's


def _text(a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """BLEU-2/4, ROUGE-L and CIDEr-D differences over both experiments' generations of the same rows."""
    from medlens.evaluate.paired import paired_bleu_difference, paired_mean_difference
    from medlens.evaluate.text_metrics import cider_d_scores, rouge_scores

    generations = [e["generations"] for e in (a, b)]
    if any(g is None for g in generations):
        reason = "an experiment has no generations.jsonl (no decoder stage)"
        return {row: {"not_computed": reason} for row, _ in _TEXT}
    ra, rb = ({i: (g.get("reference", ""), g["generated"]) for i, g in gens.items()} for gens in generations)
    if reason := _same_references(ra, rb, "test generations"):
        return {row: {"not_computed": reason} for row, _ in _TEXT}
    ids = sorted(ra)
    gen_a, gen_b, refs = ([r[i][k] for i in ids] for r, k in ((ra, 1), (rb, 1), (ra, 0)))
    out = {}
    for row, metric in _TEXT:
        if isinstance(metric, int):
            result = paired_bleu_difference(
                gen_a, gen_b, refs, max_order=metric, n_resamples=n_resamples, seed=seed
            )
        else:
            if metric == "rouge_l":
                sa, sb = (rouge_scores(g, refs)["rouge_l"] for g in (gen_a, gen_b))
            else:
                sa, sb = (cider_d_scores(g, refs)[0] for g in (gen_a, gen_b))
            if sa is None:  # CIDEr-D's idf is undefined on this set (the marginal says why)
                out[row] = {"not_computed": "CIDEr-D is undefined on these references", "n": len(ids)}
                continue
            result = paired_mean_difference(sa, sb, n_resamples=n_resamples, seed=seed)
        out[row] = {**result, "n": len(ids)}
    return out


_METRIC_NAMES = {
    "accuracy": "accuracy",
    "quadratic_weighted_kappa": "quadratic-weighted kappa",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro-F1",
}


def _graded(modality: str):
    """Comparator of the class read from the generated texts of ``modality`` (knee KL grade, skin
    diagnosis): its task's headline metrics, as ``overall.grading`` scores them."""
    from medlens.evaluate.modality import task_metrics

    classes, metrics = task_metrics(modality)
    rows = {name: f"{modality} {_METRIC_NAMES[name]} (from the text)" for name in metrics}

    def compare(
        a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int
    ) -> dict[str, dict[str, Any]]:
        from medlens.evaluate.modality import class_indices, label_from_text
        from medlens.evaluate.paired import paired_metric_difference

        described = [e["described"] for e in (a, b)]
        if any(d is None for d in described):
            return {row: {"not_computed": "an experiment has no generations.jsonl"} for row in rows.values()}
        da, db = ({i: g for i, g in d.items() if _graded_row(g, modality, classes)} for d in described)
        reason = _same_references(
            *({i: (g["reference"], "") for i, g in d.items()} for d in (da, db)), modality
        )
        if reason:
            return {row: {"not_computed": reason} for row in rows.values()}
        ids = sorted(da)
        truth = class_indices([next(c for c in da[i]["labels"] if c in classes) for i in ids], classes)
        pa, pb = (
            class_indices([label_from_text(d[i]["generated"], modality) for i in ids], classes)
            for d in (da, db)
        )
        return {
            rows[name]: {
                **paired_metric_difference(metric, truth, pa, pb, n_resamples=n_resamples, seed=seed),
                "n": len(ids),
            }
            for name, metric in metrics.items()
        }

    return compare


def _graded_row(g: dict[str, Any], modality: str, classes: list[str]) -> bool:
    return g["modality"] == modality and g["text_source"] != "vqa" and bool(set(g["labels"]) & set(classes))


def _encoder_graded(modality: str):
    """Comparator of the encoder's classes of ``modality`` (zero-shot and linear probe, from
    ``eval/class_predictions.csv``): its task's headline metrics, as ``modalities`` scores them."""
    from medlens.evaluate.modality import task_metrics

    classes, metrics = task_metrics(modality)
    methods = (("zero_shot", "zero-shot"), ("linear_probe", "linear probe"))
    rows = {
        (m, name): f"{modality} {_METRIC_NAMES[name]} ({title})" for m, title in methods for name in metrics
    }

    def compare(
        a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int
    ) -> dict[str, dict[str, Any]]:
        from medlens.evaluate.modality import class_indices
        from medlens.evaluate.paired import paired_metric_difference, read_class_predictions

        def every(reason: str) -> dict[str, dict[str, Any]]:
            return {row: {"not_computed": reason} for row in rows.values()}

        paths = [e["paired_inputs"].get("class_predictions") for e in (a, b)]
        if not all(p and Path(p).is_file() for p in paths):
            return every("an experiment has no class_predictions.csv (evaluated before it existed)")
        pa, pb = ({r["id"]: r for r in read_class_predictions(p) if r["modality"] == modality} for p in paths)
        if not pa or pa.keys() != pb.keys() or any(pa[i]["truth"] != pb[i]["truth"] for i in pa):
            return every(f"different {modality} test rows ({len(pa)} and {len(pb)})")
        ids = sorted(pa)
        truth = class_indices([pa[i]["truth"] for i in ids], classes)
        out = {}
        for method, _ in methods:
            if any(not p[i][method] for p in (pa, pb) for i in ids):
                out |= {rows[method, n]: {"not_computed": f"no {method} for both"} for n in metrics}
                continue
            xa, xb = (class_indices([p[i][method] for i in ids], classes) for p in (pa, pb))
            for name, metric in metrics.items():
                result = paired_metric_difference(metric, truth, xa, xb, n_resamples=n_resamples, seed=seed)
                out[rows[method, name]] = {**result, "n": len(ids)}
        return out

    return compare


def _classified(exps: tuple[dict[str, Any], ...], modality: str) -> bool:
    """Whether either experiment's encoder classified rows of ``modality``."""
    from medlens.evaluate.paired import read_class_predictions

    paths = [e["paired_inputs"].get("class_predictions") for e in exps]
    return any(
        p and Path(p).is_file() and any(r["modality"] == modality for r in read_class_predictions(p))
        for p in paths
    )


_VQA = ("VQA closed accuracy", "VQA open accuracy", "VQA open recall")


def _vqa(a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """SLAKE's closed and open accuracy and open recall of both experiments' answers to the same questions."""
    import json

    from medlens.evaluate.paired import paired_mean_difference
    from medlens.evaluate.vqa import exact_and_recall

    answers = [_reports_of(e, lambda g: g["text_source"] == "vqa") for e in (a, b)]
    if any(r is None for r in answers):
        return {row: {"not_computed": "an experiment has no generations.jsonl"} for row in _VQA}
    ra, rb = answers
    if reason := _same_references(ra, rb, "VQA questions"):
        return {row: {"not_computed": reason} for row in _VQA}
    ids = sorted(ra)
    described = a["described"]
    types = [json.loads(described[i].get("meta") or "{}").get("answer_type") for i in ids]
    refs = [ra[i][0] for i in ids]
    closed, exact_a, recall_a = exact_and_recall(refs, [ra[i][1] for i in ids], types)
    _, exact_b, recall_b = exact_and_recall(refs, [rb[i][1] for i in ids], types)
    out = {}
    for row, mask, (sa, sb) in zip(
        _VQA,
        (closed, ~closed, ~closed),
        ((exact_a, exact_b), (exact_a, exact_b), (recall_a, recall_b)),
        strict=True,
    ):
        if not mask.any():
            out[row] = {"not_computed": f"no {'closed' if row == _VQA[0] else 'open'} questions", "n": 0}
            continue
        result = paired_mean_difference(sa[mask], sb[mask], n_resamples=n_resamples, seed=seed)
        out[row] = {**result, "n": int(mask.sum())}
    return out


def _has_rows(exps: tuple[dict[str, Any], ...], keep) -> bool:
    """Whether either experiment generated for a row ``keep`` accepts (a metric of neither gets no row)."""
    return any(e["described"] and any(keep(g) for g in e["described"].values()) for e in exps)


def _per_report(row: str, column: str):
    """Comparator of a per-report metric of ``eval/report_metric_scores.csv`` (the same chest reports)."""

    def compare(
        a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int
    ) -> dict[str, dict[str, Any]]:
        from medlens.evaluate.paired import paired_mean_difference

        tables = []
        for e in (a, b):
            path = e["paired_inputs"].get("report_metric_scores")
            if not path or not Path(path).is_file():
                return {row: {"not_computed": f"{e['name']} has no report_metric_scores.csv"}}
            with open(path, newline="", encoding="utf-8") as f:
                tables.append({r["id"]: r for r in csv.DictReader(f)})
        ta, tb = tables
        if not ta or ta.keys() != tb.keys():
            return {row: {"not_computed": f"different chest test reports ({len(ta)} and {len(tb)})"}}
        if any(column not in next(iter(t.values())) for t in tables):
            return {row: {"not_computed": f"{column} was not computed for both"}}
        ra, rb = _chest_reports(a), _chest_reports(b)
        if ra is None or rb is None or any(ra[i][0] != rb[i][0] for i in ta):
            return {row: {"not_computed": "the two experiments' reference reports differ"}}
        ids = sorted(ta)
        result = paired_mean_difference(
            [float(ta[i][column]) for i in ids],
            [float(tb[i][column]) for i in ids],
            n_resamples=n_resamples,
            seed=seed,
        )
        return {row: {**result, "n": len(ids)}}

    return compare


# the field's report metrics compared per report: (row name, metric, column of the scores CSV)
_PER_REPORT = (
    ("BERTScore F1", "bertscore", "bertscore"),
    ("SembScore", "sembscore", "sembscore"),
    ("RadGraph F1 (partial)", "radgraph", "radgraph_partial"),
    ("RadCliQ-v1 (lower is better)", "radcliq", "radcliq_v1"),
    ("RaTEScore", "ratescore", "ratescore"),
    ("GREEN", "green", "green"),
)


def _scored(a: dict[str, Any], b: dict[str, Any], metric: str) -> bool:
    """Whether either experiment computed ``metric`` (one neither computed gets no row)."""
    return any(
        (dig(e, f"report_metrics_eval.metrics.{metric}") or {"not_computed": "absent"}).keys()
        - {"not_computed", "fetch"}
        for e in (a, b)
    )


def experiment_differences(experiments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric and pair of experiments (in ``run`` order): the paired difference ``a - b``."""
    rows = []
    # each experiment's generations, and their rows described by its pairs table, read once for all its comparisons
    experiments = [{**e, "generations": _generations(e)} for e in experiments]
    experiments = [{**e, "described": _described(e, e["generations"])} for e in experiments]
    experiments = [{**e, "probe_rows": read_experiment_probes(e)} for e in experiments]
    for a, b in itertools.combinations(experiments, 2):
        n_resamples, seed = _settings(a)
        comparisons = [
            ("encoder", lambda *args: {"zero-shot mean AUC": _zero_shot(*args)}),
            ("encoder", compare_probes("encoder")),  # a row per probe both experiments ran
            *(("encoder", _encoder_graded(m)) for m in MODALITY_TASKS if _classified((a, b), m)),
            # clinical F1 where there are chest reports, or to say why not when generations are missing
            *(
                (("decoder", _clinical),)
                if _has_rows((a, b), _chest_row) or not all(e["described"] for e in (a, b))
                else ()
            ),
            ("decoder", _text),
            *(
                ("decoder", _graded(modality))
                for modality, (_, classes) in MODALITY_TASKS.items()
                if _has_rows((a, b), lambda g, m=modality, c=list(classes): _graded_row(g, m, c))
            ),
            *((("decoder", _vqa),) if _has_rows((a, b), lambda g: g["text_source"] == "vqa") else ()),
            *(
                ("decoder", _per_report(row, column))
                for row, metric, column in _PER_REPORT
                if _scored(a, b, metric)
            ),
            ("decoder", compare_probes("decoder")),  # a captioner's own tower
        ]
        for stage, compare in comparisons:
            if not all(stage in e["stages"] for e in (a, b)):
                continue
            for metric, result in compare(a, b, n_resamples, seed).items():
                rows.append(
                    {
                        "metric": metric,
                        "a": a["name"],
                        "b": b["name"],
                        "n": result.get("n"),
                        "difference": result.get("value"),
                        "ci_low": result.get("ci_low"),
                        "ci_high": result.get("ci_high"),
                        "excludes_zero": result.get("excludes_zero"),
                        "n_skipped_resamples": result.get("n_skipped_resamples"),
                        "not_computed": result.get("not_computed"),
                    }
                )
    return rows


def write_differences(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """``results/paper/differences.csv`` (a header alone when ``run`` holds one experiment)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=DIFFERENCE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
