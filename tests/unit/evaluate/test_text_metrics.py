"""Corpus text metrics on constructed corpora with known answers."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from medlens.errors import DataError
from medlens.evaluate import text_metrics
from medlens.evaluate.text_metrics import (
    cider_tokens,
    corpus_bleu,
    corpus_cider_d,
    corpus_meteor,
    corpus_rouge,
    corpus_text_metrics,
)

CORPUS = [
    "The heart is enlarged with a small left pleural effusion.",
    "Right lower lobe consolidation consistent with pneumonia.",
    "No pneumothorax; endotracheal tube tip above the carina.",
    "Interstitial pulmonary edema and bilateral basal atelectasis.",
]


def test_identical_corpora_score_one():
    out = corpus_text_metrics(CORPUS, CORPUS, meteor=False)
    for k in (1, 2, 3, 4):
        assert out[f"bleu{k}"] == pytest.approx(1.0)
    assert out["rouge_l"] == pytest.approx(1.0)
    # no n-gram occurs in every reference and every report has 4-grams: all cosines are 1, x10
    assert out["cider_d"] == pytest.approx(10.0)


def test_bleu_by_hand():
    gen, ref = ["the heart is enlarged"], ["the heart is normal"]
    assert corpus_bleu(gen, ref, 1)[0] == pytest.approx(3 / 4)  # 3 of 4 unigrams, no brevity penalty
    assert corpus_bleu(gen, ref, 2)[0] == pytest.approx(math.sqrt(3 / 4 * 2 / 3))
    # shorter than the reference: brevity penalty exp(1 - 4/2)
    assert corpus_bleu(["the heart"], ref, 1)[0] == pytest.approx(math.exp(1 - 4 / 2))
    assert corpus_bleu(["The HEART is normal"], ref, 4)[0] == pytest.approx(1.0)  # lower-cased


def test_rouge_l_by_hand():
    # LCS "a c d" of 4 and 4 tokens: P = R = F = 3/4; the corpus value is the mean over pairs
    assert corpus_rouge(["a c d e"], ["a b c d"])["rouge_l"] == pytest.approx(0.75)
    assert corpus_rouge(["a c d e", "x y"], ["a b c d", "x y"])["rouge_l"] == pytest.approx((0.75 + 1.0) / 2)
    # unigrams a c d of 4 and 4: 0.75; bigrams "c d" of 3 and 3: 1/3
    rouge = corpus_rouge(["a c d e"], ["a b c d"])
    assert (rouge["rouge1"], rouge["rouge2"]) == (pytest.approx(0.75), pytest.approx(1 / 3))


def test_cider_d_ranks_closer_reports_higher():
    close = CORPUS[:3] + ["Interstitial pulmonary edema and basal atelectasis."]
    far = CORPUS[:3] + ["Osseous structures are intact."]
    disjoint = ["zebra quartz violin"] * len(CORPUS)
    perfect = corpus_cider_d(CORPUS, CORPUS)[0]
    assert perfect > corpus_cider_d(close, CORPUS)[0] > corpus_cider_d(far, CORPUS)[0]
    assert corpus_cider_d(disjoint, CORPUS)[0] == 0.0


def test_cider_d_needs_a_corpus():
    value, reason = corpus_cider_d(["a b"], ["a b"])
    assert value is None and "needs >= 2" in reason
    assert corpus_cider_d(["a", "b"], ["", "..."])[1] == "every reference is empty"


def test_cider_tokens_drop_punctuation_and_case():
    assert cider_tokens("No pneumothorax; 1.5 cm X-ray, (left).") == "no pneumothorax 1.5 cm x-ray left"


def test_protocol_and_json():
    out = corpus_text_metrics(CORPUS, CORPUS[::-1], meteor=False)
    json.dumps(out)
    assert out["n"] == 4
    assert out["protocol"]["bleu"]["signature"].startswith("nrefs:1|case:lc|")
    assert set(out["protocol"]["versions"]) == {"sacrebleu", "rouge-score", "pycocoevalcap"}
    assert out["not_computed"] == {"meteor": "not requested (meteor=False)"} and out["meteor"] is None


def test_empty_corpus_is_reported_not_zero():
    out = corpus_text_metrics([], [])
    assert out["n"] == 0 and out["bleu4"] is None and out["cider_d"] is None
    assert out["not_computed"]["rouge_l"] == "no reports"


def test_bad_input_is_a_data_error():
    with pytest.raises(DataError, match="2 generated reports for 1 references"):
        corpus_text_metrics(["a", "b"], ["a"])
    with pytest.raises(DataError, match="row 1"):
        corpus_text_metrics(["a", None], ["a", "b"])


def test_meteor_without_java_is_not_computed(monkeypatch):
    monkeypatch.setattr(text_metrics.shutil, "which", lambda name: None)
    out = corpus_text_metrics(CORPUS, CORPUS)
    assert out["meteor"] is None and "java not found" in out["not_computed"]["meteor"]
    assert out["bleu4"] == pytest.approx(1.0)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")
def test_meteor_offline():
    # one Java start (~15 s): four identical pairs and an empty generation; all generated words match,
    # so the corpus score sits between the recall lost to the empty one and 1
    score, reason = corpus_meteor(CORPUS + [""], CORPUS + ["Lungs are clear."])
    assert reason is None
    assert 0.6 < score < 0.99


def test_intervals_resample_reports_and_bleu_matches_sacrebleu_on_each_resample():
    from sacrebleu.metrics import BLEU

    from medlens.evaluate.bootstrap import percentile_ci, resample_indices

    generated = [
        "The heart is enlarged with a left pleural effusion.",
        "Right lower lobe consolidation.",
        "No pneumothorax; the tube tip is above the carina.",
        "Pulmonary edema and basal atelectasis.",
        "Normal chest.",
        "Small right effusion.",
    ]
    references = CORPUS + ["No acute cardiopulmonary process.", "Small right pleural effusion."]
    out = corpus_text_metrics(generated, references, meteor=False, n_resamples=40, seed=3)
    intervals = out["intervals"]
    assert set(intervals) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rouge_l", "cider_d"}
    for key, ci in intervals.items():
        assert ci["ci_low"] <= out[key] <= ci["ci_high"], key
        assert ci["ci_low"] < ci["ci_high"] and (ci["n_resamples"], ci["seed"]) == (40, 3), key
    # BLEU-4 from summed per-report statistics is corpus BLEU of each resample, as sacrebleu scores it
    bleu = BLEU(max_ngram_order=4, lowercase=True)
    by_sacrebleu = [
        bleu.corpus_score([generated[i] for i in row], [[references[i] for i in row]]).score / 100
        for batch in resample_indices(len(generated), 40, 3)
        for row in batch
    ]
    low, high, _ = percentile_ci(np.array(by_sacrebleu))
    assert (intervals["bleu4"]["ci_low"], intervals["bleu4"]["ci_high"]) == pytest.approx((low, high))
    # identical reports: ROUGE-L is 1 on every resample
    same = corpus_text_metrics(CORPUS, CORPUS, meteor=False, n_resamples=20)["intervals"]["rouge_l"]
    assert same["ci_low"] == same["ci_high"] == pytest.approx(1.0)
    assert "intervals" not in corpus_text_metrics(generated, references, meteor=False)  # none asked for
