"""Clinical efficacy of generated reports: CheXpert labels of generated vs reference reports, scored by F1.

Both sides are labelled by the same labeler (the rule-based one in :mod:`medlens.evaluate.labeler`,
or a local CheXbert checkpoint), the labels are made binary, and every observation is scored as a
binary classification with the reference labels as truth. The numbers follow vilmedic's
``F1CheXbert`` (the scorer most report-generation papers quote): an uncertain label counts as
positive, an unmentioned one as negative, and micro/macro F1 are given over all 14 observations and
over the five CheXpert competition observations. Percentile bootstrap CIs over reports come from
:mod:`medlens.evaluate.bootstrap`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.evaluate.bootstrap import percentile_ci, resample_indices
from medlens.evaluate.labeler import label_report, label_reports, load_rule_labeler

__all__ = [
    "clinical_efficacy",
    "create_labeler",
    "Labeler",
    "label_report",
    "label_reports",
    "binarize",
    "micro_f1",
    "macro_f1",
    "CHEXPERT5",
    "UNCERTAIN_POLICIES",
]

logger = logging.getLogger(__name__)

# The CheXpert competition observations (Irvin et al. 2019), vilmedic's `target_names_5`.
CHEXPERT5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN_POLICIES = {
    "positive": "an uncertain (-1) label counts as positive, as vilmedic's F1CheXbert does for report "
    "generation (mode 'rrg': uncertain -> 1)",
    "negative": "an uncertain (-1) label counts as negative",
}


class Labeler(Protocol):
    """What :func:`clinical_efficacy` needs from a labeler."""

    name: str  # how evaluate.labeler names it: "rules" or "chexbert:<path>"

    def label_texts(self, texts: Sequence[str]) -> list[dict[str, int]]: ...

    def describe(self) -> dict[str, Any]: ...


def create_labeler(spec: str) -> Labeler:
    """The labeler named by ``evaluate.labeler``: ``"rules"`` or ``"chexbert:<path to chexbert.pth>"``.

    Raises:
        ConfigError: for any other value, or a CheXbert checkpoint that cannot be loaded.
    """
    if spec == "rules":
        return load_rule_labeler()
    if isinstance(spec, str) and spec.startswith("chexbert:") and spec[len("chexbert:") :].strip():
        from medlens.evaluate.chexbert import load_chexbert  # torch and transformers only when asked for

        return load_chexbert(spec[len("chexbert:") :].strip())
    raise ConfigError(
        f"unknown labeler {spec!r}",
        key="evaluate.labeler",
        expected="'rules' or 'chexbert:<path to a local chexbert.pth>'",
    )


def binarize(labels: Sequence[dict[str, int]], observations: Sequence[str], uncertain: str) -> np.ndarray:
    """``[N, L]`` bool matrix of label dicts: 1 is positive, -1 follows ``uncertain``, 0 and absent negative.

    Raises:
        ConfigError: when ``uncertain`` is not one of :data:`UNCERTAIN_POLICIES`.
    """
    _check_policy(uncertain)
    positive = {1, -1} if uncertain == "positive" else {1}
    return np.array([[d.get(o) in positive for o in observations] for d in labels], dtype=bool).reshape(
        len(labels), len(observations)
    )


def _check_policy(uncertain: str) -> None:
    if uncertain not in UNCERTAIN_POLICIES:
        raise ConfigError(
            f"unknown uncertain-label policy {uncertain!r}",
            key="uncertain",
            expected=f"one of {', '.join(UNCERTAIN_POLICIES)}",
        )


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN), NaN where a label is absent from both sides."""
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def _counts(ref: np.ndarray, gen: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (ref & gen).sum(axis=axis), (~ref & gen).sum(axis=axis), (ref & ~gen).sum(axis=axis)


def micro_f1(ref: np.ndarray, gen: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Micro F1 of boolean label arrays, counts summed over ``axis``; NaN where nothing is positive."""
    return _f1(*_counts(ref, gen, axis=axis))


def macro_f1(ref: np.ndarray, gen: np.ndarray, axis: int) -> np.ndarray:
    """Macro F1 of boolean label arrays over their last axis (labels), counts summed over ``axis`` (rows);
    a label absent from both sides counts as 0, as in sklearn's ``f1_score(average="macro",
    zero_division=0)`` and the published papers."""
    per_label = _f1(*_counts(ref, gen, axis=axis))
    return np.nansum(per_label, axis=-1) / per_label.shape[-1]


def _set_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro F1, macro F1 over the labels that occur, and macro F1 over every label (one absent from both
    sides as 0, sklearn's ``classification_report``), over the last axis (labels) of count arrays; NaN
    where undefined."""
    micro = _f1(tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1))
    per_label = _f1(tp, fp, fn)
    defined = ~np.isnan(per_label)
    with np.errstate(invalid="ignore", divide="ignore"):
        macro = np.where(defined.any(axis=-1), np.nansum(per_label, axis=-1) / defined.sum(axis=-1), np.nan)
    return micro, macro, np.nansum(per_label, axis=-1) / per_label.shape[-1]


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def _per_label_f1_ci(
    ref: np.ndarray, gen: np.ndarray, *, n_resamples: int, seed: int, alpha: float
) -> list[tuple[float | None, float | None, int]]:
    """Each observation's F1 interval, over the same report resamples as the set scores."""
    dist = [
        _f1(*_counts(ref[idx], gen[idx], axis=1))  # [b, L]
        for idx in resample_indices(len(ref), n_resamples, seed)
    ]
    f1 = np.concatenate(dist)
    return [percentile_ci(f1[:, j], alpha) for j in range(f1.shape[1])]


def _per_label(
    ref: np.ndarray, gen: np.ndarray, ref_raw: np.ndarray, gen_raw: np.ndarray, cis: list | None
) -> dict[str, Any]:
    tp, fp, fn = _counts(ref, gen, axis=0)
    out = {}
    for j, obs in enumerate(FINDINGS):
        support, predicted = int(tp[j] + fn[j]), int(tp[j] + fp[j])
        reasons = [
            r
            for r, on in (
                ("absent from the references", support == 0),
                ("never labelled positive in the generated reports", predicted == 0),
            )
            if on
        ]
        f1 = _f1(tp[j], fp[j], fn[j])
        out[obs] = {
            "precision": _ratio(int(tp[j]), predicted),
            "recall": _ratio(int(tp[j]), support),
            "f1": None if np.isnan(f1) else float(f1),
            "ci_low": cis[j][0] if cis else None,
            "ci_high": cis[j][1] if cis else None,
            "support": support,
            "n_generated": predicted,
            "tp": int(tp[j]),
            "fp": int(fp[j]),
            "fn": int(fn[j]),
            "n_uncertain_reference": int((ref_raw[:, j] == -1).sum()),
            "n_uncertain_generated": int((gen_raw[:, j] == -1).sum()),
            "reason": "; ".join(reasons) or None,
        }
    return out


def _label_set(
    ref: np.ndarray, gen: np.ndarray, cols: list[int], *, n_resamples: int, seed: int, alpha: float
) -> dict[str, Any]:
    r, g = ref[:, cols], gen[:, cols]
    tp, fp, fn = _counts(r, g, axis=0)
    micro, macro, macro_all = _set_scores(tp, fp, fn)
    dist_micro, dist_macro, dist_all = [], [], []
    for idx in resample_indices(len(r), n_resamples, seed):
        m, M, A = _set_scores(*_counts(r[idx], g[idx], axis=1))
        dist_micro.append(m)
        dist_macro.append(M)
        dist_all.append(A)
    micro_ci = percentile_ci(np.concatenate(dist_micro), alpha)
    macro_ci = percentile_ci(np.concatenate(dist_macro), alpha)
    all_ci = percentile_ci(np.concatenate(dist_all), alpha)
    names = [FINDINGS[c] for c in cols]
    averaged = [n for n, f in zip(names, _f1(tp, fp, fn), strict=True) if not np.isnan(f)]
    return {
        "labels": names,
        "micro": {
            "precision": _ratio(int(tp.sum()), int(tp.sum() + fp.sum())),
            "recall": _ratio(int(tp.sum()), int(tp.sum() + fn.sum())),
            "f1": None if np.isnan(micro) else float(micro),
            "ci_low": micro_ci[0],
            "ci_high": micro_ci[1],
            "n_skipped_resamples": micro_ci[2],
        },
        "macro": {
            "f1": None if np.isnan(macro) else float(macro),
            "ci_low": macro_ci[0],
            "ci_high": macro_ci[1],
            "n_skipped_resamples": macro_ci[2],
            "labels": averaged,
        },
        "macro_all": {
            "f1": float(macro_all),
            "ci_low": all_ci[0],
            "ci_high": all_ci[1],
            "n_skipped_resamples": all_ci[2],
        },
        "exact_match": float((r == g).all(axis=1).mean()),
    }


def _empty_set(cols: list[int]) -> dict[str, Any]:
    none = {"f1": None, "ci_low": None, "ci_high": None, "n_skipped_resamples": None}
    return {
        "labels": [FINDINGS[c] for c in cols],
        "micro": {"precision": None, "recall": None, **none},
        "macro": {**none, "labels": []},
        "macro_all": dict(none),
        "exact_match": None,
    }


def clinical_efficacy(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    labeler: str | Labeler = "rules",
    uncertain: str = "positive",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Per-observation precision/recall/F1 of generated reports against their references, with micro/macro F1.

    Args:
        generated: the generated reports.
        references: the reference reports, paired with ``generated``.
        labeler: ``"rules"``, ``"chexbert:<path>"`` or a labeler object (see :func:`create_labeler`).
        uncertain: how an uncertain label counts, ``"positive"`` (vilmedic, the default) or ``"negative"``.
        n_resamples: bootstrap resamples for the CIs of each observation's F1 and of micro and macro F1.
        seed: seed of the resampling.
        alpha: 1 - confidence level.

    Returns:
        ``{"labeler", "labeler_info", "n", "uncertain_policy", "protocol", "per_label": {observation:
        {"precision", "recall", "f1", "ci_low", "ci_high", "support", "n_generated", "tp", "fp", "fn", "n_uncertain_reference",
        "n_uncertain_generated", "reason"}}, "chexpert14": {"labels", "micro": {"precision", "recall",
        "f1", "ci_low", "ci_high", "n_skipped_resamples"}, "macro": {"f1", "ci_low", "ci_high",
        "n_skipped_resamples", "labels"}, "macro_all": {"f1", "ci_low", "ci_high", "n_skipped_resamples"},
        "exact_match"}, "chexpert5": {...}}``. A value that is
        undefined (recall of an observation absent from the references) is None with a ``reason``.

    Raises:
        DataError: when the two lists differ in length or hold something other than strings.
        ConfigError: for an unknown labeler or uncertain-label policy.
    """
    # long: its docstring (every output key); the logic is 65 lines
    if len(generated) != len(references):
        raise DataError(
            f"{len(generated)} generated reports for {len(references)} references",
            column="generated",
            expected="one generated report per reference",
        )
    _check_policy(uncertain)  # before any labelling work
    lab = create_labeler(labeler) if isinstance(labeler, str) else labeler
    gen_labels, ref_labels = lab.label_texts(list(generated)), lab.label_texts(list(references))
    gen, ref = binarize(gen_labels, FINDINGS, uncertain), binarize(ref_labels, FINDINGS, uncertain)

    def raw(labels: list[dict[str, int]]) -> np.ndarray:
        return np.array([[d.get(o, 0) for o in FINDINGS] for d in labels], dtype=int).reshape(
            len(labels), len(FINDINGS)
        )

    sets = {"chexpert14": list(range(len(FINDINGS))), "chexpert5": [FINDINGS.index(o) for o in CHEXPERT5]}
    n = len(generated)
    scores = {
        name: _label_set(ref, gen, cols, n_resamples=n_resamples, seed=seed, alpha=alpha)
        if n
        else _empty_set(cols)
        for name, cols in sets.items()
    }
    if n == 0:
        logger.warning("clinical efficacy: no reports to score")
    return {
        "labeler": lab.name,
        "labeler_info": lab.describe(),
        "n": n,
        "uncertain_policy": uncertain,
        "protocol": {
            "uncertain": UNCERTAIN_POLICIES[uncertain],
            "unmentioned": "an observation the labeler leaves blank counts as negative",
            "truth": "labels of the reference reports, by the same labeler",
            "micro": "TP, FP and FN summed over the set's observations; F1 = 2TP / (2TP + FP + FN)",
            "macro": "mean per-observation F1 over the observations positive in the references or the "
            "generated reports (listed in macro.labels)",
            "macro_all": "mean per-observation F1 over all the set's observations, one absent from both "
            "as 0: sklearn's classification_report, as radeval, f1chexbert and vilmedic report it (the "
            "published papers' macro); equal to macro whenever every observation occurs",
            "chexpert5": list(CHEXPERT5),
            "ci_method": "percentile bootstrap over reports (generated and reference resampled together)",
            "n_resamples": n_resamples,
            "seed": seed,
            "alpha": alpha,
        },
        "per_label": _per_label(
            ref,
            gen,
            raw(ref_labels),
            raw(gen_labels),
            _per_label_f1_ci(ref, gen, n_resamples=n_resamples, seed=seed, alpha=alpha) if n else None,
        ),
        **scores,
    }
