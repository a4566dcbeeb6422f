"""The metric packages' own published examples, scored by medlens with the published weights.

These run where the weights are in the Hugging Face cache (after ``prefetch_metric_weights`` on a host that
reaches the Hub) and are skipped elsewhere, CI included: its machines cannot download them. Set
``MEDLENS_REQUIRE_PUBLISHED_WEIGHTS=1`` to fail instead of skipping. They check that medlens's loading,
alignment and its own F1 code give the packages' pinned numbers:

- RadGraph: Stanford-AIMI/radgraph's ``tests/radgraph_test.py::test_f1radgraph`` (model ``radgraph``, the
  one RadCliQ-v1 uses), as radeval 2.2.1 imports it unmodified (``tests/test_radgraph_upstream.py``).
- radeval's ``tests/test_basics.py::test_radeval``: RadGraph-XL (the ``radgraph`` metric), CheXbert F1 and
  RaTEScore on six reports, within its 1 % tolerance.
- CheXbert F1: radeval's ``tests/test_f1chexbert.py`` (uncertain counts as positive, its ``rrg`` mode).
  medlens gives two macro F1s (docs/evaluation.md): over the observations that occur, and over all
  (absent ones as 0, sklearn's, radeval's); the tests check micro F1, exact match, each observation's F1
  and the second macro.

Not ported: bert-score's examples use roberta-large and radeval's ``bertscore`` distilbert, neither of
which medlens's BERTScore runs; radeval's RadCliQ-v1 computes its BERTScore feature with idf, where
CXR-Report-Metric's default and medlens do not; GREEN's published examples print no numbers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from medlens.config import FINDINGS
from medlens.evaluate import metric_weights as mw
from medlens.evaluate import report_metrics as rm


def _needs_published_weights(metric: str, weights: list[mw.Weights] | None = None) -> None:
    missing = mw.missing_weights(metric if weights is None else weights)
    if not missing:
        return
    why = f"the published weights of {metric} are not in the Hugging Face cache: {', '.join(missing)}"
    if os.environ.get("MEDLENS_REQUIRE_PUBLISHED_WEIGHTS"):
        pytest.fail(why)
    pytest.skip(why)


# Stanford-AIMI/radgraph, tests/radgraph_test.py (commit adbf1c0), test_f1radgraph
RADGRAPH_REFS = [
    "no acute cardiopulmonary abnormality",
    "et tube terminates 2 cm above the carina retraction by several centimeters is recommended for more "
    "optimal placement bibasilar consolidations better assessed on concurrent chest ct",
    "there is no significant change since the previous exam the feeding tube and nasogastric tube have been "
    "removed",
    "unchanged mild pulmonary edema no radiographic evidence pneumonia",
    "no evidence of acute pulmonary process moderately large size hiatal hernia",
    "no acute intrathoracic process",
]
RADGRAPH_HYPS = [
    "no acute cardiopulmonary abnormality",
    "endotracheal tube terminates 2 5 cm above the carina bibasilar opacities likely represent atelectasis "
    "or aspiration",
    "there is no significant change since the previous exam",
    "unchanged mild pulmonary edema and moderate cardiomegaly",
    "no evidence of acute cardiopulmonary process moderate hiatal hernia",
    "no acute cardiopulmonary process",
]
RADGRAPH_REWARDS = {  # simple, partial, complete
    "simple": [1.0, 0.4, 0.5714285714285715, 0.8, 0.5714285714285715, 0.4],
    "partial": [1.0, 0.26666666666666666, 0.5714285714285715, 0.4, 0.42857142857142855, 0.4],
    "complete": [1.0, 0.23529411764705885, 0.5714285714285715, 0.4, 0.4, 0.4],
}


def test_radgraph_gives_the_radgraph_packages_pinned_rewards():
    _needs_published_weights("RadGraph (original)", [mw.RADGRAPH])
    rewards, hyp_ann, ref_ann = rm._radgraph("radgraph", RADGRAPH_REFS, RADGRAPH_HYPS)
    for level, got in zip(("simple", "partial", "complete"), rewards, strict=True):
        np.testing.assert_allclose(got, RADGRAPH_REWARDS[level], rtol=0, atol=1e-12, err_msg=level)
    assert len(hyp_ann) == len(ref_ann) == len(RADGRAPH_REFS)


# radeval 2.2.1, tests/test_basics.py::test_radeval (its tolerance: 1 % relative)
BASICS_REFS = [
    "No acute cardiopulmonary process.",
    "No radiographic findings to suggest pneumonia.",
    "1.Status post median sternotomy for CABG with stable cardiac enlargement and calcification of the aorta "
    "consistent with atherosclerosis.Relatively lower lung volumes with no focal airspace consolidation "
    "appreciated.Crowding of the pulmonary vasculature with possible minimal perihilar edema, but no overt "
    "pulmonary edema.No pleural effusions or pneumothoraces.",
    "1. Left PICC tip appears to terminate in the distal left brachiocephalic vein.2. Mild pulmonary vascular "
    "congestion.3. Interval improvement in aeration of the lung bases with residual streaky opacity likely "
    "reflective of atelectasis.Interval resolution of the left pleural effusion.",
    "No definite acute cardiopulmonary process.Enlarged cardiac silhouette could be accentuated by patient's "
    "positioning.",
    "Increased mild pulmonary edema and left basal atelectasis.",
]
BASICS_HYPS = [
    "No acute cardiopulmonary process.",
    "No radiographic findings to suggest pneumonia.",
    "Status post median sternotomy for CABG with stable cardiac enlargement and calcification of the aorta "
    "consistent with atherosclerosis.",
    "Relatively lower lung volumes with no focal airspace consolidation appreciated.",
    "Crowding of the pulmonary vasculature with possible minimal perihilar edema, but no overt pulmonary edema.",
    "No pleural effusions or pneumothoraces.",
]


def test_radgraph_xl_gives_radevals_pinned_score():
    _needs_published_weights("radgraph")
    results, _ = rm.score_reports(BASICS_REFS, BASICS_HYPS, ["radgraph"], n_resamples=10)
    for level in ("simple", "partial", "complete"):
        assert results["radgraph"][level]["mean"] == pytest.approx(0.41111111111111115, rel=0.01), level


def test_chexbert_f1_gives_radevals_pinned_micro_and_macro():
    _needs_published_weights("chexbert")
    results, _ = rm.score_reports(BASICS_REFS, BASICS_HYPS, ["chexbert"], n_resamples=10)
    chexbert = results["chexbert"]
    assert chexbert["chexpert5"]["micro"]["f1"] == pytest.approx(0.2857142857142857, rel=0.01)
    assert chexbert["chexpert14"]["micro"]["f1"] == pytest.approx(0.3333333333333333, rel=0.01)
    assert chexbert["chexpert5"]["macro_all"]["f1"] == pytest.approx(0.13333333333333333, rel=0.01)
    assert chexbert["chexpert14"]["macro_all"]["f1"] == pytest.approx(0.08333333333333333, rel=0.01)


def test_ratescore_gives_radevals_pinned_score():
    _needs_published_weights("ratescore")
    results, _ = rm.score_reports(BASICS_REFS, BASICS_HYPS, ["ratescore"], n_resamples=10)
    assert results["ratescore"]["score"]["mean"] == pytest.approx(0.5877872073859466, rel=0.01)


# radeval 2.2.1, tests/test_f1chexbert.py
CHEXBERT_HYPS = [
    "No pleural effusion. Normal heart size.",
    "Normal heart size.",
    "Increased mild pulmonary edema and left basal atelectasis.",
    "Bilateral lower lobe bronchiectasis with improved right lower medial lung peribronchial consolidation.",
    "Elevated left hemidiaphragm and blunting of the left costophrenic angle although no definite evidence of "
    "pleural effusion seen on the lateral view.",
]
CHEXBERT_REFS = [
    "No pleural effusions.",
    "Enlarged heart.",
    "No evidence of pneumonia. Stable cardiomegaly.",
    "Bilateral lower lobe bronchiectasis with improved right lower medial lung peribronchial consolidation.",
    "No acute cardiopulmonary process. No significant interval change. Please note that peribronchovascular "
    "ground-glass opacities at the left greater than right lung bases seen on the prior chest CT of ___ were "
    "not appreciated on prior chest radiography on the same date and may still be present. Additionally, "
    "several pulmonary nodules measuring up to 3 mm are not not well appreciated on the current study-CT is "
    "more sensitive.",
]
# its classification_report for the 14 observations, those with support (F1 of the rest is 0 there)
CHEXBERT_F1_WITH_SUPPORT = {
    "Cardiomegaly": 0.0,
    "Lung Opacity": 0.0,
    "Lung Lesion": 0.0,
    "Consolidation": 1.0,
    "No Finding": 0.6666666666666666,
}


def test_chexbert_f1_gives_radevals_pinned_classification_report():
    _needs_published_weights("chexbert")
    results, _ = rm.score_reports(CHEXBERT_REFS, CHEXBERT_HYPS, ["chexbert"], n_resamples=10)
    chexbert = results["chexbert"]
    assert chexbert["chexpert14"]["micro"]["f1"] == pytest.approx(0.36363636363636365)
    assert chexbert["chexpert5"]["micro"]["f1"] == pytest.approx(0.3333333333333333)
    assert chexbert["chexpert5"]["exact_match"] == pytest.approx(0.6)  # radeval's "accuracy"
    per_label = chexbert["per_label"]
    for observation, f1 in CHEXBERT_F1_WITH_SUPPORT.items():
        assert per_label[observation]["support"] == (2 if observation == "Cardiomegaly" else 1)
        assert per_label[observation]["f1"] == pytest.approx(f1), observation
    for observation in set(FINDINGS) - set(CHEXBERT_F1_WITH_SUPPORT):
        assert per_label[observation]["support"] == 0, observation
    assert chexbert["chexpert14"]["macro_all"]["f1"] == pytest.approx(0.11904761904761904)
    assert chexbert["chexpert5"]["macro_all"]["f1"] == pytest.approx(0.2)
