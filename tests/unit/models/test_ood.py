"""The out-of-distribution score: near 1 for held-out images like the training ones, far above for others."""

from __future__ import annotations

import numpy as np

from medlens.models.ood import OOD_WARN_AT, fit_ood, load_ood


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_held_out_images_of_the_training_kind_score_about_one_and_others_far_above(tmp_path):
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    train, held_out, new_kind = (_unit(centre + 0.3 * rng.normal(size=(n, 32))) for n in (500, 200, 200))
    other = _unit(-centre + 0.3 * rng.normal(size=(50, 32)))  # another kind of image altogether
    scorer = fit_ood(train, held_out)
    assert (
        np.quantile(scorer.score(held_out), 0.99) == np.float64(1.0)
        or abs(np.quantile(scorer.score(held_out), 0.99) - 1) < 1e-9
    )
    assert (
        np.mean(scorer.score(new_kind) > OOD_WARN_AT) < 0.02
    )  # fresh images of the same kind: rarely warned
    assert scorer.score(other).min() > 2 * OOD_WARN_AT
    scorer.save(tmp_path)
    again = load_ood(tmp_path)
    np.testing.assert_allclose(again.score(other), scorer.score(other))
    assert load_ood(tmp_path / "none") is None
