"""Linear probe on frozen image features: logistic regression, C chosen on the validation split.

Seed 004 (LAPVQA) reports frozen-encoder linear-probe mean AUC on NIH ChestX-ray14 (14 labels) and
CheXpert-5; it does not state the probe, so medlens uses the usual one (CLIP's linear-probe protocol):
features standardised on train, L2-regularised logistic regression (lbfgs) with balanced class weights,
one-vs-rest for multi-label targets, and C chosen from a grid by the validation score (mean AUC for
multi-label, macro-F1 for single-label such as knee KL grade or PAD-UFES-20 diagnosis). The model
fitted on train with the chosen C is scored on test with bootstrap CIs.

A label with one class in train cannot be fitted, and one with one class in test cannot be scored:
both are reported as not computed with the reason, never as 0.
"""
# long: the label sets, the multi-label, multiclass and per-modality probes and the C search they share

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.evaluate.metrics import binary_targets, classification_metrics, not_computed_auc, per_label_auc

__all__ = ["fit_class_probe", "linear_probe", "targets_from_labels", "LABEL_SETS", "DEFAULT_C_GRID"]

logger = logging.getLogger(__name__)

LABEL_SETS: dict[str, list[str]] = {
    # The CheXpert competition labels (Irvin et al. 2019), seed 004's "CheXpert-5".
    "chexpert5": ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"],
    "chexpert14": list(FINDINGS),
    # NIH ChestX-ray14 findings, spelled as in Data_Entry_2017.csv (datasets.md section 2).
    "nih14": [
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural_Thickening",
        "Hernia",
    ],
}

DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)


def targets_from_labels(label_lists: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """``[N, L]`` 0/1 matrix from per-row label lists (the data contract's ``labels`` column).

    Args:
        label_lists: for each row, the findings present.
        labels: the columns, e.g. ``LABEL_SETS["chexpert5"]``.

    Returns:
        int8 array, 1 where the row lists the label.
    """
    return np.array([[label in set(row) for label in labels] for row in label_lists], dtype=np.int8).reshape(
        len(label_lists), len(labels)
    )


def linear_probe(
    x_train: np.ndarray,
    y_train: Any,
    x_val: np.ndarray,
    y_val: Any,
    x_test: np.ndarray,
    y_test: Any,
    labels: str | Sequence[str] | None = None,
    *,
    task: Literal["multilabel", "multiclass"] | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    max_iter: int = 1000,
    scores_out: list | None = None,
) -> dict[str, Any]:
    """Fit logistic-regression probes on train, choose C on val, score on test with bootstrap CIs.

    ``[N, L]`` 0/1 targets are multi-label (one-vs-rest, scored by per-label and mean AUC); ``[N]``
    class targets are single-label (multinomial, scored by accuracy and macro-F1).

    Args:
        x_train, x_val, x_test: ``[N, D]`` frozen image features of each split.
        y_train, y_val, y_test: targets of each split (see above).
        labels: multi-label: the column names or a key of ``LABEL_SETS`` (required). Single-label: the
            class names; integer targets are then codes into it (a code outside it, e.g. -1 for a class
            missing from train, is kept as its own class ``"code -1"``).
        task: ``"multilabel"`` or ``"multiclass"``; inferred from the targets' shape when None.
        c_grid: inverse regularisation strengths tried on val.
        n_resamples: bootstrap resamples on test.
        seed: seed of the resampling.
        alpha: 1 - confidence level.
        max_iter: lbfgs iterations per fit.
        scores_out: multi-label only: when given and a probe was fitted, ``{"labels", "scores", "targets"}``
            of the fitted labels (``[N, L']`` test probabilities and 0/1 truth) is appended to it (for paired
            comparisons between models); nothing is appended when none could be fitted.

    Returns:
        ``{"protocol": {"task", "c_grid", "chosen_c", "grid": [{"C", "val_score", "converged"}], ...},
        ...}`` plus ``"per_label"``/``"mean"`` (as :func:`~medlens.evaluate.metrics.per_label_auc`) for
        multi-label or ``"accuracy"``/``"macro_f1"``/``"per_class"`` for single-label. When no C can be
        chosen (no label or class varies in train and val) ``chosen_c`` is None and ``reason`` says why.

    Raises:
        ConfigError: on an unknown label set or task, a missing ``labels``, a ``task`` that contradicts the
            targets' shape, or an empty/non-positive C grid.
        DataError: on mismatched shapes or non-finite features.
    """
    # long: its docstring (32 lines); then one probe per label set, each with its reason when skipped
    grid = sorted({float(c) for c in c_grid})
    if not grid or grid[0] <= 0:
        raise ConfigError(f"c_grid={list(c_grid)}", key="linear_probe.c_grid", expected="positive numbers")
    label_set = labels if isinstance(labels, str) else None
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            raise ConfigError(
                f"unknown label set '{labels}'", key="labels", expected=f"one of {sorted(LABEL_SETS)}"
            )
        labels = LABEL_SETS[labels]
    xs = [_features(x, name) for x, name in ((x_train, "train"), (x_val, "val"), (x_test, "test"))]
    ys = [np.asarray(y) for y in (y_train, y_val, y_test)]
    for x, y, name in zip(xs, ys, ("train", "val", "test"), strict=True):
        if len(x) != len(y):
            raise DataError(
                f"{len(x)} feature rows but {len(y)} target rows",
                column=f"{name} targets",
                expected="one target row per feature row",
            )
    if len({x.shape[1] for x in xs}) != 1:
        raise DataError(
            f"feature sizes differ: {[x.shape[1] for x in xs]}",
            column="features",
            expected="the same encoder's features in every split",
        )
    protocol = {
        "model": "StandardScaler + LogisticRegression(L2, lbfgs, class_weight='balanced')",
        "fit_on": "train",
        "c_grid": grid,
        "max_iter": max_iter,
        "n_train": len(xs[0]),
        "n_val": len(xs[1]),
        "n_test": len(xs[2]),
        "n_resamples": n_resamples,
        "seed": seed,
        "alpha": alpha,
    }
    inferred = "multilabel" if ys[0].ndim == 2 else "multiclass"
    if task not in (None, inferred):
        raise ConfigError(
            f"task '{task}' but targets of shape {ys[0].shape}",
            key="task",
            expected="[N, L] 0/1 targets for 'multilabel', [N] classes for 'multiclass'",
        )
    if inferred == "multilabel":
        if labels is None:
            raise ConfigError(
                "multi-label targets need label names",
                key="labels",
                expected=f"a list of {ys[0].shape[1]} names or one of {sorted(LABEL_SETS)}",
            )
        protocol.update(
            task="multilabel (one-vs-rest)",
            label_set=label_set,
            labels=list(labels),
            selection="C maximising mean val AUC over labels with both classes in train and val; "
            "ties go to the smaller C",
        )
        return _multilabel(xs, ys, list(labels), grid, protocol, max_iter, scores_out)
    protocol.update(
        task="single-label (multinomial)", selection="C maximising val macro-F1; ties go to the smaller C"
    )
    if labels is not None and all(np.issubdtype(y.dtype, np.integer) for y in ys):
        names = list(labels)
        ys = [
            np.array([names[v] if 0 <= v < len(names) else f"code {v}" for v in y.tolist()], dtype=object)
            for y in ys
        ]
    return _multiclass(xs, ys, grid, protocol, max_iter, None if labels is None else list(labels))


def _multilabel(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    labels: list[str],
    grid: list[float],
    protocol: dict[str, Any],
    max_iter: int,
    scores_out: list | None = None,
) -> dict[str, Any]:
    # long: the targets, the fitted-label subset and three closures are shared by the C search and the scoring
    y_train, y_val, y_test = (
        binary_targets(y, labels, name=f"{s} targets")
        for y, s in zip(ys, ("train", "val", "test"), strict=True)
    )
    fit = [j for j in range(len(labels)) if 0 < y_train[:, j].sum() < len(y_train)]
    scored = [k for k, j in enumerate(fit) if 0 < y_val[:, j].sum() < len(y_val)]  # positions within `fit`

    def model(c: float) -> Pipeline:
        return make_pipeline(
            StandardScaler(),
            OneVsRestClassifier(LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)),
        )

    def proba(m: Pipeline, x: np.ndarray) -> np.ndarray:  # [N, len(fit)]
        p = m.predict_proba(x)
        return p[:, 1:] if len(fit) == 1 else p  # one column is fitted as a binary problem

    def val_score(m: Pipeline) -> float:
        p = proba(m, xs[1])
        return float(np.mean([roc_auc_score(y_val[:, fit[k]], p[:, k]) for k in scored]))

    reason = (
        None
        if scored
        else (
            "no label has both classes in train"
            if not fit
            else "no fitted label has both classes in val, so C cannot be chosen"
        )
    )
    y_fit = y_train[:, fit].astype(np.int8)
    chosen, rows = _select(
        model, xs[0], y_fit if len(fit) > 1 else y_fit.ravel(), val_score, grid, skip=reason
    )
    protocol.update(chosen_c=None if chosen is None else chosen[0], grid=rows, reason=reason)

    scores = np.zeros(y_test.shape)
    if chosen is not None:
        scores[:, fit] = proba(chosen[1], xs[2])
    fit_names = [labels[j] for j in fit]
    if scores_out is not None and chosen is not None and fit:
        scores_out.append({"labels": fit_names, "scores": scores[:, fit], "targets": y_test[:, fit]})
    result = (
        per_label_auc(
            scores[:, fit],
            y_test[:, fit],
            fit_names,
            n_resamples=protocol["n_resamples"],
            seed=protocol["seed"],
            alpha=protocol["alpha"],
        )
        if chosen is not None and fit
        else None
    )
    per_label = {}
    for j, label in enumerate(labels):
        if result is not None and label in result["per_label"]:
            per_label[label] = result["per_label"][label]
            continue
        n_pos = int(y_test[:, j].sum())
        why = (
            f"only one class in train ({int(y_train[:, j].sum())} positive of {len(y_train)})"
            if j not in fit
            else reason
        )
        per_label[label] = not_computed_auc(n_pos, len(y_test) - n_pos, why)
    mean = (
        result["mean"]
        if result is not None
        else {
            "auc": None,
            "ci_low": None,
            "ci_high": None,
            "labels": [],
            "n_skipped_resamples": None,
            "reason": reason,
        }
    )
    if result is not None:
        protocol.update({k: v for k, v in result["protocol"].items() if k not in protocol})
    return {"protocol": protocol, "per_label": per_label, "mean": mean}


def _multiclass(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    grid: list[float],
    protocol: dict[str, Any],
    max_iter: int,
    listed: list[Any] | None,
) -> dict[str, Any]:
    y_train, y_val, y_test = ys
    for y, s in ((y_train, "train"), (y_val, "val"), (y_test, "test")):
        if y.ndim != 1:
            raise DataError(
                f"targets of shape {y.shape}",
                column=f"{s} targets",
                expected="[N] class labels (or [N, L] 0/1 in every split for multi-label)",
            )
    train_classes = np.unique(y_train).tolist()
    classes = sorted({*train_classes, *np.unique(y_test).tolist(), *(listed or [])}, key=str)
    protocol.update(
        classes=[str(c) for c in classes],
        classes_absent_from_train=[str(c) for c in classes if c not in train_classes],
    )

    def model(c: float) -> Pipeline:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
        )

    def val_score(m: Pipeline) -> float:
        return float(f1_score(y_val, m.predict(xs[1]), average="macro", zero_division=0))

    reason = None if len(train_classes) > 1 else f"train holds one class only ({train_classes})"
    if reason is None and len(y_val) == 0:
        reason = "val split is empty, so C cannot be chosen"
    chosen, rows = _select(model, xs[0], y_train, val_score, grid, skip=reason)
    protocol.update(chosen_c=None if chosen is None else chosen[0], grid=rows, reason=reason)
    if chosen is None:
        empty = {"value": None, "ci_low": None, "ci_high": None}
        return {"protocol": protocol, "accuracy": dict(empty), "macro_f1": dict(empty), "per_class": {}}
    metrics = classification_metrics(
        y_test,
        chosen[1].predict(xs[2]),
        classes=classes,
        n_resamples=protocol["n_resamples"],
        seed=protocol["seed"],
        alpha=protocol["alpha"],
    )
    protocol.update({k: v for k, v in metrics.pop("protocol").items() if k not in protocol})
    return {"protocol": protocol, **metrics}


def fit_class_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 1000,
) -> tuple[Pipeline | None, dict[str, Any]]:
    """A multinomial probe (balanced class weights) with C chosen on val by macro-F1, for callers that need
    its predictions and probabilities (the per-modality scores); None with a reason when none can be fit."""
    grid = sorted({float(c) for c in c_grid})

    def model(c: float) -> Pipeline:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
        )

    reason = None if len(np.unique(y_train)) > 1 else "train holds one class only"
    if reason is None and len(y_val) == 0:
        reason = "val split is empty, so C cannot be chosen"
    chosen, rows = _select(
        model,
        _features(x_train, "train"),
        y_train,
        lambda m: float(
            f1_score(y_val, m.predict(_features(x_val, "val")), average="macro", zero_division=0)
        ),
        grid,
        skip=reason,
    )
    protocol = {
        "probe": "logistic regression on standardised frozen features, balanced class weights, C chosen on "
        "val by macro-F1",
        "c_grid": grid,
        "chosen_c": None if chosen is None else chosen[0],
        "grid": rows,
        "reason": reason,
    }
    return (None if chosen is None else chosen[1]), protocol


def _select(
    model, x: np.ndarray, y: np.ndarray, score, grid: list[float], *, skip: str | None
) -> tuple[tuple[float, Pipeline] | None, list[dict[str, Any]]]:
    """Fit one model per C (ascending) and keep the best val score; the first of equal scores wins."""
    if skip is not None:
        logger.warning("linear probe not computed: %s", skip)
        return None, []
    best: tuple[float, Pipeline] | None = None
    best_score, rows = -np.inf, []
    for c in grid:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            m = model(c).fit(x, y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        s = score(m)
        rows.append({"C": c, "val_score": s, "converged": converged})
        if s > best_score:
            best, best_score = (c, m), s
    unconverged = [r["C"] for r in rows if not r["converged"]]
    if unconverged:
        logger.warning("linear probe: lbfgs did not converge for C in %s (raise max_iter)", unconverged)
    logger.info("linear probe: chose C=%s (val score %.4f) from %s", best[0], best_score, grid)
    return best, rows


def _features(x: Any, split: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"features of shape {a.shape}", column=f"{split} features", expected="[N, D]")
    if not np.isfinite(a).all():
        raise DataError(
            "non-finite feature",
            row=int(np.argwhere(~np.isfinite(a))[0, 0]),
            column=f"{split} features",
            expected="finite numbers",
        )
    return a
