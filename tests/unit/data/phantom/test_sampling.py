"""The phantom population: prevalences, co-occurrence, patients' chronic findings, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medlens.config import SyntheticConfig
from medlens.data.phantom.sampling import conditional_probabilities, sample_studies, study_labels
from medlens.data.phantom.vocabulary import (
    AP_MAGNIFICATION,
    CTR_MARGIN,
    DEFAULT_PREVALENCE,
    LABELS,
    resolved_co_occurrence,
    resolved_prevalence,
)


@pytest.fixture(scope="module")
def population():
    cfg = SyntheticConfig(n_images=4000, n_patients=4000, seed=11)
    return cfg, sample_studies(cfg)


def test_counts_ids_and_patients():
    studies = sample_studies(SyntheticConfig(n_images=300, n_patients=120, seed=3))
    assert len(studies) == 300
    assert len({s.study_id for s in studies}) == 300
    per_patient = Counter(s.patient_id for s in studies)
    assert len(per_patient) == 120 and max(per_patient.values()) > 1
    for s in studies:
        assert s.study_id.startswith(s.patient_id + "-s")


def test_same_seed_same_population_and_other_seed_differs():
    cfg = SyntheticConfig(n_images=200, n_patients=90, seed=5)
    assert sample_studies(cfg) == sample_studies(cfg)
    other = sample_studies(SyntheticConfig(n_images=200, n_patients=90, seed=6))
    assert [s.anatomy for s in other] != [s.anatomy for s in sample_studies(cfg)]


def test_a_study_does_not_depend_on_how_many_follow():
    small = sample_studies(SyntheticConfig(n_images=50, n_patients=50, seed=2))
    large = sample_studies(SyntheticConfig(n_images=400, n_patients=400, seed=2))
    assert small == large[:50]


def test_patients_keep_their_anatomy_heart_and_lesions_across_studies():
    studies = sample_studies(SyntheticConfig(n_images=600, n_patients=150, seed=4))
    by_patient: dict[str, list] = {}
    for s in studies:
        by_patient.setdefault(s.patient_id, []).append(s)
    several = [group for group in by_patient.values() if len(group) > 1]
    assert several
    for group in several:
        assert len({s.anatomy for s in group}) == 1
        assert len({s.findings.lesions for s in group}) == 1
        assert len({s.findings.cardiomegaly is None for s in group}) == 1
    # acute findings and the acquisition change between studies of one patient
    assert any(len({s.acquisition for s in group}) > 1 for group in several)
    assert any(len({tuple(s.labels) for s in group}) > 1 for group in several)


def test_prevalences_follow_the_defaults(population):
    _, studies = population
    counts = Counter(label for s in studies for label in s.labels)
    n = len(studies)
    for name, p in DEFAULT_PREVALENCE.items():
        # binomial standard error at n=4000 is below 0.006; 4 of them covers every finding at once
        assert abs(counts[name] / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.005, name
    assert 0.35 < counts["No Finding"] / n < 0.6  # many normals, as in a real population


def test_configured_prevalence_and_co_occurrence_are_applied():
    cfg = SyntheticConfig(
        n_images=3000,
        n_patients=3000,
        seed=1,
        prevalence={"Pneumothorax": 0.3},
        co_occurrence={"Edema|Cardiomegaly": 1.0},
    )
    studies = sample_studies(cfg)
    share = sum("Pneumothorax" in s.labels for s in studies) / len(studies)
    assert abs(share - 0.3) < 0.04
    # lift 1 makes edema independent of cardiomegaly
    cardio = [s for s in studies if "Cardiomegaly" in s.labels]
    other = [s for s in studies if "Cardiomegaly" not in s.labels]
    rate = [sum("Edema" in s.labels for s in group) / len(group) for group in (cardio, other)]
    assert abs(rate[0] - rate[1]) < 0.06


def test_default_co_occurrence_raises_effusion_with_cardiomegaly(population):
    _, studies = population
    cardio = [s for s in studies if "Cardiomegaly" in s.labels]
    other = [s for s in studies if "Cardiomegaly" not in s.labels]
    for child in ("Pleural Effusion", "Edema"):
        with_parent = sum(child in s.labels for s in cardio) / len(cardio)
        without = sum(child in s.labels for s in other) / len(other)
        assert with_parent > 2 * without, child


def test_conditional_probabilities_keep_the_marginal():
    cfg = SyntheticConfig()
    prev = resolved_prevalence(cfg)
    probs = conditional_probabilities(prev, resolved_co_occurrence(cfg))
    for child, (parent, lift) in resolved_co_occurrence(cfg).items():
        with_parent, without = probs[child]
        q = prev[parent]
        assert with_parent == pytest.approx(lift * prev[child])
        assert q * with_parent + (1 - q) * without == pytest.approx(prev[child])
    assert probs["Pneumothorax"] == (prev["Pneumothorax"], prev["Pneumothorax"])


def test_probabilities_stay_in_range_when_the_lift_is_too_high():
    prev = {**DEFAULT_PREVALENCE, "Cardiomegaly": 0.9, "Edema": 0.5}
    with_parent, without = conditional_probabilities(prev, {"Edema": ("Cardiomegaly", 5.0)})["Edema"]
    assert with_parent == 1.0 and without == 0.0


def test_cardiothoracic_ratio_stays_clear_of_the_threshold(population):
    cfg, studies = population
    for s in studies:
        if s.findings.cardiomegaly is not None:
            assert s.findings.ctr >= cfg.cardiomegaly_ctr + CTR_MARGIN - 1e-4
        else:
            assert s.findings.ctr <= cfg.cardiomegaly_ctr - CTR_MARGIN + 1e-4
        expected = s.anatomy.heart_ctr * (AP_MAGNIFICATION if s.acquisition.view == "AP" else 1.0)
        assert s.findings.ctr == pytest.approx(min(expected, 0.72), abs=1e-4)


def test_view_mix_follows_ap_fraction():
    studies = sample_studies(SyntheticConfig(n_images=1000, n_patients=1000, seed=2, ap_fraction=0.8))
    assert 0.75 < sum(s.acquisition.view == "AP" for s in studies) / 1000 < 0.85


def test_pneumonia_is_a_share_of_consolidations():
    studies = sample_studies(SyntheticConfig(n_images=3000, n_patients=3000, seed=9, pneumonia_fraction=1.0))
    assert all(("Pneumonia" in s.labels) == ("Consolidation" in s.labels) for s in studies)
    studies = sample_studies(SyntheticConfig(n_images=1000, n_patients=1000, seed=9, pneumonia_fraction=0.0))
    assert not any("Pneumonia" in s.labels for s in studies)


def test_labels_follow_the_chexpert_no_finding_rule(population):
    _, studies = population
    for s in studies[:500]:
        labels = study_labels(s.findings)
        assert labels == [name for name in LABELS if name in labels]  # LABELS order
        others = [x for x in labels if x not in ("No Finding", "Support Devices")]
        assert ("No Finding" in labels) == (not others)


def test_findings_are_drawable(population):
    _, studies = population
    for s in studies:
        f = s.findings
        wet = {e.side: e.height for e in f.effusions}
        if f.pneumothorax is not None and len(wet) == 1:
            assert f.pneumothorax.side not in wet  # a hydropneumothorax is not drawn
        if f.atelectasis is not None and f.atelectasis.zone == "lower":
            assert max((wet.get(side, 0.0) for side in f.atelectasis.sides), default=0.0) <= 0.2
        for les in f.lesions:
            assert 5 <= les.size_mm <= 40 and les.lobe.startswith(les.side)
