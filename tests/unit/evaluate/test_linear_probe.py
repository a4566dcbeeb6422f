"""Tests of medlens.evaluate.linear_probe: C chosen on val, separable vs noise data, not-computed labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.evaluate.linear_probe import LABEL_SETS, linear_probe, targets_from_labels

C5 = LABEL_SETS["chexpert5"]


def _multilabel(n: int, seed: int, signal: float = 3.0, dim: int = 12):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 5)) < 0.3).astype(int)
    x = rng.normal(size=(n, dim))
    x[:, :5] += signal * y
    return x, y


def _splits(signal: float = 3.0):
    return [*_multilabel(150, 0, signal), *_multilabel(80, 1, signal), *_multilabel(200, 2, signal)]


def test_separable_data_gives_high_auc_and_states_protocol():
    res = linear_probe(*_splits(), labels="chexpert5", n_resamples=100)
    assert res["mean"]["auc"] > 0.95
    assert all(res["per_label"][k]["auc"] > 0.9 for k in C5)
    low, high = res["mean"]["ci_low"], res["mean"]["ci_high"]
    assert low <= res["mean"]["auc"] <= high
    proto = res["protocol"]
    assert proto["label_set"] == "chexpert5" and proto["labels"] == C5
    assert proto["c_grid"] == [0.01, 0.1, 1.0, 10.0] and proto["chosen_c"] in proto["c_grid"]
    assert [row["C"] for row in proto["grid"]] == proto["c_grid"]
    assert {"n_train", "n_val", "n_test", "n_resamples", "seed", "selection", "model"} <= set(proto)
    json.dumps(res, allow_nan=False)


def test_noise_gives_auc_near_half():
    res = linear_probe(*_splits(signal=0.0), labels=C5, n_resamples=100)
    assert abs(res["mean"]["auc"] - 0.5) < 0.1


def test_c_is_chosen_by_val_score():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    res = linear_probe(x_tr, y_tr, x_va, 1 - y_va, x_te, y_te, labels=C5, n_resamples=20)
    scores = [row["val_score"] for row in res["protocol"]["grid"]]
    # Val targets are inverted, so every val score is far below 0.5 while test stays high: the
    # recorded scores come from val, and the chosen C is their argmax.
    assert max(scores) < 0.2 and res["mean"]["auc"] > 0.9
    assert res["protocol"]["chosen_c"] == res["protocol"]["grid"][int(np.argmax(scores))]["C"]


def test_ties_go_to_the_smaller_c():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits(signal=20.0)
    res = linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5, c_grid=[10.0, 1.0], n_resamples=10)
    assert [row["val_score"] for row in res["protocol"]["grid"]] == [1.0, 1.0]
    assert res["protocol"]["chosen_c"] == 1.0


def test_labels_missing_from_train_or_test_are_not_computed():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    y_tr[:, 3] = 0  # Edema never positive in train
    y_te[:, 4] = 0  # Pleural Effusion never positive in test
    res = linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5, n_resamples=20)
    assert res["per_label"]["Edema"]["auc"] is None and "train" in res["per_label"]["Edema"]["reason"]
    assert (
        res["per_label"]["Pleural Effusion"]["auc"] is None and res["per_label"]["Pleural Effusion"]["reason"]
    )
    assert res["mean"]["labels"] == ["Atelectasis", "Cardiomegaly", "Consolidation"]


def test_a_single_fittable_label_works():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    y_tr[:, 1:] = 0
    res = linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5, n_resamples=20)
    assert res["per_label"]["Atelectasis"]["auc"] > 0.9 and res["mean"]["labels"] == ["Atelectasis"]


def test_no_val_signal_reports_not_computed():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    res = linear_probe(x_tr, y_tr, x_va, np.zeros_like(y_va), x_te, y_te, labels=C5, n_resamples=20)
    assert res["protocol"]["chosen_c"] is None and "val" in res["protocol"]["reason"]
    assert res["mean"]["auc"] is None and all(v["auc"] is None for v in res["per_label"].values())


def test_single_label_accuracy_and_macro_f1():
    rng = np.random.default_rng(3)
    grades = np.array(["KL0", "KL1", "KL2"])
    y = rng.integers(0, 3, 400)
    x = rng.normal(size=(400, 6))
    x[np.arange(400), y] += 4.0
    y = grades[y]
    y_test = y[300:].copy()
    y_test[:5] = "KL4"  # a grade never seen in train
    res = linear_probe(x[:200], y[:200], x[200:300], y[200:300], x[300:], y_test, n_resamples=100)
    assert res["accuracy"]["value"] > 0.85 and res["macro_f1"]["value"] > 0.6
    assert res["accuracy"]["ci_low"] <= res["accuracy"]["value"] <= res["accuracy"]["ci_high"]
    assert res["protocol"]["classes_absent_from_train"] == ["KL4"]
    assert res["per_class"]["KL4"]["recall"] == 0.0 and res["per_class"]["KL4"]["precision"] is None
    assert res["protocol"]["task"].startswith("single-label")
    json.dumps(res, allow_nan=False)


def test_integer_codes_are_named_by_labels_and_unknown_codes_kept():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    x = rng.normal(size=(300, 4))
    x[:, 0] += 4.0 * y
    y_test = y[200:].copy()
    y_test[:3] = -1  # a class the caller could not code because train never had it
    res = linear_probe(
        x[:120],
        y[:120],
        x[120:200],
        y[120:200],
        x[200:],
        y_test,
        ["benign", "malignant"],
        task="multiclass",
        n_resamples=50,
    )
    assert set(res["per_class"]) == {"benign", "malignant", "code -1"}
    assert res["per_class"]["code -1"]["support"] == 3 and res["per_class"]["code -1"]["recall"] == 0.0
    assert res["protocol"]["classes_absent_from_train"] == ["code -1"]


def test_task_must_match_targets():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    with pytest.raises(ConfigError, match="task 'multiclass'"):
        linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, C5, task="multiclass")


def test_label_sets():
    assert LABEL_SETS["chexpert14"] == list(FINDINGS)
    assert set(LABEL_SETS["chexpert5"]) <= set(FINDINGS)
    assert len(LABEL_SETS["nih14"]) == 14 and {"Effusion", "Pleural_Thickening", "Hernia"} <= set(
        LABEL_SETS["nih14"]
    )


def test_targets_from_labels():
    t = targets_from_labels([["Edema", "Atelectasis"], [], ["Other"]], C5)
    np.testing.assert_array_equal(t, [[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])


def test_bad_inputs_raise():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    with pytest.raises(ConfigError, match="unknown label set"):
        linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels="nih15")
    with pytest.raises(ConfigError, match="label names"):
        linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te)
    with pytest.raises(DataError, match="target rows"):
        linear_probe(x_tr, y_tr[:-1], x_va, y_va, x_te, y_te, labels=C5)
    with pytest.raises(ConfigError, match="c_grid"):
        linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5, c_grid=[0.0])
    x_te = x_te.copy()
    x_te[3, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5)


def test_the_fitted_labels_test_probabilities_are_handed_out_for_paired_comparisons():
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits()
    y_tr[:, 4] = 0  # Pleural Effusion never positive in train: not fitted, so no scores of it
    scores: list = []
    res = linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te, labels=C5, n_resamples=20, scores_out=scores)
    (got,) = scores
    assert got["labels"] == C5[:4] and got["scores"].shape == got["targets"].shape == (200, 4)
    np.testing.assert_array_equal(got["targets"], y_te[:, :4])
    assert ((got["scores"] >= 0) & (got["scores"] <= 1)).all()  # probabilities
    from sklearn.metrics import roc_auc_score

    for j, label in enumerate(C5[:4]):  # the very scores the marginal AUCs come from
        assert roc_auc_score(y_te[:, j], got["scores"][:, j]) == pytest.approx(res["per_label"][label]["auc"])
    # nothing when no probe could be fitted, nor for a single-label probe
    linear_probe(
        x_tr, np.zeros_like(y_tr), x_va, y_va, x_te, y_te, labels=C5, n_resamples=5, scores_out=scores
    )
    grades = np.array(["KL0", "KL1"])
    linear_probe(
        x_tr, grades[y_tr[:, 0]], x_va, grades[y_va[:, 0]], x_te, grades[y_te[:, 0]], scores_out=scores
    )
    assert len(scores) == 1
