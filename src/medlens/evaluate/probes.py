"""Linear probes of a frozen image tower: on the experiment's own split and on each probe dataset's split.

``evaluate_encoder`` probes the trained encoder (``linear_probe``, ``external_probes``) and ``evaluate_decoder``
a captioner's own tower (``encoder_final_probe``, ``encoder_final_external_probes``), with the protocol of
:mod:`medlens.evaluate.linear_probe`. Each multi-label probe's test probabilities can be collected per row
(``scores_out``), named by the path of its result in the evaluation's JSON, for the paired comparisons of
:mod:`medlens.report.compare_probes`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import EvalConfig
from medlens.data.split import count_rows
from medlens.evaluate.features import encode_splits, label_matrix
from medlens.evaluate.linear_probe import LABEL_SETS, linear_probe

__all__ = ["probe_label_sets", "split_probes", "probe_sets", "probe_image_tower"]

logger = logging.getLogger(__name__)


def probe_label_sets(
    train: list[dict],
    val: list[dict],
    test: list[dict],
    feats: dict[str, np.ndarray],
    cfg: EvalConfig,
    *,
    scores_out: list | None = None,
    evaluation: str = "",
) -> dict[str, Any]:
    """Linear probes for every label set the data can support.

    Args:
        train, val, test: the rows of each split.
        feats: ``{"train", "val", "test"}`` image features of those rows.
        cfg: the evaluation settings (C grid, bootstrap).
        scores_out: when given, each fitted multi-label probe's per-row test scores are appended to it as
            :func:`medlens.evaluate.paired.write_probe_scores` takes them, named ``<evaluation>/<label set>``.
        evaluation: the path of the returned dict in the evaluation's JSON (``linear_probe``).
    """
    probes: dict[str, Any] = {}
    single_label = all(len(r["labels"]) == 1 for r in train + val + test)
    if single_label:
        classes = sorted({r["labels"][0] for r in train})
        y = {
            s: np.array([classes.index(r["labels"][0]) if r["labels"][0] in classes else -1 for r in rows])
            for s, rows in (("train", train), ("val", val), ("test", test))
        }
        probes["single_label"] = linear_probe(
            feats["train"],
            y["train"],
            feats["val"],
            y["val"],
            feats["test"],
            y["test"],
            classes,
            task="multiclass",
            c_grid=cfg.linear_probe.c_grid,
            n_resamples=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
        return probes
    has_native = any("native_labels" in json.loads(r["meta"]) for r in train)
    for name, labels in LABEL_SETS.items():
        native = name == "nih14"
        if native and not has_native:
            continue
        y = {
            s: label_matrix(rows, labels, native=native)
            for s, rows in (("train", train), ("val", val), ("test", test))
        }
        if not y["train"].any():
            continue
        fitted: list[dict[str, Any]] = []
        probes[name] = linear_probe(
            feats["train"],
            y["train"],
            feats["val"],
            y["val"],
            feats["test"],
            y["test"],
            labels,
            task="multilabel",
            c_grid=cfg.linear_probe.c_grid,
            n_resamples=cfg.bootstrap_samples,
            seed=cfg.seed,
            scores_out=fitted,
        )
        if scores_out is not None and fitted:
            scores_out.append(
                {"evaluation": f"{evaluation}/{name}", "ids": [r["id"] for r in test], **fitted[0]}
            )
    return probes


def split_probes(
    rows: dict[str, list[dict]],
    feats: dict[str, np.ndarray],
    cfg: EvalConfig,
    *,
    scores_out: list | None = None,
    evaluation: str = "linear_probe",
) -> dict[str, Any]:
    """:func:`probe_label_sets` fit on train, C chosen on val, scored on ``cfg.split``."""
    return probe_label_sets(
        rows["train"],
        rows["val"],
        rows[cfg.split],
        {"train": feats["train"], "val": feats["val"], "test": feats[cfg.split]},
        cfg,
        scores_out=scores_out,
        evaluation=evaluation,
    )


def probe_sets(
    model,
    probe_pairs: Sequence[str | os.PathLike],
    cfg: EvalConfig,
    *,
    scores_out: list | None = None,
    evaluation: str = "external_probes",
) -> dict[str, Any]:
    """The linear probes of :func:`split_probes` on each probe dataset's own split (``split_probe``'s
    ``data/probe/<dataset>.parquet``), by dataset: the frozen tower fit on its train, C chosen on its val,
    scored on its ``cfg.split``. A dataset lacking one of those splits is not computed, with the reason.
    Per-row scores go to ``scores_out`` named ``<evaluation>/<dataset>/<label set>``."""
    out: dict[str, Any] = {}
    for path in probe_pairs:
        name = Path(path).stem
        counts = {s: count_rows(path, s) for s in ("train", "val", cfg.split)}
        if empty := [s for s, n in counts.items() if not n]:
            out[name] = {
                "not_computed": f"no {' or '.join(empty)} rows in its split ({counts})",
                "rows_per_split": counts,
            }
            continue
        rows, feats = encode_splits(model, path, cfg.split, cfg.max_samples, cfg.seed)
        probed = split_probes(rows, feats, cfg, scores_out=scores_out, evaluation=f"{evaluation}/{name}")
        out[name] = {**probed, "rows_per_split": counts}
        logger.info("probed on %s: %s", name, counts)
    return out


def probe_image_tower(
    cfg: EvalConfig,
    pairs_path: str | os.PathLike,
    tower_dir: str | os.PathLike,
    probes: Sequence[str | os.PathLike] = (),
    *,
    scores_out: list | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The linear probes of ``evaluate_encoder`` on a bare image tower's frozen features: on the
    experiment's own split, and on each probe dataset's (:func:`probe_sets`).

    Seed 004 (LAPVQA) probes its captioner's own tower, on NIH ChestX-ray14 and CheXpert; ``train_decoder``
    writes that tower to ``decoder/encoder_final/``. Per-row scores go to ``scores_out`` named as
    ``eval/decoder.json`` holds the results: ``encoder_final_probe/<label set>`` and
    ``encoder_final_external_probes/<dataset>/<label set>``.
    """
    from medlens.models.captioner import ImageTower

    tower = ImageTower(tower_dir)
    rows, feats = encode_splits(tower, pairs_path, cfg.split, cfg.max_samples, cfg.seed)
    own = split_probes(rows, feats, cfg, scores_out=scores_out, evaluation="encoder_final_probe")
    external = probe_sets(
        tower, probes, cfg, scores_out=scores_out, evaluation="encoder_final_external_probes"
    )
    return own, external
