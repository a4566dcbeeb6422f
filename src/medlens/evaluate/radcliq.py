"""RadCliQ-v1 (Yu et al., Patterns 2023): a radiologist-error estimate from four automatic metrics.

The normaliser and linear model are CXR-Report-Metric's ``composite_metric_model``, as radeval 2.2.1
transcribes them; radeval's own RadCliQ cannot be imported on Linux (its vendored RadGraph imports
``RadEval.``), so the combination, and RadGraph's feature (the mean of entity and relation F1 of two
reports' annotations), are applied here: a dozen lines.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RADCLIQ_COLUMNS", "radcliq_v1", "radgraph_combined"]

RADCLIQ_COLUMNS = ("radgraph", "bertscore", "sembscore", "bleu2")
_RADCLIQ_MEAN = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
_RADCLIQ_SCALE = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
_RADCLIQ_COEF = np.array([-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12])
_RADCLIQ_INTERCEPT = 2.46655256e-10


def _set_f1(truth: set, found: set) -> float:
    tp = len(truth & found)
    return 2 * tp / (len(truth) + len(found)) if truth or found else 0.0


def _entities_relations(annotation: dict) -> tuple[set, set]:
    entities = annotation.get("entities", {})
    ents = {
        (tuple(e["tokens"].split() if isinstance(e["tokens"], str) else e["tokens"]), e["label"])
        for e in entities.values()
    }
    rels = set()
    for e in entities.values():
        for kind, target in e.get("relations", []):
            t = entities.get(str(target)) or entities.get(target)
            if t:
                rels.add((e["tokens"], e["label"], t["tokens"], t["label"], kind))
    return ents, rels


def radgraph_combined(hyp_ann: list[dict], ref_ann: list[dict]) -> np.ndarray:
    """RadCliQ's RadGraph feature: the mean of entity F1 and relation F1 of each report pair."""
    out = []
    for h, r in zip(hyp_ann, ref_ann, strict=True):
        (he, hr), (re_, rr) = _entities_relations(h), _entities_relations(r)
        out.append((_set_f1(re_, he) + _set_f1(rr, hr)) / 2)
    return np.asarray(out, dtype=float)


def radcliq_v1(features: dict[str, np.ndarray]) -> np.ndarray:
    """RadCliQ-v1 of each report from its four features (lower is better)."""
    x = np.column_stack([features[c] for c in RADCLIQ_COLUMNS])
    return ((x - _RADCLIQ_MEAN) / _RADCLIQ_SCALE) @ _RADCLIQ_COEF + _RADCLIQ_INTERCEPT
