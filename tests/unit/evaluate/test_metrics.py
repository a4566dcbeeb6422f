"""Tests of medlens.evaluate.metrics: AUC on known cases, the vectorised forms against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medlens.errors import DataError
from medlens.evaluate.metrics import (
    _macro_f1_rows,
    auc_rows,
    classification_metrics,
    per_label_auc,
    roc_points,
)

LABELS = ["perfect", "reversed", "random", "one class"]


@pytest.fixture(scope="module")
def known_case():
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random((n, 4)) < 0.3).astype(int)
    y[:, 3] = 0
    scores = np.stack(
        [y[:, 0] + 0.1 * rng.random(n), -y[:, 1] + 0.1 * rng.random(n), rng.random(n), rng.random(n)], axis=1
    )
    return scores, y, per_label_auc(scores, y, LABELS, n_resamples=200, seed=0)


def test_perfect_reversed_random(known_case):
    _, _, res = known_case
    assert res["per_label"]["perfect"]["auc"] == 1.0
    assert res["per_label"]["reversed"]["auc"] == 0.0
    assert abs(res["per_label"]["random"]["auc"] - 0.5) < 0.05
    low, high = res["per_label"]["random"]["ci_low"], res["per_label"]["random"]["ci_high"]
    assert low < 0.5 < high


def test_one_class_label_is_not_computed_and_left_out_of_mean(known_case):
    _, _, res = known_case
    entry = res["per_label"]["one class"]
    assert entry["auc"] is None and entry["ci_low"] is None and entry["fpr"] is None
    assert "one class" in entry["reason"]
    assert entry["n_pos"] == 0 and entry["n_neg"] == 2000
    assert res["mean"]["labels"] == ["perfect", "reversed", "random"]
    assert res["mean"]["auc"] == pytest.approx(np.mean([res["per_label"][k]["auc"] for k in LABELS[:3]]))
    low, high = res["mean"]["ci_low"], res["mean"]["ci_high"]
    assert low <= res["mean"]["auc"] <= high


def test_roc_points_thinned_and_json_serialisable(known_case):
    scores, y, res = known_case
    roc = res["per_label"]["random"]
    assert 2 < len(roc["fpr"]) <= 200
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0)
    full = roc_points(scores[:, 2], y[:, 2], max_points=10**6)
    assert len(full["fpr"]) > 200
    json.dumps(res, allow_nan=False)


def test_auc_rows_equals_sklearn_on_resamples_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    targets = rng.random(40) < 0.4
    idx = rng.integers(0, 40, size=(50, 40))
    ours = auc_rows(scores[idx], targets[idx])
    for row, value in zip(idx, ours, strict=True):
        if targets[row].all() or not targets[row].any():
            assert np.isnan(value)
        else:
            assert value == pytest.approx(roc_auc_score(targets[row], scores[row]), abs=1e-12)


def test_auc_rows_single_class_is_nan():
    assert np.isnan(auc_rows(np.array([[0.1, 0.2, 0.3]]), np.array([[True, True, True]]))[0])


def test_macro_f1_rows_equals_sklearn():
    rng = np.random.default_rng(2)
    t, p = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
    idx = rng.integers(0, 30, size=(40, 30))
    ours = _macro_f1_rows(t[idx], p[idx], 4)
    ref = [f1_score(t[r], p[r], average="macro", zero_division=0) for r in idx]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_classification_metrics_known_values():
    res = classification_metrics(
        ["a", "a", "b", "c"], ["a", "b", "b", "b"], classes=["a", "b", "c", "d"], n_resamples=200
    )
    assert res["accuracy"]["value"] == 0.5
    # F1: a = 2/3, b = 2*1/(2+2+0) = 0.5, c = 0 (never predicted); d absent from both, not averaged.
    assert res["macro_f1"]["value"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert res["per_class"]["c"]["precision"] is None and "never predicted" in res["per_class"]["c"]["reason"]
    assert res["per_class"]["d"]["f1"] is None and "absent from y_true" in res["per_class"]["d"]["reason"]
    low, high = res["accuracy"]["ci_low"], res["accuracy"]["ci_high"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    json.dumps(res, allow_nan=False)


def test_bad_targets_and_scores_raise():
    with pytest.raises(DataError, match="0 or 1"):
        per_label_auc(np.zeros((3, 1)), np.array([[0], [1], [-1]]), ["x"])
    with pytest.raises(DataError, match="non-finite"):
        per_label_auc(np.array([[0.1], [np.nan]]), np.array([[0], [1]]), ["x"])
    with pytest.raises(DataError, match="shape"):
        per_label_auc(np.zeros((3, 2)), np.zeros((3, 1)), ["x"])
