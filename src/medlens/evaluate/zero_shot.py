"""Zero-shot classification with positive/negative prompt pairs, as CheXzero evaluates (Tiu et al. 2022).

For each label a positive and a negative prompt set is built from a template file
(``resources/prompts/<name>.yaml``). Each side's text embeddings are L2-normalised, averaged and
renormalised (CLIP-style prompt ensembling; CheXzero's ``zeroshot_classifier``). The logits are
``logit_scale * cos(image, side)`` and the label probability is the softmax over the pair,
``exp(pos) / (exp(pos) + exp(neg))`` (CheXzero's ``run_softmax_eval``).

CheXzero applies the softmax to the raw cosines, i.e. ``logit_scale=1``; any positive scale gives the
same AUC (the probability is monotone in ``pos - neg``), so the scale only changes calibration. Pass
the model's own learned scale to get the probabilities the model was trained to produce.

The functions take features and a text-encoding callable, never a model, so they serve any encoder.
The CLI and the training loop's validation call :func:`build_prompts` too, so inference and
evaluation always use the same prompts.

Template file format::

    name: chexzero
    description: ...
    source: ...
    default: {positive: ["{}"], negative: ["no {}"]}   # "{}" is replaced by the label name
    labels:                                            # per-label prompts override the default
      No Finding: {positive: ["No Finding"], negative: ["abnormal finding"]}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from medlens.config import load_yaml
from medlens.errors import ConfigError, DataError
from medlens.evaluate.metrics import per_label_auc
from medlens.resources import resource_path

# per_label_auc lives in metrics (the linear probe uses it too) and is re-exported for callers here.
__all__ = [
    "load_prompt_templates",
    "build_prompts",
    "encode_prompts",
    "zero_shot_probabilities",
    "zero_shot_logits",
    "evaluate_zero_shot",
    "per_label_auc",
    "DEFAULT_TEMPLATES",
]

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = "chexzero"
_SIDES = ("positive", "negative")


def load_prompt_templates(name: str | Path = DEFAULT_TEMPLATES) -> dict[str, Any]:
    """Load and check a prompt template set.

    Args:
        name: a set under ``resources/prompts/`` (``"chexzero"``, ``"report"``) or a path to a YAML file.

    Returns:
        ``{"name", "description", "source", "file", "default": {"positive": [...], "negative": [...]}
        | None, "labels": {label: {"positive": [...], "negative": [...]}}}``.

    Raises:
        ConfigError: when the set does not exist or is malformed (the message names the key).
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        # a path (also one to a folder or to a file of another kind) is named as such, not as a set's name
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            what = "a folder" if path.is_dir() else "not a .yaml file" if path.exists() else "not found"
            raise ConfigError(
                f"prompt template file '{path}': {what}",
                expected="an existing YAML file, or the name of a set under resources/prompts (e.g. chexzero)",
            )
    else:
        path = resource_path("prompts", f"{name}.yaml")
    raw = load_yaml(path)
    return _check_templates(raw, str(path))


def _resolve_templates(templates: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(templates, dict):
        return _check_templates(templates, str(templates.get("file", "<dict>")))
    return load_prompt_templates(templates)


def _check_templates(raw: Any, file: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"top level is {type(raw).__name__}", file=file, expected="a mapping")
    unknown = set(raw) - {"name", "description", "source", "default", "labels", "file"}
    if unknown:
        raise ConfigError(
            f"unknown keys {sorted(unknown)}",
            file=file,
            expected="name, description, source, default, labels",
        )
    default = raw.get("default")
    if default is not None:
        default = _check_pair(default, file, "default")
        for side in _SIDES:
            for t in default[side]:
                if t.count("{}") != 1:
                    raise ConfigError(
                        f"template {t!r} has {t.count('{}')} '{{}}' placeholders",
                        file=file,
                        key=f"default.{side}",
                        expected="exactly one '{}' for the label name",
                    )
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(
            f"is {type(labels).__name__}",
            file=file,
            key="labels",
            expected="a mapping from label name to {positive, negative}",
        )
    if default is None and not labels:
        raise ConfigError(
            "neither 'default' nor 'labels' is given",
            file=file,
            expected="a default template pair, per-label prompts, or both",
        )
    return {
        "name": str(raw.get("name") or Path(file).stem),
        "description": str(raw.get("description") or ""),
        "source": str(raw.get("source") or ""),
        "file": raw.get("file", file),
        "default": default,
        "labels": {str(k): _check_pair(v, file, f"labels.{k}") for k, v in labels.items()},
    }


def _check_pair(pair: Any, file: str, key: str) -> dict[str, list[str]]:
    if not isinstance(pair, dict) or set(pair) != set(_SIDES):
        raise ConfigError(
            f"has keys {sorted(pair) if isinstance(pair, dict) else type(pair).__name__}",
            file=file,
            key=key,
            expected="exactly 'positive' and 'negative'",
        )
    out = {}
    for side in _SIDES:
        prompts = [pair[side]] if isinstance(pair[side], str) else pair[side]
        if (
            not isinstance(prompts, list)
            or not prompts
            or not all(isinstance(p, str) and p.strip() for p in prompts)
        ):
            raise ConfigError(
                f"is {pair[side]!r}",
                file=file,
                key=f"{key}.{side}",
                expected="a non-empty list of non-empty strings",
            )
        out[side] = list(prompts)
    return out


def build_prompts(
    labels: list[str], templates: str | Path | dict[str, Any] = DEFAULT_TEMPLATES
) -> dict[str, tuple[list[str], list[str]]]:
    """The positive and negative prompts of each label.

    A label listed under ``labels:`` in the set uses its own prompts (a ``{}`` in them is replaced by the
    label name); any other label is formatted into the ``default`` templates.

    Args:
        labels: label names, e.g. the CheXpert-14 observations.
        templates: a set name, a YAML path, or a dict as returned by :func:`load_prompt_templates`.

    Returns:
        ``{label: (positive_prompts, negative_prompts)}`` in the order of ``labels``.

    Raises:
        ConfigError: when a label has no prompts, or when the default negative template would be
            applied to a label that is itself a negation (CheXzero's "no No Finding", which inverts it).
    """
    t = _resolve_templates(templates)
    prompts: dict[str, tuple[list[str], list[str]]] = {}
    for label in labels:
        if label in t["labels"]:
            pair = t["labels"][label]
            prompts[label] = (
                [p.replace("{}", label) for p in pair["positive"]],
                [p.replace("{}", label) for p in pair["negative"]],
            )
            continue
        if t["default"] is None:
            raise ConfigError(
                f"no prompts for label '{label}'",
                file=t["file"],
                key="labels",
                expected=f"one of {sorted(t['labels'])} or a 'default' template pair",
            )
        if label.lower().startswith("no "):
            negative = t["default"]["negative"][0].replace("{}", label)
            raise ConfigError(
                f"label '{label}' is itself a negation; the default template would give "
                f"the double negative {negative!r}, which inverts it",
                file=t["file"],
                key=f"labels.{label}",
                expected="explicit positive and negative prompts for this label",
            )
        prompts[label] = (
            [p.replace("{}", label) for p in t["default"]["positive"]],
            [p.replace("{}", label) for p in t["default"]["negative"]],
        )
    return prompts


def encode_prompts(
    prompts: dict[str, tuple[list[str], list[str]]], encode_text: Callable[[list[str]], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Class embeddings of each side: normalise each prompt embedding, average, renormalise.

    Every distinct prompt is encoded once, in one call of ``encode_text``.

    Args:
        prompts: as returned by :func:`build_prompts`.
        encode_text: maps ``P`` strings to a ``[P, D]`` array of text features.

    Returns:
        ``(positive, negative)``, each ``[L, D]`` with unit rows, in the order of ``prompts``.

    Raises:
        DataError: when ``encode_text`` returns the wrong shape or a zero or non-finite embedding.
    """
    unique = list(dict.fromkeys(p for pos, neg in prompts.values() for p in (*pos, *neg)))
    emb = np.asarray(encode_text(unique), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(unique):
        raise DataError(
            f"encode_text returned shape {emb.shape} for {len(unique)} prompts",
            column="text_features",
            expected=f"[{len(unique)}, D]",
        )
    emb = _unit_rows(emb, "text_features", unique)
    row = {p: i for i, p in enumerate(unique)}

    def side(texts: list[str]) -> np.ndarray:
        return emb[[row[p] for p in texts]].mean(axis=0)

    pos = np.stack([side(p) for p, _ in prompts.values()])  # [L, D]
    neg = np.stack([side(n) for _, n in prompts.values()])  # [L, D]
    names = list(prompts)
    return _unit_rows(pos, "positive prompts", names), _unit_rows(neg, "negative prompts", names)


def zero_shot_logits(
    image_features: np.ndarray,
    encode_text: Callable[[list[str]], np.ndarray],
    labels: list[str],
    templates: str | Path | dict[str, Any] = DEFAULT_TEMPLATES,
    logit_scale: float = 100.0,
) -> np.ndarray:
    """The pair of logits of each label for each image: ``logit_scale * cos(image, side)``.

    Args:
        image_features: ``[N, D]`` image embeddings (normalised here).
        encode_text: maps a list of strings to ``[P, D]`` text embeddings of the same model.
        labels: the ``L`` label names.
        templates: prompt set name, YAML path or dict (see :func:`build_prompts`).
        logit_scale: multiplies the cosines; 1.0 reproduces CheXzero's numbers.

    Returns:
        ``[N, L, 2]``: positive logits in ``[..., 0]``, negative in ``[..., 1]``.

    Raises:
        ConfigError: on bad templates or a non-positive ``logit_scale``.
        DataError: on mismatched or degenerate features.
    """
    if not logit_scale > 0:
        raise ConfigError(f"logit_scale={logit_scale}", key="logit_scale", expected="a positive number")
    img = np.asarray(image_features, dtype=np.float64)
    if img.ndim != 2:
        raise DataError(f"image features have shape {img.shape}", column="image_features", expected="[N, D]")
    img = _unit_rows(img, "image_features")
    pos, neg = encode_prompts(build_prompts(labels, templates), encode_text)
    if pos.shape[1] != img.shape[1]:
        raise DataError(
            f"text features have {pos.shape[1]} dims, image features {img.shape[1]}",
            column="text_features",
            expected="the same embedding size as the image features",
        )
    return logit_scale * np.stack([img @ pos.T, img @ neg.T], axis=-1)  # [N, L, 2]


def zero_shot_probabilities(
    image_features: np.ndarray,
    encode_text: Callable[[list[str]], np.ndarray],
    labels: list[str],
    templates: str | Path | dict[str, Any] = DEFAULT_TEMPLATES,
    logit_scale: float = 100.0,
) -> np.ndarray:
    """Probability of each label for each image: softmax over the (positive, negative) prompt pair.

    Arguments and errors as :func:`zero_shot_logits`.

    Returns:
        ``[N, L]`` probabilities ``exp(pos) / (exp(pos) + exp(neg))``. At a large ``logit_scale`` they
        round to exactly 0 or 1 in float64 for well-separated images, so rank by
        :func:`zero_shot_logits`'s difference (the log-odds) when computing AUC.
    """
    logits = zero_shot_logits(image_features, encode_text, labels, templates, logit_scale)
    return softmax(logits, axis=-1)[..., 0]


def evaluate_zero_shot(
    image_features: np.ndarray,
    encode_text: Callable[[list[str]], np.ndarray],
    targets: np.ndarray,
    labels: list[str],
    *,
    templates: str | Path | dict[str, Any] = DEFAULT_TEMPLATES,
    logit_scale: float = 100.0,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    scores_out: list | None = None,
) -> dict[str, Any]:
    """Zero-shot per-label AUC with CIs, and the protocol (prompt set, every prompt, scale) behind it.

    Args:
        image_features: ``[N, D]`` image embeddings.
        encode_text: maps a list of strings to ``[P, D]`` text embeddings.
        targets: ``[N, L]`` 0/1 ground truth.
        labels: the ``L`` label names.
        templates: prompt set name, YAML path or dict.
        logit_scale: see :func:`zero_shot_probabilities`.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.
        alpha: 1 - confidence level.
        scores_out: when given, the ``[N, L]`` log-odds the AUCs rank by are appended to it (for paired
            comparisons between models).

    Returns:
        :func:`medlens.evaluate.metrics.per_label_auc`'s dict (``per_label``, ``mean``), with its
        ``protocol`` extended by ``prompt_set``, ``prompt_file``, ``prompts`` ({label: {"positive",
        "negative"}}), ``logit_scale`` and the probability rule.
    """
    t = _resolve_templates(templates)
    prompts = build_prompts(labels, t)
    logits = zero_shot_logits(image_features, encode_text, labels, t, logit_scale)
    # Ranked by the log-odds pos - neg: the same order as the probability, without its float saturation.
    log_odds = logits[..., 0] - logits[..., 1]
    if scores_out is not None:
        scores_out.append(log_odds)
    result = per_label_auc(log_odds, targets, labels, n_resamples=n_resamples, seed=seed, alpha=alpha)
    result["protocol"].update(
        task="zero-shot classification (CheXzero softmax over a positive/negative prompt pair)",
        prompt_set=t["name"],
        prompt_file=str(t["file"]),
        logit_scale=float(logit_scale),
        prompts={k: {"positive": pos, "negative": neg} for k, (pos, neg) in prompts.items()},
        probability="exp(pos) / (exp(pos) + exp(neg)), pos/neg = logit_scale * cosine(image, prompt side)",
        auc_scores="log-odds pos - neg (ranks as the probability does, without rounding to 0 or 1)",
        ensembling="per side: mean of L2-normalised prompt embeddings, renormalised",
    )
    return result


def _unit_rows(x: np.ndarray, what: str, names: list[str] | None = None) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            "zero or non-finite embedding",
            row=names[i] if names else i,
            column=what,
            expected="finite, non-zero feature vectors",
        )
    return x / norms
