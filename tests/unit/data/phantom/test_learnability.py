"""The signal is in the pixels: a linear classifier on down-sampled phantoms learns every finding.

Logistic regression on 32 x 32 pixels (the phantoms rendered at 128 and box-filtered, coarser than
the 64-pixel input of the ``demo`` models) is trained on 1,000 phantoms and scored on 500 others
(one study per patient, so no patient is in both). Every label with a prevalence of at least 5 %
must reach AUC >= 0.80, while the same classifier trained on shuffled labels stays at chance
(0.5 +- 0.07, averaged over ten shuffles because one shuffle's AUC wanders with the few positives).
Pixels are standardised per image and per pixel and whitened to 100 principal components: the
whitening keeps a shuffled-label model from lining up by chance with the strongest anatomy.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medlens.config import SyntheticConfig
from medlens.data.phantom import SAMPLED_FINDINGS, render_study, sample_studies

N_TRAIN, N_TEST, RENDER, PIXELS = 1000, 500, 128, 32


@pytest.fixture(scope="module")
def data():
    studies = sample_studies(SyntheticConfig(n_images=N_TRAIN + N_TEST, n_patients=N_TRAIN + N_TEST, seed=1))
    x = np.stack(
        [
            np.asarray(
                render_study(s, RENDER).resize((PIXELS, PIXELS), Image.Resampling.BOX), dtype=np.float32
            ).ravel()
            for s in studies
        ]
    )
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    train, test = x[:N_TRAIN], x[N_TRAIN:]
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-3
    pca = PCA(100, whiten=True, random_state=0).fit((train - mean) / std)
    features = pca.transform((train - mean) / std), pca.transform((test - mean) / std)
    labels = sorted({label for s in studies for label in s.labels})
    y = {label: np.array([label in s.labels for s in studies]) for label in labels}
    return features, y


def frequent(y) -> list[str]:
    return [label for label, v in y.items() if v.mean() >= 0.05]


def auc(features, y_train, y_test) -> float:
    model = LogisticRegression(C=0.01, max_iter=1000).fit(features[0], y_train)
    return roc_auc_score(y_test, model.decision_function(features[1]))


def test_every_sampled_finding_is_frequent_enough_to_be_tested(data):
    _, y = data
    assert set(SAMPLED_FINDINGS) <= set(frequent(y))


def test_every_frequent_finding_is_learnable_from_pixels(data):
    features, y = data
    scores = {label: auc(features, y[label][:N_TRAIN], y[label][N_TRAIN:]) for label in frequent(y)}
    assert min(scores.values()) >= 0.80, scores


def test_shuffled_labels_stay_at_chance(data):
    features, y = data
    for label in frequent(y):
        shuffled = [
            auc(features, np.random.default_rng(k).permutation(y[label][:N_TRAIN]), y[label][N_TRAIN:])
            for k in range(10)
        ]
        assert abs(np.mean(shuffled) - 0.5) <= 0.07, (label, shuffled)
