"""Timing of the encoder-evaluation metrics at realistic sizes (CPU, single process).

Run: ``.venv/bin/python benchmarks/bench_evaluate_encoder.py [--rows 500 5000] [--pairs 1000 5000]
[--probe-rows 2000 500 1000] [--resamples 1000] [--repeats 3] [--write docs/benchmarks.md]``. Prints a Markdown section with one table row
per case (the best of ``--repeats`` runs; one run for the slow loop, retrieval and the probe); ``--write``
puts it into the given file, replacing an earlier section of this benchmark and leaving the others. Data are
random (only the sizes matter here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from docs_section import cpu_model, write_section  # this folder: the benchmarks run as scripts
from sklearn.metrics import roc_auc_score

from medlens.config import FINDINGS
from medlens.evaluate.bootstrap import bootstrap_ci
from medlens.evaluate.linear_probe import linear_probe
from medlens.evaluate.metrics import per_label_auc
from medlens.evaluate.retrieval import retrieval_recall
from medlens.evaluate.zero_shot import zero_shot_probabilities

TITLE = "## Encoder-evaluation metrics: time per call, CPU"


def _time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(
    rows_n: list[int], pairs_n: list[int], probe_n: list[int], resamples: int, repeats: int
) -> list[tuple[str, float]]:
    """``(case, best seconds)`` for each metric at each size."""
    # long: one timed call per case, in the order of the table
    rng = np.random.default_rng(0)
    labels = list(FINDINGS)
    rows = []

    for n in rows_n:
        scores, targets = rng.random((n, 14)), (rng.random((n, 14)) < 0.2).astype(int)
        rows.append(
            (
                f"per_label_auc, {n} x 14 labels, {resamples} resamples (vectorised)",
                _time(
                    lambda s=scores, t=targets: per_label_auc(s, t, labels, n_resamples=resamples), repeats
                ),
            )
        )
    s, t = rng.random(rows_n[0]), (rng.random(rows_n[0]) < 0.2).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows.append(
            (
                f"bootstrap_ci(roc_auc_score), {rows_n[0]} rows x 1 label, {resamples} resamples "
                "(loop, for comparison)",
                _time(lambda: bootstrap_ci(roc_auc_score, t, s, n_resamples=resamples), repeat=1),
            )
        )

    for n in pairs_n:
        img, txt = rng.normal(size=(n, 512)), rng.normal(size=(n, 512))
        texts = [f"report {i % max(1, n // 2)}" for i in range(n)]  # every text twice
        rows.append(
            (
                f"retrieval_recall, {n} pairs x 512 dims, K=1/5/10, {resamples} resamples",
                _time(
                    lambda a=img, b=txt, c=texts: retrieval_recall(a, b, c, n_resamples=resamples), repeat=1
                ),
            )
        )

    table = {p: v for p, v in zip(["A", "B", "C", "D"], rng.normal(size=(4, 512)), strict=True)}
    images = max(pairs_n)
    img = rng.normal(size=(images, 512))

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([table["ABCD"[hash(t) % 4]] + 0.01 * len(t) for t in texts])

    rows.append(
        (
            f"zero_shot_probabilities, {images} images x 14 labels (chexzero prompts)",
            _time(lambda: zero_shot_probabilities(img, encode, labels), repeats),
        )
    )

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random((n, 5)) < 0.2).astype(int)
        x = rng.normal(size=(n, 768))
        x[:, :5] += y
        return x, y

    (xa, ya), (xb, yb), (xc, yc) = (split(n) for n in probe_n)
    rows.append(
        (
            f"linear_probe, 768 dims, {'/'.join(map(str, probe_n))} rows, 5 labels, 4 C values, {resamples} resamples",
            _time(lambda: linear_probe(xa, ya, xb, yb, xc, yc, "chexpert5", n_resamples=resamples), repeat=1),
        )
    )
    return rows


def section(rows: list[tuple[str, float]], argv: str) -> str:
    """The Markdown section: the command, the machine and one row per case."""
    cpu = cpu_model()
    load = os.getloadavg()[0]
    return "\n".join(
        [
            f"{TITLE} ({dt.date.today().isoformat()})",
            "",
            f"`benchmarks/bench_evaluate_encoder.py {argv}`: random scores and features (only the sizes matter), "
            f"one process. Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"numpy {np.__version__}. Load average (1 min) {load:.2f} at the end (on a shared machine the times "
            "include waiting for a core).",
            "",
            "| case | seconds |",
            "|---|---|",
            *(f"| {name} | {seconds:.2f} |" for name, seconds in rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 5000], help="rows of the AUC cases")
    parser.add_argument(
        "--pairs", type=int, nargs="+", default=[1000, 5000], help="pairs of the retrieval cases"
    )
    parser.add_argument(
        "--probe-rows",
        type=int,
        nargs=3,
        default=[2000, 500, 1000],
        metavar=("TRAIN", "VAL", "TEST"),
        help="rows of the linear probe's splits",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of every case")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fast case; the best is shown")
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    args = parser.parse_args(argv)
    rows = run(args.rows, args.pairs, args.probe_rows, args.resamples, args.repeats)
    shown = (
        f"--rows {' '.join(map(str, args.rows))} --pairs {' '.join(map(str, args.pairs))} "
        f"--probe-rows {' '.join(map(str, args.probe_rows))} "
        f"--resamples {args.resamples} --repeats {args.repeats}"
    )
    text = section(rows, shown)
    print(text)
    if args.write:
        write_section(args.write, TITLE, text)


if __name__ == "__main__":
    main()
