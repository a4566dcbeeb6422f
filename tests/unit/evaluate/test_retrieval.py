"""Tests of medlens.evaluate.retrieval: recall@K on a hand-made similarity matrix with duplicate texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.errors import ConfigError, DataError
from medlens.evaluate.retrieval import normalise_text, retrieval_metrics, retrieval_recall, similarity_matrix

# Texts 0 and 2 are the same report up to whitespace, so each is a correct answer for the other.
TEXTS = ["a  b", "c", "a b\n", "d"]
SIM = np.array(
    [  # rows: images, columns: texts
        [0.9, 0.1, 0.2, 0.3],  # positives {0, 2}: best 0.9, nothing above   -> rank 1
        [0.5, 0.4, 0.1, 0.2],  # positive {1}: 0.4, text 0 above            -> rank 2
        [0.8, 0.7, 0.1, 0.0],  # positives {0, 2}: best is the duplicate 0.8 -> rank 1
        [0.3, 0.6, 0.6, 0.6],  # positive {3}: 0.6 tied with texts 1 and 2  -> rank 3 (ties count against)
    ]
)


@pytest.fixture(scope="module")
def result():
    return retrieval_metrics(TEXTS, similarity=SIM, ks=(1, 2, 3), n_resamples=200, n_examples=4)


def test_image_to_text_recall_by_hand(result):
    i2t = result["image_to_text"]
    assert [i2t[f"recall@{k}"]["value"] for k in (1, 2, 3)] == [0.5, 0.75, 1.0]
    assert i2t["mean_rank"] == 1.75 and i2t["median_rank"] == 1.5


def test_text_to_image_recall_by_hand(result):
    # Columns as queries: text 0 -> images {0, 2} best 0.9 (rank 1); text 1 -> image 1 at 0.4 behind
    # 0.7 and 0.6 (rank 3); text 2 -> images {0, 2} best 0.2 behind 0.6 (rank 2); text 3 -> 0.6 (rank 1).
    t2i = result["text_to_image"]
    assert [t2i[f"recall@{k}"]["value"] for k in (1, 2, 3)] == [0.5, 0.75, 1.0]
    assert t2i["mean_rank"] == 1.75


def test_duplicates_change_the_answer():
    unique = retrieval_metrics(["a", "c", "e", "d"], similarity=SIM, ks=(1,), n_resamples=10)
    assert unique["image_to_text"]["recall@1"]["value"] == 0.25
    assert unique["protocol"]["n_unique_texts"] == 4


def test_examples_list_top_k_and_positives(result):
    ex = {e["query"]: e for e in result["examples"]["image_to_text"]}
    assert sorted(ex) == [0, 1, 2, 3]
    assert ex[3]["top"] == [1, 2, 3] and ex[3]["rank"] == 3 and ex[3]["positives"] == [3]
    assert ex[2]["top"][0] == 0 and ex[2]["positives"] == [0, 2] and ex[2]["n_positives"] == 2
    json.dumps(result, allow_nan=False)


def test_cis_contain_values_and_protocol(result):
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 2, 3):
            entry = result[direction][f"recall@{k}"]
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    proto = result["protocol"]
    assert proto["n_queries"] == 4 and proto["n_unique_texts"] == 3 and proto["ks"] == [1, 2, 3]
    assert proto["n_resamples"] == 200 and proto["seed"] == 0


def test_constant_scores_give_zero_not_one():
    res = retrieval_metrics(
        [str(i) for i in range(20)], similarity=np.ones((20, 20)), ks=(1, 5), n_resamples=10
    )
    assert res["image_to_text"]["recall@1"]["value"] == 0.0
    assert res["text_to_image"]["recall@5"]["value"] == 0.0


def test_features_match_similarity_and_perfect_features_recall_1():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 8))
    texts = [f"report {i}" for i in range(30)]
    res = retrieval_metrics(texts, image_features=feats, text_features=feats * 3.0, n_resamples=50)
    assert res["image_to_text"]["recall@1"]["value"] == 1.0 == res["text_to_image"]["recall@1"]["value"]
    same = retrieval_metrics(texts, similarity=similarity_matrix(feats, feats * 3.0), n_resamples=50)
    assert same == res == retrieval_recall(feats, feats * 3.0, texts, n_resamples=50)


def test_ci_narrows_with_more_queries():
    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 640):
        feats = rng.normal(size=(n, 8))
        noisy = feats + rng.normal(scale=1.0, size=(n, 8))
        r = retrieval_metrics(
            [str(i) for i in range(n)], image_features=feats, text_features=noisy, ks=(10,), n_resamples=200
        )["image_to_text"]["recall@10"]
        widths.append(r["ci_high"] - r["ci_low"])
    assert widths[1] < widths[0]


def test_normalise_text():
    assert normalise_text("  No acute\tprocess.\n") == "No acute process."


def test_bad_inputs_raise():
    with pytest.raises(ConfigError, match="similarity"):
        retrieval_metrics(TEXTS)
    with pytest.raises(DataError, match="shape"):
        retrieval_metrics(TEXTS[:3], similarity=SIM)
    with pytest.raises(ConfigError, match="ks"):
        retrieval_metrics(TEXTS, similarity=SIM, ks=(0,))
    with pytest.raises(DataError, match="zero or non-finite"):
        similarity_matrix(np.zeros((2, 3)), np.ones((2, 3)))
