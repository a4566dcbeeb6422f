"""Paired linear-probe AUC differences between two experiments (rows of ``results/paper/differences.csv``).

The encoder's probes (``linear_probe`` on the experiment's own split, ``external_probes`` on each probe
dataset's split) are compared from ``eval/probe_scores.csv``, a captioner's own tower's
(``encoder_final_probe``, ``encoder_final_external_probes``) from ``eval/tower_probe_scores.csv``. A probe
gets a row only when both experiments' evaluations hold it; it is compared only on the same rows (matched
by id) with the same labels and truth, otherwise the row says why not, as for the zero-shot AUC
(:mod:`medlens.report.compare`). The difference is that of the mean AUC over the labels with both classes,
on the same resamples (:func:`medlens.evaluate.paired.paired_auc_difference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROBE_SOURCES", "probe_evaluations", "probe_metric", "read_experiment_probes", "compare_probes"]

# stage -> (its per-row scores in paired_inputs, its evaluation JSON, the probes' keys in it: own split, probe sets)
PROBE_SOURCES = {
    "encoder": ("probe_scores", "encoder_eval", ("linear_probe", "external_probes")),
    "decoder": (
        "tower_probe_scores",
        "decoder_eval",
        ("encoder_final_probe", "encoder_final_external_probes"),
    ),
}


def _multilabel(result: Any) -> bool:
    # a single-label probe has accuracy, not a mean AUC; a probe set not computed has neither
    return isinstance(result, dict) and "mean" in result


def probe_evaluations(evaluation: dict[str, Any] | None, own: str, external: str) -> list[str]:
    """The multi-label probes of an evaluation's JSON, named as ``write_probe_scores`` names them:
    ``<own>/<label set>`` and ``<external>/<dataset>/<label set>``."""
    if not evaluation:
        return []
    names = [f"{own}/{ls}" for ls, r in (evaluation.get(own) or {}).items() if _multilabel(r)]
    for dataset, probes in (evaluation.get(external) or {}).items():
        names += [f"{external}/{dataset}/{ls}" for ls, r in probes.items() if _multilabel(r)]
    return names


def probe_metric(evaluation: str) -> str:
    """The row name of a probe: ``linear-probe mean AUC (chexpert5)``, ``captioner tower linear-probe mean
    AUC (nih14, probe dataset nih14)``."""
    parts = evaluation.split("/")
    what = "captioner tower linear-probe" if parts[0].startswith("encoder_final") else "linear-probe"
    where = f"{parts[-1]}, probe dataset {parts[1]}" if len(parts) == 3 else parts[-1]
    return f"{what} mean AUC ({where})"


def read_experiment_probes(exp: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """stage -> the per-row probe scores of an experiment (:func:`medlens.evaluate.paired.read_probe_scores`),
    read once for all its comparisons; None without the file or without a probe to compare."""
    from medlens.evaluate.paired import read_probe_scores

    out: dict[str, dict[str, Any] | None] = {}
    for stage, (key, source, keys) in PROBE_SOURCES.items():
        path = (exp.get("paired_inputs") or {}).get(key)
        has_probes = probe_evaluations(exp.get(source), *keys)
        out[stage] = read_probe_scores(path) if has_probes and path and Path(path).is_file() else None
    return out


def _aligned(
    name: str, exps: tuple[dict[str, Any], dict[str, Any]], scores: list[dict[str, Any] | None], key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """``(a's scores, b's scores of the same rows in a's order, truth)`` of probe ``name``, or why the two
    experiments cannot be paired on it."""
    if any(s is None for s in scores):
        return f"an experiment has no {key}.csv (evaluated before it existed)"
    if missing := [e["name"] for e, s in zip(exps, scores, strict=True) if name not in s]:
        return f"{' and '.join(missing)}: no per-row scores of {name} (the probe was not fitted)"
    (ids_a, labels_a, sa, ta), (ids_b, labels_b, sb, tb) = (s[name] for s in scores)
    if set(ids_a) != set(ids_b) or labels_a != labels_b:
        return f"different test rows or labels ({len(ids_a)} and {len(ids_b)} rows)"
    position = {i: k for k, i in enumerate(ids_b)}
    take = np.array([position[i] for i in ids_a], dtype=int)
    if not np.array_equal(ta, tb[take]):
        return "the two experiments' truth of the same rows differs"
    return sa, sb[take], ta


def compare_probes(stage: str):
    """Comparator of the linear probes of ``stage`` (``encoder`` or ``decoder``) for ``experiment_differences``:
    experiments as it passes them, with ``probe_rows`` from :func:`read_experiment_probes`."""
    key, source, keys = PROBE_SOURCES[stage]

    def compare(
        a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int
    ) -> dict[str, dict[str, Any]]:
        from medlens.evaluate.paired import paired_auc_difference

        in_b = set(probe_evaluations(b.get(source), *keys))
        out = {}
        for name in (n for n in probe_evaluations(a.get(source), *keys) if n in in_b):
            paired = _aligned(name, (a, b), [e["probe_rows"][stage] for e in (a, b)], key)
            if isinstance(paired, str):
                out[probe_metric(name)] = {"not_computed": paired}
                continue
            sa, sb, truth = paired
            result = paired_auc_difference(sa, sb, truth, n_resamples=n_resamples, seed=seed)
            out[probe_metric(name)] = {**result, "n": len(truth)}
        return out

    return compare
