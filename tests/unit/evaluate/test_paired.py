"""Paired bootstrap differences: the same resamples for both models, hand-checked values, and the CSV of scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medlens.errors import DataError
from medlens.evaluate.bootstrap import percentile_ci, resample_indices
from medlens.evaluate.paired import (
    paired_auc_difference,
    paired_bleu_difference,
    paired_f1_difference,
    read_probe_scores,
    read_scores,
    write_probe_scores,
    write_scores,
)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, (n, 3))
    good = targets + rng.normal(0, 0.6, (n, 3))  # informative
    weak = targets + rng.normal(0, 3.0, (n, 3))  # barely
    return good, weak, targets


def test_the_auc_difference_is_the_difference_of_mean_aucs_on_shared_resamples():
    good, weak, targets = _data()
    result = paired_auc_difference(good, weak, targets, n_resamples=200, seed=4)
    mean_auc = lambda s, t: np.mean([roc_auc_score(t[:, j], s[:, j]) for j in range(3)])  # noqa: E731
    assert result["value"] == pytest.approx(mean_auc(good, targets) - mean_auc(weak, targets))
    # the interval is over the same row resamples for both models (scikit-learn, resample by resample)
    (idx,) = list(resample_indices(len(targets), 200, seed=4))
    manual = np.array([mean_auc(good[i], targets[i]) - mean_auc(weak[i], targets[i]) for i in idx])
    low, high, _ = percentile_ci(manual)
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["excludes_zero"] and result["ci_low"] > 0 and result["labels_averaged"] == 3


def test_a_model_against_itself_differs_by_exactly_zero_and_the_interval_does_not_exclude_it():
    good, _, targets = _data()
    same = paired_auc_difference(good, good, targets, n_resamples=100)
    assert (same["value"], same["ci_low"], same["ci_high"], same["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    # two equally good models on different noise: the paired interval straddles zero
    other = targets + np.random.default_rng(9).normal(0, 0.6, targets.shape)
    close = paired_auc_difference(good, other, targets, n_resamples=300)
    assert close["ci_low"] < 0 < close["ci_high"] and close["excludes_zero"] is False


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_the_f1_difference_matches_scikit_learn(average):
    # the third observation never occurs: sklearn's macro (the papers') averages it as 0
    ref = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    a = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]])  # one false negative
    b = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    result = paired_f1_difference(a, b, ref, average=average, n_resamples=100, seed=2)
    f1 = lambda r, g: f1_score(r, g, average=average, zero_division=0)  # noqa: E731
    assert result["value"] == pytest.approx(f1(ref, a) - f1(ref, b))
    (idx,) = list(resample_indices(len(ref), 100, seed=2))
    low, high, _ = percentile_ci(np.array([f1(ref[i], a[i]) - f1(ref[i], b[i]) for i in idx]))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_the_bleu_difference_is_sacrebleus_corpus_bleu_on_each_shared_resample():
    from sacrebleu.metrics import BLEU

    refs = [f"the heart is normal in size {i} and the lungs are clear" for i in range(12)]
    a = [r if i % 3 else "the heart is normal" for i, r in enumerate(refs)]
    b = ["the lungs are clear"] * 12
    result = paired_bleu_difference(a, b, refs, max_order=2, n_resamples=50, seed=1)
    bleu = lambda g, r: BLEU(max_ngram_order=2, lowercase=True).corpus_score(g, [r]).score / 100  # noqa: E731
    assert result["value"] == pytest.approx(bleu(a, refs) - bleu(b, refs))
    (idx,) = list(resample_indices(len(refs), 50, seed=1))
    pick = lambda xs, i: [xs[k] for k in i]  # noqa: E731
    manual = [bleu(pick(a, i), pick(refs, i)) - bleu(pick(b, i), pick(refs, i)) for i in idx]
    low, high, _ = percentile_ci(np.array(manual))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["excludes_zero"] is True
    with pytest.raises(DataError, match="same rows"):
        paired_bleu_difference(a, b[:5], refs)


def test_mismatched_shapes_are_refused_and_scores_round_trip(tmp_path):
    good, weak, targets = _data(10)
    with pytest.raises(DataError, match="differ"):
        paired_auc_difference(good, weak[:5], targets)
    path = tmp_path / "scores.csv"
    write_scores(path, [f"r,{i}" for i in range(10)], ["A", "B", "C"], good, targets)
    ids, labels, scores, back = read_scores(path)
    assert ids[1] == "r,1" and labels == ["A", "B", "C"]
    np.testing.assert_array_equal(scores, good)  # repr keeps every bit
    np.testing.assert_array_equal(back, targets)
    path.write_text("nonsense\n")
    with pytest.raises(DataError, match="not a zero-shot scores file"):
        read_scores(path)


def test_probe_scores_round_trip_in_long_form_and_a_broken_file_is_refused(tmp_path):
    good, weak, targets = _data(6)
    path = tmp_path / "probe_scores.csv"
    probes = [
        {
            "evaluation": "linear_probe/chexpert5",
            "ids": [f"r{i}" for i in range(6)],
            "labels": ["A", "B", "C"],
        },
        {"evaluation": "external_probes/nih14/nih14", "ids": ["n,1", "n,0"], "labels": ["Hernia"]},
    ]
    probes[0] |= {"scores": good, "targets": targets}
    probes[1] |= {"scores": weak[:2, :1], "targets": targets[:2, :1]}
    write_probe_scores(path, probes)
    assert path.read_text().splitlines()[0] == "evaluation,id,label,score,target"
    back = read_probe_scores(path)
    assert list(back) == ["linear_probe/chexpert5", "external_probes/nih14/nih14"]
    ids, labels, scores, got = back["linear_probe/chexpert5"]
    assert ids == [f"r{i}" for i in range(6)] and labels == ["A", "B", "C"]
    np.testing.assert_array_equal(scores, good)  # repr keeps every bit
    np.testing.assert_array_equal(got, targets)
    assert back["external_probes/nih14/nih14"][0] == ["n,1", "n,0"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # a row without one of its labels
    with pytest.raises(DataError, match=r"chexpert5: 17 lines for 6 rows and 3 labels"):
        read_probe_scores(path)
    path.write_text("\n".join([*lines, lines[-1]]) + "\n")
    with pytest.raises(DataError, match="twice"):
        read_probe_scores(path)
    path.write_text("id,score\n")
    with pytest.raises(DataError, match="expected evaluation, id, label, score, target"):
        read_probe_scores(path)
    write_probe_scores(path, [])  # no multi-label probe fitted: a header alone, read as no probe
    assert read_probe_scores(path) == {}
