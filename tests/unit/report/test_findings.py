"""What was learned per finding: the image-blind baselines, the verdicts and the rows the report opens with."""

from __future__ import annotations

import pytest

from medlens.report.findings import f1_baseline, learned_counts, learned_per_finding, verdict


def test_f1_baseline_is_what_stating_the_finding_in_every_report_scores():
    # p = 0.25: always stating it gives precision 0.25, recall 1, F1 = 2 * 0.25 / 1.25
    assert f1_baseline(0.25) == pytest.approx(0.4)
    assert f1_baseline(1.0) == 1.0 and f1_baseline(0.0) == 0.0
    # no image-blind rate q does better: F1(q) = 2pq / (p + q) grows with q
    p = 0.1
    assert all(2 * p * q / (p + q) <= f1_baseline(p) + 1e-12 for q in (0.01, 0.1, 0.5, 0.99))


@pytest.mark.parametrize(
    ("value", "low", "expected"),
    [
        (0.9, 0.8, "learned"),
        (0.6, 0.45, "weak"),
        (0.5, 0.4, "not learned"),  # equal to chance is not learning
        (0.3, 0.2, "not learned"),
        (0.7, None, "weak"),  # no interval: never "learned"
        (None, None, None),
    ],
)
def test_verdict_needs_the_interval_above_the_baseline(value, low, expected):
    assert verdict(value, low, 0.5) == expected


def _auc(auc, low, high, n_pos, n_neg):
    return {"auc": auc, "ci_low": low, "ci_high": high, "n_pos": n_pos, "n_neg": n_neg}


def _f1(f1, low, high, support, n_generated):
    return {"f1": f1, "ci_low": low, "ci_high": high, "support": support, "n_generated": n_generated}


ENCODER = {
    "zero_shot": {
        "per_label": {
            "Support Devices": _auc(0.44, 0.34, 0.54, 42, 258),
            "Cardiomegaly": _auc(0.96, 0.92, 0.99, 38, 262),
            "Fracture": {"auc": None, "reason": "only one class", "n_pos": 0, "n_neg": 300},
        }
    },
    "linear_probe": {"chexpert14": {"per_label": {"Support Devices": _auc(0.83, 0.75, 0.89, 42, 258)}}},
}
DECODER = {
    "n": 300,
    "overall": {
        "clinical": {
            "n": 300,
            "per_label": {
                "Cardiomegaly": _f1(0.81, 0.69, 0.91, 40, 26),
                # never written: F1 0 against a baseline of 2 * 0.14 / 1.14
                "Support Devices": _f1(0.0, 0.0, 0.0, 42, 0),
                "Fracture": _f1(None, None, None, 0, 0),
            },
        }
    },
}


def test_rows_put_each_score_beside_its_baseline_with_a_verdict():
    rows = learned_per_finding(ENCODER, DECODER)
    # CheXpert's order; Fracture is absent from the split and has no row
    assert [r["finding"] for r in rows] == ["Cardiomegaly", "Support Devices"]
    card, devices = rows
    assert (card["n_pos"], card["n"], card["prevalence"]) == (38, 300, pytest.approx(38 / 300))
    assert card["zero_shot"] == {
        "value": 0.96,
        "ci_low": 0.92,
        "ci_high": 0.99,
        "baseline": 0.5,
        "verdict": "learned",
    }
    assert card["probe"] is None  # the probe did not score it: n/a, not a zero
    # the captioner's baseline comes from the references' prevalence as the labeler reads them (40 of 300)
    assert card["captioner"]["baseline"] == pytest.approx(f1_baseline(40 / 300))
    assert card["captioner"]["verdict"] == "learned" and card["captioner"]["n_generated"] == 26
    assert devices["zero_shot"]["verdict"] == "not learned"
    assert devices["probe"]["verdict"] == "learned"  # the image features hold it; the prompts do not find it
    assert devices["captioner"]["verdict"] == "not learned" and devices["captioner"]["n_generated"] == 0
    assert learned_counts(rows) == {
        "zero_shot": {"scored": 2, "learned": 1, "weak": 0, "not learned": 1},
        "probe": {"scored": 1, "learned": 1, "weak": 0, "not learned": 0},
        "captioner": {"scored": 2, "learned": 1, "weak": 0, "not learned": 1},
    }


def test_a_decoder_only_experiment_takes_prevalence_from_the_references():
    rows = learned_per_finding(None, DECODER)
    assert [r["finding"] for r in rows] == ["Cardiomegaly", "Support Devices"]
    assert rows[0]["prevalence"] == pytest.approx(40 / 300)
    assert rows[0]["zero_shot"] is None and rows[0]["probe"] is None
    assert learned_per_finding(None, None) == [] and learned_counts([]) == {}


def test_labels_outside_chexpert_keep_their_order_after_it():
    encoder = {
        "zero_shot": {
            "per_label": {
                "KL 4": _auc(0.7, 0.6, 0.8, 10, 90),
                "KL 2": _auc(0.6, 0.55, 0.7, 10, 90),
                "Edema": _auc(0.6, 0.4, 0.8, 10, 90),
            }
        }
    }
    rows = learned_per_finding(encoder, None)
    assert [r["finding"] for r in rows] == ["Edema", "KL 4", "KL 2"]
    assert [r["zero_shot"]["verdict"] for r in rows] == ["weak", "learned", "learned"]
