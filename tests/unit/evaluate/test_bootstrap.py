"""Tests of medlens.evaluate.bootstrap: agreement with scipy, skipping undefined resamples, CI behaviour."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from medlens.errors import ConfigError, DataError
from medlens.evaluate.bootstrap import bootstrap, bootstrap_ci, bootstrap_distribution, percentile_ci


def test_matches_scipy_percentile_bootstrap_exactly():
    x = np.random.default_rng(1).normal(size=60)
    ours = bootstrap_ci(np.mean, x, n_resamples=500, seed=3)
    ref = scipy.stats.bootstrap(
        (x,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(3)
    ).confidence_interval
    np.testing.assert_allclose(ours, (ref.low, ref.high), rtol=0, atol=1e-12)


def test_paired_matches_scipy_paired():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.5, size=40)

    def diff(a, b, axis=-1):
        return np.mean(a - b, axis=axis)

    ours = bootstrap_ci(lambda a, b: diff(a, b), x, y, n_resamples=300, seed=5)
    ref = scipy.stats.bootstrap(
        (x, y), diff, paired=True, n_resamples=300, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    np.testing.assert_allclose(ours, (ref.low, ref.high), atol=1e-12)


def test_vectorized_equals_loop():
    x = np.random.default_rng(3).exponential(size=30)
    loop = bootstrap_distribution(np.median, x, n_resamples=200, seed=1)
    vec = bootstrap_distribution(lambda a: np.median(a, axis=1), x, n_resamples=200, seed=1, vectorized=True)
    np.testing.assert_array_equal(loop, vec)


def test_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(4)
    widths = []
    for n in (50, 2000):
        x = rng.normal(loc=1.0, size=n)
        res = bootstrap(np.mean, x, n_resamples=400, seed=0)
        low, high = res["ci_low"], res["ci_high"]
        assert low <= res["value"] <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # width shrinks like 1/sqrt(n): sqrt(40) ~ 6


def test_single_class_auc_resamples_are_skipped_and_counted():
    targets = np.array([1] + [0] * 9)
    scores = np.linspace(1, 0, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on every single-class resample
        res = bootstrap(roc_auc_score, targets, scores, n_resamples=300, seed=0)
        dist = bootstrap_distribution(roc_auc_score, targets, scores, n_resamples=300, seed=0)
    # P(no positive in a resample) = 0.9**10 ~ 0.35.
    assert res["n_skipped_resamples"] == int(np.isnan(dist).sum())
    assert 60 < res["n_skipped_resamples"] < 150
    assert (res["ci_low"], res["ci_high"]) == (1.0, 1.0) and res["value"] == 1.0


def test_all_resamples_undefined_gives_no_interval():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(roc_auc_score, np.zeros(5), np.arange(5.0), n_resamples=20)
        low, high = bootstrap_ci(roc_auc_score, np.zeros(5), np.arange(5.0), n_resamples=20)
    assert (
        res["value"] is None
        and res["ci_low"] is None
        and res["ci_high"] is None
        and res["n_skipped_resamples"] == 20
    )
    assert np.isnan(low) and np.isnan(high)


def test_protocol_fields_and_determinism():
    x = np.arange(20.0)
    a = bootstrap(np.mean, x, n_resamples=100, seed=7)
    assert a == bootstrap(np.mean, x, n_resamples=100, seed=7)
    assert a["ci_low"] != bootstrap(np.mean, x, n_resamples=100, seed=8)["ci_low"]
    assert {"n", "n_resamples", "seed", "alpha", "method"} <= set(a)


def test_percentile_ci_ignores_nan():
    low, high, skipped = percentile_ci(np.array([np.nan, 0.0, 1.0, np.nan]), alpha=0.5)
    assert skipped == 2 and (low, high) == (0.25, 0.75)


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="differ in length"):
        bootstrap_ci(np.mean, np.zeros(3), np.zeros(4))
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ci(np.mean, np.zeros(3), n_resamples=0)
    with pytest.raises(ConfigError, match="alpha"):
        bootstrap_ci(np.mean, np.zeros(3), alpha=1.5)
    with pytest.raises(DataError, match="0 rows"):
        bootstrap_ci(np.mean, np.zeros(0))
