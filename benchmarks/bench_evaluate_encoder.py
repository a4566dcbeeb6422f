"""Timing of the encoder-evaluation metrics at realistic sizes (CPU, single process).

Run: ``.venv/bin/python benchmarks/bench_evaluate_encoder.py``. Prints one Markdown table row per case;
the results are recorded in docs/benchmarks.md. Data are random (only the sizes matter here).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.metrics import roc_auc_score

from medlens.config import FINDINGS
from medlens.evaluate.bootstrap import bootstrap_ci
from medlens.evaluate.linear_probe import linear_probe
from medlens.evaluate.metrics import per_label_auc
from medlens.evaluate.retrieval import retrieval_recall
from medlens.evaluate.zero_shot import zero_shot_probabilities


def _time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    labels = list(FINDINGS)
    rows = []

    for n in (500, 5000):
        scores, targets = rng.random((n, 14)), (rng.random((n, 14)) < 0.2).astype(int)
        rows.append(
            (
                f"per_label_auc, {n} x 14 labels, 1000 resamples (vectorised)",
                _time(lambda s=scores, t=targets: per_label_auc(s, t, labels, n_resamples=1000)),
            )
        )
    s, t = rng.random(500), (rng.random(500) < 0.2).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows.append(
            (
                "bootstrap_ci(roc_auc_score), 500 rows x 1 label, 1000 resamples (loop, for comparison)",
                _time(lambda: bootstrap_ci(roc_auc_score, t, s, n_resamples=1000), repeat=1),
            )
        )

    for n in (1000, 5000):
        img, txt = rng.normal(size=(n, 512)), rng.normal(size=(n, 512))
        texts = [f"report {i % (n // 2)}" for i in range(n)]  # every text twice
        rows.append(
            (
                f"retrieval_recall, {n} pairs x 512 dims, K=1/5/10, 1000 resamples",
                _time(lambda a=img, b=txt, c=texts: retrieval_recall(a, b, c, n_resamples=1000), repeat=1),
            )
        )

    table = {p: v for p, v in zip(["A", "B", "C", "D"], rng.normal(size=(4, 512)), strict=True)}
    img = rng.normal(size=(5000, 512))

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([table["ABCD"[hash(t) % 4]] + 0.01 * len(t) for t in texts])

    rows.append(
        (
            "zero_shot_probabilities, 5000 images x 14 labels (chexzero prompts)",
            _time(lambda: zero_shot_probabilities(img, encode, labels)),
        )
    )

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random((n, 5)) < 0.2).astype(int)
        x = rng.normal(size=(n, 768))
        x[:, :5] += y
        return x, y

    (xa, ya), (xb, yb), (xc, yc) = split(2000), split(500), split(1000)
    rows.append(
        (
            "linear_probe, 768 dims, 2000/500/1000 rows, 5 labels, 4 C values, 1000 resamples",
            _time(lambda: linear_probe(xa, ya, xb, yb, xc, yc, "chexpert5", n_resamples=1000), repeat=1),
        )
    )

    print("| case | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
