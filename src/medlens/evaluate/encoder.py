"""``evaluate_encoder``: zero-shot AUC, retrieval recall@K and linear probes of a trained encoder.

Features are computed once per split with the encoder's own evaluation transform; the metrics
themselves are the model-agnostic functions of ``zero_shot``, ``retrieval`` and ``linear_probe``.
External datasets (evaluated, never trained on, as seed 000 asks) get zero-shot and retrieval.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens import environment
from medlens.config import EvalConfig, to_dict
from medlens.evaluate.features import encode_rows, encode_splits, encode_stored, label_matrix, read_rows
from medlens.evaluate.modality import class_prompts, rows_of_class
from medlens.evaluate.paired import write_class_predictions, write_probe_scores, write_scores
from medlens.evaluate.probes import probe_sets, split_probes
from medlens.evaluate.retrieval import retrieval_recall
from medlens.evaluate.zero_shot import evaluate_zero_shot
from medlens.io import atomic_path, write_json

__all__ = ["evaluate_encoder", "encode_rows", "label_matrix"]

logger = logging.getLogger(__name__)


def _encode_texts(encoder, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    out = [
        encoder.encode_texts(list(texts[i : i + batch_size])).float().cpu().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(out)


def _zero_shot_and_retrieval(
    encoder, rows: list[dict], feats: np.ndarray, cfg: EvalConfig, scores_out: list | None = None
) -> dict[str, Any]:
    labels = list(cfg.zero_shot.labels)
    zero_shot = evaluate_zero_shot(
        feats,
        lambda t: _encode_texts(encoder, t),
        label_matrix(rows, labels),
        labels,
        templates=cfg.zero_shot.templates,
        logit_scale=encoder.logit_scale,
        n_resamples=cfg.bootstrap_samples,
        seed=cfg.seed,
        scores_out=scores_out,
    )
    texts = [r["text"] for r in rows]
    retrieval = retrieval_recall(
        feats,
        _encode_texts(encoder, texts),
        texts,
        ks=cfg.recall_ks,
        n_resamples=cfg.bootstrap_samples,
        seed=cfg.seed,
    )
    return {"n": len(rows), "zero_shot": zero_shot, "retrieval": retrieval}


def _of_modality(rows: list[dict], modality: str, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Indices of the rows of ``modality`` with a class label, and that label."""
    idx, truth = rows_of_class([r["modality"] for r in rows], [r["labels"] for r in rows], modality, classes)
    return np.asarray(idx, dtype=int), truth


def _modality_scores(
    encoder, rows: dict[str, list[dict]], feats: dict[str, np.ndarray], cfg: EvalConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Knee KL grade and skin-lesion diagnosis from the encoder, zero-shot and by a linear probe, scored as
    each field does (:mod:`medlens.evaluate.modality`), and each test row's predicted classes (for the
    report's paired comparisons); both empty when the split holds neither."""
    from medlens.evaluate.modality import MODALITY_TASKS

    out: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    for modality, (task, classes) in MODALITY_TASKS.items():
        test_idx, truth = _of_modality(rows[cfg.split], modality, classes)
        if not len(test_idx):
            continue
        x_test = feats[cfg.split][test_idx]
        scored = functools.partial(_score_classes, task, truth, classes, cfg)
        # zero-shot: the class whose averaged prompt embedding is nearest (CLIP's prompt ensembles)
        prompts = class_prompts(modality, classes)
        text = np.stack([_unit(_encode_texts(encoder, prompts[c]).mean(0)) for c in classes])
        sims = _unit(x_test) @ text.T
        zero_shot = [classes[i] for i in sims.argmax(1)]
        entry = {"zero_shot": scored(zero_shot, sims)}
        entry["zero_shot"]["protocol"]["prompts"] = prompts
        entry["linear_probe"], probed = _modality_probe(rows, feats, cfg, modality, classes, x_test, scored)
        out[modality] = entry
        for k, i in enumerate(test_idx):
            predictions.append(
                {
                    "id": rows[cfg.split][i]["id"],
                    "modality": modality,
                    "truth": truth[k],
                    "zero_shot": zero_shot[k],
                    "linear_probe": probed[k] if probed else "",
                }
            )
    return out, predictions


def _score_classes(
    task: str, truth, classes, cfg: EvalConfig, predicted: list[str], class_scores: np.ndarray
):
    """Grades get accuracy and kappa (no scores needed); diagnoses also a one-vs-rest AUC from the scores."""
    from medlens.evaluate.modality import multiclass_scores, ordinal_scores

    kwargs = {"n_resamples": cfg.bootstrap_samples, "seed": cfg.seed}
    if task == "ordinal":
        return ordinal_scores(truth, predicted, classes, **kwargs)
    return multiclass_scores(truth, predicted, classes, scores=class_scores, **kwargs)


def _modality_probe(rows, feats, cfg: EvalConfig, modality: str, classes, x_test: np.ndarray, scored):
    """The multinomial probe of one modality's classes, fit on train, C chosen on val, scored on ``x_test``,
    and its predicted classes (None when it could not be fit)."""
    from medlens.evaluate.linear_probe import fit_class_probe

    fit = {}
    for split in ("train", "val"):
        idx, truth = _of_modality(rows[split], modality, classes)
        fit[split] = (feats[split][idx] if len(idx) else np.zeros((0, x_test.shape[1])), np.array(truth))
    probe, protocol = fit_class_probe(*fit["train"], *fit["val"], cfg.linear_probe.c_grid)
    if probe is None:
        return {"not_computed": protocol["reason"], "protocol": protocol}, None
    proba, fitted = probe.predict_proba(x_test), list(probe.classes_)
    # a class absent from train has probability 0
    class_scores = np.stack(
        [proba[:, fitted.index(c)] if c in fitted else np.zeros(len(x_test)) for c in classes], 1
    )
    predicted = probe.predict(x_test).tolist()
    result = scored(predicted, class_scores)
    result["protocol"].update(protocol)
    return result, predicted


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def ood_summary(model_dir: str | os.PathLike, feats: np.ndarray) -> dict[str, Any] | None:
    """The out-of-distribution scores of the evaluation images (``medlens.models.ood``): quantiles and the share
    ``medlens`` would warn about. None for a folder without ``ood.safetensors``."""
    from medlens.models.ood import OOD_WARN_AT, load_ood

    scorer = load_ood(model_dir)
    if scorer is None or not len(feats):
        return None
    scores = scorer.score(feats)
    return {
        "n": int(len(scores)),
        "quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0.5", "0.9", "0.99")},
        "max": float(scores.max()),
        "warn_at": OOD_WARN_AT,
        "share_warned": float(np.mean(scores > OOD_WARN_AT)),
        "protocol": "Mahalanobis distance to the training images' embeddings (Ledoit-Wolf covariance), over the "
        "99th percentile of held-out validation images' distances",
    }


def evaluate_encoder(
    cfg: EvalConfig,
    pairs_path: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    *,
    external: Sequence[str | os.PathLike] = (),
    probes: Sequence[str | os.PathLike] = (),
    out_json: str | os.PathLike,
    out_per_label: str | os.PathLike,
    out_roc: str | os.PathLike,
    out_scores: str | os.PathLike | None = None,
    out_classes: str | os.PathLike | None = None,
    out_probe_scores: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate the encoder on ``cfg.split`` of the pairs (and on each external prepared dataset, and by
    linear probes on each probe dataset's own split: ``external_probes``,
    :func:`medlens.evaluate.probes.probe_sets`).

    ``out_scores`` receives each evaluated row's zero-shot score and truth per label
    (:func:`medlens.evaluate.paired.write_scores`) and ``out_classes`` each knee or skin row's true and
    predicted classes (:func:`medlens.evaluate.paired.write_class_predictions`) and ``out_probe_scores`` each
    multi-label linear probe's test probabilities and truth per row (``linear_probe`` and ``external_probes``:
    :func:`medlens.evaluate.paired.write_probe_scores`), from which the report compares experiments pairwise.

    Returns:
        The metrics written to ``out_json``.
    """
    from medlens.models.encoders import load_encoder

    encoder = load_encoder(encoder_dir)
    rows, feats = encode_splits(encoder, pairs_path, cfg.split, cfg.max_samples, cfg.seed)
    scores: list[np.ndarray] = []
    result: dict[str, Any] = {
        "split": cfg.split,
        **_zero_shot_and_retrieval(encoder, rows[cfg.split], feats[cfg.split], cfg, scores),
    }
    if out_scores is not None:
        labels = list(cfg.zero_shot.labels)
        ids = [r["id"] for r in rows[cfg.split]]
        write_scores(out_scores, ids, labels, scores[0], label_matrix(rows[cfg.split], labels))
    probe_scores: list[dict[str, Any]] = []
    if cfg.linear_probe.enabled:
        result["linear_probe"] = split_probes(rows, feats, cfg, scores_out=probe_scores)
        if probes:
            result["external_probes"] = probe_sets(encoder, probes, cfg, scores_out=probe_scores)
    if out_probe_scores is not None:
        write_probe_scores(out_probe_scores, probe_scores)
    modalities, predictions = _modality_scores(encoder, rows, feats, cfg)
    if modalities:
        result["modalities"] = modalities
    if out_classes is not None:
        write_class_predictions(out_classes, predictions)
    result["ood"] = ood_summary(encoder_dir, feats[cfg.split])
    result["external"] = {}
    for path in external:
        ext_rows = read_rows(path, None, cfg.max_samples, cfg.seed)
        name = ext_rows[0]["dataset"] if ext_rows else os.path.basename(str(path))
        result["external"][name] = _zero_shot_and_retrieval(
            encoder, ext_rows, encode_stored(encoder, path, {"all": ext_rows})["all"], cfg
        )
    result["protocol"] = {
        "split": cfg.split,
        "templates": cfg.zero_shot.templates,
        "zero_shot": "softmax over each label's positive/negative prompt pair (CheXzero)",
        "logit_scale": encoder.logit_scale,
        "recall_ks": cfg.recall_ks,
        "bootstrap_samples": cfg.bootstrap_samples,
        "seed": cfg.seed,
        "config": to_dict(cfg),
    }
    result["environment"] = environment.record()
    write_json(result, out_json)
    _write_tables(result, out_per_label, out_roc)
    logger.info(
        "zero-shot mean AUC %s; recall %s",
        result["zero_shot"].get("mean"),
        {k: v for k, v in result["retrieval"].items() if k.startswith(("i2t", "t2i"))},
    )
    return result


def _write_tables(result: dict[str, Any], out_per_label, out_roc) -> None:
    sections = [("zero_shot", result["zero_shot"])]
    sections += [(f"linear_probe/{k}", v) for k, v in result.get("linear_probe", {}).items()]
    sections += [(f"external/{k}/zero_shot", v["zero_shot"]) for k, v in result.get("external", {}).items()]
    with atomic_path(out_per_label) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["evaluation", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "note"])
        for name, sec in sections:
            for label, row in sec.get("per_label", {}).items():
                w.writerow(
                    [
                        name,
                        label,
                        row.get("auc"),
                        row.get("ci_low"),
                        row.get("ci_high"),
                        row.get("n_pos"),
                        row.get("n_neg"),
                        row.get("reason", ""),
                    ]
                )
    with atomic_path(out_roc) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["evaluation", "label", "fpr", "tpr"])
        for name, sec in sections:
            for label, row in sec.get("per_label", {}).items():
                for fpr, tpr in zip(row.get("fpr") or [], row.get("tpr") or [], strict=True):
                    w.writerow([name, label, fpr, tpr])
