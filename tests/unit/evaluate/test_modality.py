"""Knee, skin-lesion and VQA scoring: texts read back into classes, and the field's metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

from medlens.data.text_from_labels import synthesize_text
from medlens.evaluate.modality import (
    MODALITY_TASKS,
    label_from_text,
    multiclass_scores,
    ordinal_scores,
)
from medlens.evaluate.vqa import normalize_answer, vqa_scores


@pytest.mark.parametrize("modality", ["knee_xray", "dermatology"])
def test_every_synthesised_text_is_read_back_as_its_class(modality):
    _, classes = MODALITY_TASKS[modality]
    for c in classes:
        for k in range(12):  # the phrasing depends on the record id: 12 draws cover every phrasing
            text = synthesize_text([c], modality=modality, record_id=f"r{k}", seed=k)
            assert label_from_text(text, modality) == c, text


def test_explicit_grades_win_and_a_text_naming_two_classes_or_none_is_unread():
    assert label_from_text("Left knee. Kellgren-Lawrence grade 3.", "knee_xray") == "KL3"
    assert label_from_text("KL 2 change of the medial compartment.", "knee_xray") == "KL2"
    assert label_from_text("Graded KL-4.", "knee_xray") == "KL4"
    assert label_from_text("KL 1 on the left, KL 3 on the right.", "knee_xray") is None
    assert label_from_text("Radiograph of the knee.", "knee_xray") is None
    assert label_from_text("Diagnosis: melanoma.", "dermatology") == "Melanoma"
    assert label_from_text("Melanoma or nevus.", "dermatology") is None
    # a word inside another word is not a match
    assert label_from_text("Nevusoid pattern.", "dermatology") is None


def test_ordinal_scores_agree_with_scikit_learn_and_an_unread_text_is_the_worst_grade():
    classes = MODALITY_TASKS["knee_xray"][1]
    truth = ["KL0", "KL1", "KL2", "KL3", "KL4"] * 8
    near = ["KL1", "KL1", "KL3", "KL3", "KL3"] * 8  # off by one where wrong
    far = ["KL4", "KL1", "KL0", "KL3", "KL0"] * 8  # same accuracy, far off where wrong
    s_near = ordinal_scores(truth, near, classes, n_resamples=200)
    s_far = ordinal_scores(truth, far, classes, n_resamples=200)
    assert s_near["accuracy"]["value"] == s_far["accuracy"]["value"] == pytest.approx(0.4)
    t = [int(g[2]) for g in truth]
    assert s_near["quadratic_weighted_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(t, [int(g[2]) for g in near], weights="quadratic")
    )
    assert s_near["quadratic_weighted_kappa"]["value"] > 0.7 > 0 > s_far["quadratic_weighted_kappa"]["value"]
    low, high = s_near["quadratic_weighted_kappa"]["ci_low"], s_near["quadratic_weighted_kappa"]["ci_high"]
    assert low <= s_near["quadratic_weighted_kappa"]["value"] <= high
    unread = ordinal_scores(truth, [None] * 40, classes, n_resamples=50)
    worst = [4 if g < 2.5 else 0 for g in t]
    assert unread["quadratic_weighted_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(t, worst, weights="quadratic")
    )
    assert unread["n_unread"] == 40 and unread["accuracy"]["value"] == 0
    assert unread["confusion"]["columns"][-1] == "unread"
    assert [row[-1] for row in unread["confusion"]["counts"]] == [8] * 5
    assert s_near["per_class"]["KL3"]["recall"] == 1.0 and s_near["per_class"]["KL2"]["recall"] == 0.0


def test_multiclass_scores_balanced_accuracy_and_one_vs_rest_auc():
    classes = MODALITY_TASKS["dermatology"][1]
    rng = np.random.default_rng(0)
    truth = [classes[i] for i in rng.integers(0, 6, 300)]
    # right 70 % of the time; the rest unread or a random class
    predicted = [
        t if rng.random() < 0.7 else (None if rng.random() < 0.3 else classes[rng.integers(0, 6)])
        for t in truth
    ]
    y = np.array([classes.index(t) for t in truth])
    scores = rng.random((300, 6)) + np.eye(6)[y]  # informative scores
    s = multiclass_scores(truth, predicted, classes, scores=scores, n_resamples=200)
    y_pred = np.array([classes.index(p) if p else -1 for p in predicted])
    assert s["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, y_pred))
    assert s["n_unread"] == sum(p is None for p in predicted)
    assert set(s["auc_one_vs_rest"]) == set(classes)
    assert all(v["value"] > 0.8 for v in s["auc_one_vs_rest"].values())
    assert "auc_one_vs_rest" not in multiclass_scores(truth, predicted, classes, n_resamples=20)


def test_macro_f1_interval_averages_the_classes_each_resample_holds():
    """One melanoma in 40, diagnosed right like every other row: every resample's macro-F1 is 1."""
    classes = MODALITY_TASKS["dermatology"][1]
    truth = [classes[0]] * 20 + [classes[1]] * 19 + [classes[2]]
    s = multiclass_scores(truth, truth, classes, n_resamples=200)
    assert s["macro_f1"]["value"] == 1.0
    assert s["macro_f1"]["ci_low"] == 1.0 and s["macro_f1"]["ci_high"] == 1.0


def test_vqa_closed_and_open_accuracy_with_recall_by_category():
    refs = ["Yes", "No", "Lung", "Left lung, right lung", "CT"]
    answers = ["yes.", "Yes", "the lung", "left lung", "MRI"]
    types = ["CLOSED", "CLOSED", "OPEN", "OPEN", "OPEN"]
    cats = ["Abnormality", "Abnormality", "Organ", "Position", "Modality"]
    s = vqa_scores(refs, answers, types, cats, n_resamples=100)
    assert s["closed_accuracy"]["value"] == 0.5
    assert s["open_accuracy"]["value"] == pytest.approx(1 / 3)
    # LLaVA-Med's recall of "left lung" against "left lung right lung": TP 2 (left, lung once each in the
    # answer), FN 1 (right): 2/3, not the 3 of 4 reference words a plain share would give
    assert s["open_recall"]["value"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["by_category"]["Abnormality"]["closed_accuracy"] == 0.5
    assert s["by_category"]["Organ"]["open_accuracy"] == 1.0
    assert normalize_answer("  The Left-Lung. ") == "left lung"


def test_vqa_answers_are_normalised_and_recalled_as_llava_meds_evaluation_does():
    """The VQA evaluation's number words and decimals, and LLaVA-Med's recall counting (its
    ``llava/eval/eval_metrics``: ``normalize_word``, ``calculate_f1score``), worked by hand."""
    assert normalize_answer("Two.") == normalize_answer("2") == "2"
    assert normalize_answer("None") == "0" and normalize_answer("no") == "no"
    assert normalize_answer("2.5 cm, 1,000") == "2.5 cm 1000"
    s = vqa_scores(
        ["2", "Two kidneys", "right lung"], ["two", "2 kidneys", "lung lung lung"], ["OPEN"] * 3, [None] * 3
    )
    assert s["open_accuracy"]["value"] == pytest.approx(
        2 / 3
    )  # "two" and "2 kidneys" match, "lung lung lung" does not
    # "lung lung lung" against "right lung": TP counts the answer's three "lung", FN the missing "right"
    assert s["by_category"]["unspecified"]["open_recall"] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_each_modality_is_scored_its_own_way_and_the_chest_labeler_only_reads_chest_reports():
    from medlens.config import EvalConfig
    from medlens.evaluate.decoder import RowInfo, score_generations

    rows = [
        RowInfo("chest_xray", "report", ("Cardiomegaly",)),
        RowInfo("knee_xray", "from_labels", ("KL3",)),
        RowInfo("knee_xray", "from_labels", ("KL1",)),
        RowInfo("dermatology", "from_labels", ("Melanoma",)),
        RowInfo("chest_xray", "vqa", (), {"answer_type": "CLOSED", "content_type": "Abnormality"}),
    ]
    references = ["The heart is enlarged.", "Graded KL 3.", "Graded KL 1.", "Diagnosis: melanoma.", "Yes"]
    generated = [
        "Cardiomegaly.",
        "Kellgren-Lawrence grade 3.",
        "Knee radiograph.",
        "Diagnosis: nevus.",
        "yes",
    ]
    s = score_generations(generated, references, EvalConfig(bootstrap_samples=20), rows)
    assert s["clinical"]["n"] == 1 and "1 chest radiograph reports of 5" in s["clinical"]["scope"]
    knee = s["grading"]["knee_xray"]
    assert (knee["n"], knee["n_unread"], knee["accuracy"]["value"]) == (2, 1, 0.5)
    assert s["grading"]["dermatology"]["per_class"]["Melanoma"]["recall"] == 0.0
    assert s["vqa"]["closed_accuracy"]["value"] == 1.0 and s["vqa"]["n"] == 1
    no_chest = score_generations(generated[1:4], references[1:4], EvalConfig(bootstrap_samples=20), rows[1:4])
    assert "not_computed" in no_chest["clinical"] and "per_label" not in no_chest["clinical"]


def test_the_encoder_is_scored_on_knee_grades_zero_shot_and_by_a_probe():
    import json as _json

    import torch

    from medlens.config import EvalConfig
    from medlens.evaluate.encoder import _modality_scores, class_prompts

    classes = MODALITY_TASKS["knee_xray"][1]
    prompts = class_prompts("knee_xray", classes)
    owner = {p: i for i, c in enumerate(classes) for p in prompts[c]}

    class Encoder:  # each class prompt embeds on its own axis; an image's feature is its grade's axis + noise
        def encode_texts(self, texts):
            return torch.eye(8)[[owner[t] for t in texts]]

    rng = np.random.default_rng(0)

    def split(n):
        grades = rng.integers(0, 5, n)
        rows = [
            {"id": f"k{n}/{i}", "modality": "knee_xray", "labels": [classes[g]], "meta": _json.dumps({})}
            for i, g in enumerate(grades)
        ]
        return rows, np.eye(8)[grades] + 0.3 * rng.standard_normal((n, 8))

    data = {s: split(n) for s, n in (("train", 200), ("val", 60), ("test", 80))}
    rows = {s: d[0] for s, d in data.items()}
    feats = {s: d[1] for s, d in data.items()}
    rows["test"].append(
        {"id": "chest", "modality": "chest_xray", "labels": ["Cardiomegaly"], "meta": "{}"}
    )  # not scored here
    feats["test"] = np.vstack([feats["test"], np.zeros((1, 8))])
    out, predictions = _modality_scores(Encoder(), rows, feats, EvalConfig(bootstrap_samples=20))
    assert set(out) == {"knee_xray"}
    for how in ("zero_shot", "linear_probe"):
        assert out["knee_xray"][how]["n"] == 80
        assert out["knee_xray"][how]["quadratic_weighted_kappa"]["value"] > 0.9, how
    assert out["knee_xray"]["linear_probe"]["protocol"]["chosen_c"] is not None
    # each knee test row's classes, for the report's paired comparisons; the accuracy is theirs
    assert [p["id"] for p in predictions] == [r["id"] for r in rows["test"][:80]]
    assert [p["truth"] for p in predictions] == [r["labels"][0] for r in rows["test"][:80]]
    for how in ("zero_shot", "linear_probe"):
        accuracy = np.mean([p["truth"] == p[how] for p in predictions])
        assert accuracy == pytest.approx(out["knee_xray"][how]["accuracy"]["value"]), how
