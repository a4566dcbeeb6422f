"""Clinical efficacy: per-observation and micro/macro F1 on constructed cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from medlens.config import FINDINGS, dig
from medlens.errors import ConfigError, DataError
from medlens.evaluate.clinical import CHEXPERT5, binarize, clinical_efficacy, create_labeler


class TableLabeler:
    """A labeler that looks labels up by text, so the scoring is tested apart from the rules."""

    name = "table"

    def __init__(self, table: dict[str, dict[str, int]]):
        self.table = table

    def label_texts(self, texts):
        return [self.table[t] for t in texts]

    def describe(self):
        return {"name": "lookup table"}


TABLE = {
    "r1": {"Cardiomegaly": 1, "Pleural Effusion": 1},
    "r2": {"Edema": 1, "Cardiomegaly": -1},
    "r3": {"No Finding": 1},
    "r4": {"Atelectasis": 1, "Pleural Effusion": 0},
    "g1": {"Cardiomegaly": 1},
    "g2": {"Edema": 1, "Cardiomegaly": 1, "Pneumothorax": 1},
    "g3": {"No Finding": 1, "Pleural Effusion": 0},
    "g4": {"Atelectasis": -1, "Pleural Effusion": 1},
}
GEN, REF = ["g1", "g2", "g3", "g4"], ["r1", "r2", "r3", "r4"]


def _score(gen=GEN, ref=REF, **kw):
    return clinical_efficacy(gen, ref, labeler=TableLabeler(TABLE), n_resamples=200, **kw)


def test_per_label_counts_by_hand():
    out = _score()
    card, eff, atel, ptx = (
        out["per_label"][o] for o in ("Cardiomegaly", "Pleural Effusion", "Atelectasis", "Pneumothorax")
    )
    # references r1, r2 (uncertain counts as positive); generated g1, g2
    assert (card["tp"], card["fp"], card["fn"], card["f1"]) == (2, 0, 0, 1.0)
    assert card["n_uncertain_reference"] == 1
    # reference r1 positive; generated g4 positive: one TP-free FP and one FN
    assert (eff["tp"], eff["fp"], eff["fn"], eff["precision"], eff["recall"], eff["f1"]) == (
        0,
        1,
        1,
        0.0,
        0.0,
        0.0,
    )
    # the uncertain generated atelectasis counts as positive
    assert (atel["tp"], atel["f1"], atel["n_uncertain_generated"]) == (1, 1.0, 1)
    # never in the references: recall undefined, precision 0
    assert (ptx["support"], ptx["recall"], ptx["precision"], ptx["f1"]) == (0, None, 0.0, 0.0)
    assert "absent from the references" in ptx["reason"]
    fracture = out["per_label"]["Fracture"]
    assert fracture["f1"] is None and fracture["precision"] is None
    assert fracture["ci_low"] is None and fracture["ci_high"] is None  # undefined on every resample
    # an observation that is right on every report is right on every resample
    assert (card["ci_low"], card["ci_high"]) == (1.0, 1.0)


def test_micro_and_macro_agree_with_sklearn():
    out = _score()
    gen = binarize([TABLE[g] for g in GEN], FINDINGS, "positive")
    ref = binarize([TABLE[r] for r in REF], FINDINGS, "positive")
    for name, labels in (("chexpert14", FINDINGS), ("chexpert5", CHEXPERT5)):
        cols = [FINDINGS.index(o) for o in labels]
        p, r, f, _ = precision_recall_fscore_support(
            ref[:, cols], gen[:, cols], average="micro", zero_division=0
        )
        assert out[name]["micro"]["f1"] == pytest.approx(f)
        assert out[name]["micro"]["precision"] == pytest.approx(p)
        assert out[name]["micro"]["recall"] == pytest.approx(r)
        present = [c for c in cols if ref[:, c].any() or gen[:, c].any()]
        assert out[name]["macro"]["labels"] == [FINDINGS[c] for c in present]
        assert out[name]["macro"]["f1"] == pytest.approx(
            f1_score(ref[:, present], gen[:, present], average="macro")
        )
        # the papers' macro (radeval, f1chexbert: classification_report): every observation, absent ones as 0
        assert len(present) < len(cols)
        assert out[name]["macro_all"]["f1"] == pytest.approx(
            f1_score(ref[:, cols], gen[:, cols], average="macro", zero_division=0)
        )
        assert (
            out[name]["macro_all"]["ci_low"]
            <= out[name]["macro_all"]["f1"]
            <= out[name]["macro_all"]["ci_high"]
        )


def test_macro_by_hand_on_chexpert5():
    # Atelectasis 1, Cardiomegaly 1, Edema 1, Pleural Effusion 0; Consolidation absent from both
    out = _score()
    assert out["chexpert5"]["macro"]["f1"] == pytest.approx(3 / 4)
    assert out["chexpert5"]["macro_all"]["f1"] == pytest.approx(3 / 5)
    assert out["chexpert5"]["macro"]["labels"] == ["Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion"]
    # TP 4 (card x2, edema, atel), FP 1 (effusion), FN 1 (effusion)
    assert out["chexpert5"]["micro"]["f1"] == pytest.approx(8 / 10)


def test_uncertain_policy_negative_changes_the_counts():
    out = _score(uncertain="negative")
    card, atel = out["per_label"]["Cardiomegaly"], out["per_label"]["Atelectasis"]
    assert (card["tp"], card["fp"], card["fn"]) == (1, 1, 0)  # r2's uncertain cardiomegaly is now negative
    assert (atel["tp"], atel["fn"]) == (0, 1)
    assert out["uncertain_policy"] == "negative" and "negative" in out["protocol"]["uncertain"]
    with pytest.raises(ConfigError, match="uncertain"):
        _score(uncertain="ignore")


def test_perfect_generations_score_one_with_cis_covering_the_estimate():
    out = clinical_efficacy(REF * 5, REF * 5, labeler=TableLabeler(TABLE), n_resamples=200)
    for name in ("chexpert14", "chexpert5"):
        for avg in ("micro", "macro"):
            entry = out[name][avg]
            assert entry["f1"] == 1.0 and entry["ci_low"] == 1.0 and entry["ci_high"] == 1.0
        assert out[name]["exact_match"] == 1.0


def _noisy_table(
    n: int, flip: float, seed: int = 0
) -> tuple[dict[str, dict[str, int]], list[str], list[str]]:
    """References with random findings and generations that get each finding wrong with probability ``flip``."""
    rng = np.random.default_rng(seed)
    table = {}
    for i in range(n):
        ref = rng.random(len(FINDINGS)) < 0.3
        gen = ref ^ (rng.random(len(FINDINGS)) < flip)
        table[f"r{i}"] = {o: 1 for o, on in zip(FINDINGS, ref, strict=True) if on}
        table[f"g{i}"] = {o: 1 for o, on in zip(FINDINGS, gen, strict=True) if on}
    return table, [f"g{i}" for i in range(n)], [f"r{i}" for i in range(n)]


def test_confidence_intervals_cover_the_estimate_and_follow_the_seed():
    table, gen, ref = _noisy_table(80, flip=0.2)

    def run(seed):
        return clinical_efficacy(gen, ref, labeler=TableLabeler(table), n_resamples=300, seed=seed)

    a, b, c = run(3), run(3), run(4)
    for name in ("chexpert14", "chexpert5"):
        for avg in ("micro", "macro"):
            entry = a[name][avg]
            assert entry["ci_low"] <= entry["f1"] <= entry["ci_high"]
            assert entry["ci_low"] < entry["ci_high"]
            assert entry == b[name][avg]
            assert entry["f1"] == c[name][avg]["f1"] and entry["ci_low"] != c[name][avg]["ci_low"]
    # each observation's F1 has its own interval, drawn from the same resamples
    for obs, row in a["per_label"].items():
        if row["f1"] is not None:
            assert row["ci_low"] <= row["f1"] <= row["ci_high"], obs
            assert (row["ci_low"], row["ci_high"]) == (
                b["per_label"][obs]["ci_low"],
                b["per_label"][obs]["ci_high"],
            )
    # more errors, lower scores
    table, gen, ref = _noisy_table(80, flip=0.4)
    worse = clinical_efficacy(gen, ref, labeler=TableLabeler(table), n_resamples=10)
    assert worse["chexpert14"]["micro"]["f1"] < a["chexpert14"]["micro"]["f1"]


def test_output_has_the_keys_decoder_and_report_read():
    out = _score()
    json.dumps(out)  # every value is JSON-ready
    assert out["labeler"] == "table" and out["n"] == 4
    assert list(out["per_label"]) == list(FINDINGS)
    for row in out["per_label"].values():
        assert {"precision", "recall", "f1", "support"} <= set(row)
    for path in ("chexpert14.micro.f1", "chexpert14.macro.f1", "chexpert5.micro.f1", "chexpert5.macro.f1"):
        assert isinstance(dig(out, path), float), path
    assert out["chexpert5"]["labels"] == sorted(CHEXPERT5)


def test_rules_labeler_end_to_end():
    references = [
        "Moderate cardiomegaly. Small left pleural effusion.",
        "Right lower lobe pneumonia.",
        "No acute cardiopulmonary process.",
        "Left basal atelectasis. No pneumothorax.",
    ]
    generated = [
        "The heart is enlarged. No pleural effusion.",
        "Possible right lower lobe pneumonia.",
        "Lungs are clear.",
        "Small left pneumothorax.",
    ]
    out = clinical_efficacy(generated, references, n_resamples=100)
    assert out["labeler"] == "rules" and out["labeler_info"]["phrases_sha256"]
    row = out["per_label"]
    assert (row["Cardiomegaly"]["tp"], row["Cardiomegaly"]["f1"]) == (1, 1.0)
    assert (row["Pleural Effusion"]["fn"], row["Pleural Effusion"]["f1"]) == (1, 0.0)
    assert row["Pneumonia"]["f1"] == 1.0  # uncertain counts as positive
    assert row["No Finding"]["f1"] == 1.0
    assert (row["Atelectasis"]["fn"], row["Pneumothorax"]["fp"]) == (1, 1)
    # TP: cardiomegaly, pneumonia, no finding; FP: pneumothorax; FN: effusion, atelectasis
    assert out["chexpert14"]["micro"]["f1"] == pytest.approx(6 / 9)


def test_empty_input_gives_none_not_zero():
    out = clinical_efficacy([], [], n_resamples=10)
    assert out["n"] == 0
    assert out["chexpert14"]["micro"]["f1"] is None and out["chexpert5"]["macro"]["f1"] is None
    assert out["per_label"]["Cardiomegaly"]["support"] == 0


def test_mismatched_lengths_are_a_data_error():
    with pytest.raises(DataError, match="2 generated reports for 1 references"):
        clinical_efficacy(["a", "b"], ["a"])


@pytest.mark.parametrize("spec", ["chexpert", "chexbert", "chexbert:", "bert:/x.pth", ""])
def test_unknown_labeler_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="evaluate.labeler"):
        create_labeler(spec)


def test_missing_chexbert_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        clinical_efficacy(["a"], ["a"], labeler=f"chexbert:{tmp_path / 'chexbert.pth'}")


def test_binarize_shapes():
    assert binarize([], FINDINGS, "positive").shape == (0, len(FINDINGS))
    m = binarize([{"Edema": -1}, {"Edema": 0}], ["Edema", "Fracture"], "positive")
    assert m.tolist() == [[True, False], [False, False]]
    assert np.asarray(binarize([{"Edema": -1}], ["Edema"], "negative")).tolist() == [[False]]
