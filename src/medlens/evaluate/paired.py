"""Paired bootstrap differences between two models scored on the same test rows.

Two experiments evaluated on the same rows are compared the way a paper needs: both are scored on the
*same* resamples of those rows, and the interval is the percentile interval of the difference. A
difference whose interval excludes zero is one the test set supports; two overlapping marginal
intervals say nothing either way, which is why the paper table gives these.

* Zero-shot and linear-probe mean AUC: the mean over the labels that have both classes in the full set; a resample on
  which any of them has a single class is skipped and counted (as for the marginal interval).
* Clinical micro- and macro-F1 (CheXpert-14 and -5): from each model's generated reports labelled
  against the shared references; the macro is sklearn's, every observation averaged (the papers').
* BLEU-n: sacrebleu's per-report n-gram statistics of both models, summed over the same resample.
* Per-report scores (ROUGE-L, CIDEr-D, BERTScore, RadGraph F1, VQA exact match...): the difference of
  their means.
* Any metric of true and predicted classes (knee KL accuracy and kappa, skin balanced accuracy...): the
  difference of the metric on each shared resample.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from medlens.errors import ConfigError, DataError
from medlens.evaluate.bootstrap import bootstrap
from medlens.evaluate.clinical import macro_f1, micro_f1
from medlens.evaluate.metrics import auc_rows
from medlens.io import atomic_path

__all__ = [
    "paired_auc_difference",
    "paired_f1_difference",
    "paired_bleu_difference",
    "paired_mean_difference",
    "paired_metric_difference",
    "write_scores",
    "write_class_predictions",
    "read_class_predictions",
    "read_scores",
    "write_probe_scores",
    "read_probe_scores",
    "PROBE_SCORE_COLUMNS",
]


def _excludes_zero(result: dict[str, Any]) -> dict[str, Any]:
    low, high = result["ci_low"], result["ci_high"]
    result["excludes_zero"] = None if low is None else bool(low > 0 or high < 0)
    return result


def paired_auc_difference(
    scores_a: np.ndarray, scores_b: np.ndarray, targets: np.ndarray, *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean AUC of ``a`` minus that of ``b`` over the labels with both classes, with its paired interval.

    Args:
        scores_a, scores_b: ``[N, L]`` scores of the two models on the same rows, same label order.
        targets: ``[N, L]`` 0/1 truth.
    """
    scores_a, scores_b, targets = (np.asarray(x, float) for x in (scores_a, scores_b, targets))
    if not scores_a.shape == scores_b.shape == targets.shape:
        raise DataError(
            f"score shapes {scores_a.shape}, {scores_b.shape} and targets {targets.shape} differ",
            expected="both models scored on the same rows and labels",
        )
    both = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]

    def difference(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:  # [B, n, L] each
        diffs = [auc_rows(a[..., j], t[..., j] > 0) - auc_rows(b[..., j], t[..., j] > 0) for j in both]
        return np.mean(diffs, axis=0) if both else np.full(len(a), np.nan)

    result = bootstrap(
        difference, scores_a, scores_b, targets, n_resamples=n_resamples, seed=seed, vectorized=True
    )
    result["labels_averaged"] = len(both)
    return _excludes_zero(result)


def paired_mean_difference(
    scores_a: np.ndarray, scores_b: np.ndarray, *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean per-report score of ``a`` minus that of ``b`` (BERTScore, RadGraph F1...), paired by report."""
    scores_a, scores_b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if scores_a.shape != scores_b.shape:
        raise DataError(
            f"{len(scores_a)} and {len(scores_b)} scores", expected="both models scored on the same reports"
        )
    result = bootstrap(
        lambda a, b: a.mean(axis=1) - b.mean(axis=1),
        scores_a,
        scores_b,
        n_resamples=n_resamples,
        seed=seed,
        vectorized=True,
    )
    return _excludes_zero(result)


def paired_f1_difference(
    generated_a: np.ndarray,
    generated_b: np.ndarray,
    references: np.ndarray,
    *,
    average: str = "micro",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """F1 of ``a``'s reports minus ``b``'s against the same references, with its paired interval.

    Args:
        generated_a, generated_b, references: ``[N, L]`` 0/1 labels of each report (the labeler's
            output, binarised as clinical efficacy binarises it).
        average: ``micro`` or ``macro`` (every observation averaged, one absent from both sides as 0).
    """
    f1 = {"micro": lambda r, g: micro_f1(r, g, axis=(1, 2)), "macro": lambda r, g: macro_f1(r, g, axis=1)}
    if average not in f1:
        raise ConfigError(f"unknown F1 average {average!r}", key="average", expected="micro or macro")
    a, b, ref = (np.asarray(x).astype(bool) for x in (generated_a, generated_b, references))
    if not a.shape == b.shape == ref.shape:
        raise DataError(
            f"label shapes {a.shape}, {b.shape} and references {ref.shape} differ",
            expected="both models' reports for the same rows and observations",
        )

    def difference(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:  # [B, n, L] each
        return f1[average](r, x) - f1[average](r, y)

    return _excludes_zero(
        bootstrap(difference, a, b, ref, n_resamples=n_resamples, seed=seed, vectorized=True)
    )


def paired_metric_difference(
    metric: Callable[[np.ndarray, np.ndarray], float],
    truth: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``metric(truth, a) - metric(truth, b)`` (accuracy, kappa, balanced accuracy...) with its paired
    interval; a resample on which the metric is undefined (NaN) is skipped and counted."""
    truth, predicted_a, predicted_b = (np.asarray(x) for x in (truth, predicted_a, predicted_b))
    if not truth.shape == predicted_a.shape == predicted_b.shape:
        raise DataError(
            f"{len(predicted_a)} and {len(predicted_b)} predictions for {len(truth)} rows",
            expected="both models' predictions for the same rows",
        )
    return _excludes_zero(
        bootstrap(
            lambda t, x, y: metric(t, x) - metric(t, y),
            truth,
            predicted_a,
            predicted_b,
            n_resamples=n_resamples,
            seed=seed,
        )
    )


def paired_bleu_difference(
    generated_a: list[str],
    generated_b: list[str],
    references: list[str],
    *,
    max_order: int = 4,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Corpus BLEU-``max_order`` of ``a``'s reports minus ``b``'s against the same references, with its
    paired interval (each resample's corpus BLEU from the sum of its reports' n-gram statistics, as the
    marginal interval of :func:`medlens.evaluate.text_metrics.text_metric_intervals`)."""
    from medlens.evaluate.text_metrics import bleu_statistics

    if not len(generated_a) == len(generated_b) == len(references):
        raise DataError(
            f"{len(generated_a)} and {len(generated_b)} reports for {len(references)} references",
            expected="both models' reports for the same rows",
        )
    score, stats_a = bleu_statistics(generated_a, references, max_order)
    _, stats_b = bleu_statistics(generated_b, references, max_order)
    return _excludes_zero(
        bootstrap(
            lambda a, b: score(a.sum(0)) - score(b.sum(0)),
            stats_a,
            stats_b,
            n_resamples=n_resamples,
            seed=seed,
        )
    )


def write_scores(path: str | os.PathLike, ids: list[str], labels: list[str], scores, targets) -> None:
    """``eval/zero_shot_scores.csv``: each row's zero-shot score (log-odds) and truth per label."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", *(f"score:{lab}" for lab in labels), *(f"target:{lab}" for lab in labels)])
        for i, row_id in enumerate(ids):
            w.writerow([row_id, *(repr(float(s)) for s in scores[i]), *(int(t) for t in targets[i])])


def read_scores(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``(ids, labels, scores [N, L], targets [N, L])`` of a file written by :func:`write_scores`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if not header or header[0] != "id":
        raise DataError(
            "not a zero-shot scores file", file=str(path), row=1, expected="id, score:*, target:*"
        )
    labels = [h.split(":", 1)[1] for h in header if h.startswith("score:")]
    n = len(labels)
    try:
        scores = np.array([[float(v) for v in r[1 : 1 + n]] for r in rows]).reshape(len(rows), n)
        targets = np.array([[int(v) for v in r[1 + n : 1 + 2 * n]] for r in rows]).reshape(len(rows), n)
    except ValueError as e:
        raise DataError(f"a value is not a number ({e})", file=str(path)) from None
    return [r[0] for r in rows], labels, scores, targets


CLASS_COLUMNS = ["id", "modality", "truth", "zero_shot", "linear_probe"]


def write_class_predictions(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """``eval/class_predictions.csv``: each knee or skin test row's true class and the encoder's zero-shot
    and linear-probe classes (the probe's empty when it could not be fit); a header alone without such rows."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CLASS_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def read_class_predictions(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a file written by :func:`write_class_predictions`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != CLASS_COLUMNS:
            raise DataError(
                f"columns {reader.fieldnames}", file=str(path), row=1, expected=", ".join(CLASS_COLUMNS)
            )
        return list(reader)


PROBE_SCORE_COLUMNS = ["evaluation", "id", "label", "score", "target"]


def write_probe_scores(path: str | os.PathLike, probes: list[dict[str, Any]]) -> None:
    """``eval/probe_scores.csv`` (``eval/tower_probe_scores.csv`` for a captioner's tower): each linear probe's
    test probability and truth, one line per row and fitted label (label sets differ in their labels, so one
    table holds them all in long form); a header alone when no multi-label probe was fitted.

    Args:
        path: the file to write.
        probes: ``{"evaluation", "ids", "labels", "scores", "targets"}`` per probe, ``evaluation`` the path of
            its result in the evaluation's JSON (``linear_probe/chexpert5``,
            ``external_probes/nih14/nih14``), ``scores`` and ``targets`` ``[N, L]``.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(PROBE_SCORE_COLUMNS)
        for p in probes:
            for i, row_id in enumerate(p["ids"]):
                for j, label in enumerate(p["labels"]):
                    w.writerow(
                        [
                            p["evaluation"],
                            row_id,
                            label,
                            repr(float(p["scores"][i, j])),
                            int(p["targets"][i, j]),
                        ]
                    )


def read_probe_scores(
    path: str | os.PathLike,
) -> dict[str, tuple[list[str], list[str], np.ndarray, np.ndarray]]:
    """``{evaluation: (ids, labels, scores [N, L], targets [N, L])}`` of a file written by
    :func:`write_probe_scores`, rows and labels in the order written.

    Raises:
        DataError: on other columns, a value that is not a number, or a probe missing a row's label or
            holding it twice.
    """
    cells: dict[str, dict[tuple[str, str], tuple[float, int]]] = {}
    order: dict[str, tuple[dict[str, None], dict[str, None]]] = {}  # insertion-ordered ids and labels
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != PROBE_SCORE_COLUMNS:
            raise DataError(
                f"columns {reader.fieldnames}", file=str(path), row=1, expected=", ".join(PROBE_SCORE_COLUMNS)
            )
        for line, r in enumerate(reader, start=2):
            key = (r["id"], r["label"])
            probe = cells.setdefault(r["evaluation"], {})
            if key in probe:
                raise DataError(
                    f"{r['evaluation']}: label {r['label']!r} twice",
                    file=str(path),
                    row=line,
                    column="label",
                    expected="one line per probe, row and label",
                )
            try:
                probe[key] = (float(r["score"]), int(r["target"]))
            except ValueError as e:
                raise DataError(f"a value is not a number ({e})", file=str(path), row=line) from None
            ids, labels = order.setdefault(r["evaluation"], ({}, {}))
            ids[r["id"]], labels[r["label"]] = None, None
    out = {}
    for evaluation, probe in cells.items():
        ids, labels = (list(d) for d in order[evaluation])
        if len(probe) != len(ids) * len(labels):
            raise DataError(
                f"{evaluation}: {len(probe)} lines for {len(ids)} rows and {len(labels)} labels",
                file=str(path),
                column="label",
                expected="every row scored on every label of its probe",
            )
        values = np.array([[probe[i, lab] for lab in labels] for i in ids], dtype=float).reshape(
            len(ids), len(labels), 2
        )
        out[evaluation] = (ids, labels, values[..., 0], values[..., 1].astype(int))
    return out
