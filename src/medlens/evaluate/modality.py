"""Scores for the modalities that are not chest radiographs, as each field reports them.

* Knee radiographs, Kellgren-Lawrence grade 0-4 (:func:`ordinal_scores`): accuracy, quadratic-weighted
  Cohen's kappa (the knee-OA literature's headline), per-grade F1 and the confusion matrix.
* Skin-lesion photographs, PAD-UFES-20's six diagnoses (:func:`multiclass_scores`): balanced accuracy
  (the ISIC challenges' metric), macro-F1, one-vs-rest AUC per class when class scores exist, and the
  confusion matrix.
* Visual question answering, SLAKE: :mod:`medlens.evaluate.vqa`.

A generated text is read back into a class by :func:`label_from_text`, from the same phrase lists the
text of these datasets is synthesised from (``resources/text_templates/<modality>.yaml``), so a model
that writes any of their phrasings is read correctly; a text that names no class, or two, is counted as
unread (``None``), never guessed, and scores as wrong. Headline numbers carry 95 % percentile-bootstrap
intervals over the evaluated rows (:mod:`medlens.evaluate.bootstrap`); the metrics are scikit-learn's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.data.text_from_labels import load_templates
from medlens.evaluate.bootstrap import bootstrap

__all__ = [
    "MODALITY_TASKS",
    "class_prompts",
    "rows_of_class",
    "label_from_text",
    "ordinal_scores",
    "multiclass_scores",
    "task_metrics",
    "class_indices",
    "interval",
]

# modality -> (task, classes in order); the classes are the label maps' targets (resources/label_maps)
MODALITY_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "knee_xray": ("ordinal", ("KL0", "KL1", "KL2", "KL3", "KL4")),
    "dermatology": (
        "multiclass",
        (
            "Basal Cell Carcinoma",
            "Squamous Cell Carcinoma",
            "Actinic Keratosis",
            "Seborrheic Keratosis",
            "Melanoma",
            "Nevus",
        ),
    ),
}

# "Kellgren-Lawrence grade 3", "KL 3", "KL-3", "KL grade 3", "grade 3 osteoarthritis"
_KL_EXPLICIT = re.compile(
    r"\b(?:kellgren[- ]lawrence(?:\s+\(kl\))?\s+grade|kl(?:\s+grade)?|grade)[\s-]*([0-4])\b", re.I
)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def class_prompts(modality: str, classes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The phrasings that name each class: its ``term`` (else its name) and its ``positive`` report sentences
    from ``resources/text_templates`` (the phrasings such datasets' text is written in); the encoder's
    zero-shot prompts, and what :func:`label_from_text` looks for."""
    entries = load_templates(modality)["labels"]
    return {
        c: [entries[c].get("term", c), *(s for s in entries[c].get("positive", ()) if "{" not in s)]
        for c in (entries if classes is None else classes)
    }


def _phrases(modality: str) -> dict[str, list[str]]:
    """class -> the lower-cased phrasings that name it, without trailing detail in brackets."""
    return {
        name: [_normalise(p.split("(")[0].rstrip(" .")) for p in phrases if p]
        for name, phrases in class_prompts(modality).items()
    }


def label_from_text(text: str, modality: str) -> str | None:
    """The class a generated text states, or None when it names none or several.

    Knee: an explicit grade ("Kellgren-Lawrence grade 2", "KL 2") wins; otherwise the grade whose
    template sentences the text contains. Dermatology: the diagnosis whose name or template sentence
    the text contains.
    """
    if modality == "knee_xray":
        grades = {int(g) for g in _KL_EXPLICIT.findall(text)}
        if len(grades) == 1:
            return f"KL{grades.pop()}"
        if len(grades) > 1:
            return None
    body = _normalise(text)
    found = {
        name
        for name, phrases in _phrases(modality).items()
        if any(re.search(rf"(?<![a-z]){re.escape(p)}(?![a-z])", body) for p in phrases if p)
    }
    return found.pop() if len(found) == 1 else None


def rows_of_class(
    modalities: Sequence[str | None], labels: Sequence[Sequence[str]], modality: str, classes: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Indices of the rows of ``modality`` that carry one of ``classes``, and that class (their truth)."""
    idx = [
        i
        for i, (m, ls) in enumerate(zip(modalities, labels, strict=True))
        if m == modality and set(ls) & set(classes)
    ]
    return idx, [next(c for c in labels[i] if c in classes) for i in idx]


def class_indices(labels: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Class indices, -1 for an unread text (never equal to a true class)."""
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position.get(label, -1) if label is not None else -1 for label in labels])


def _per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(classes))), zero_division=0
    )
    return {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, c in enumerate(classes)
    }


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    columns = [*classes, "unread"]
    matrix = confusion_matrix(
        y_true, np.where(y_pred < 0, len(classes), y_pred), labels=list(range(len(columns)))
    )
    return {"rows": list(classes), "columns": columns, "counts": matrix[: len(classes)].tolist()}


def accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """Share of exact classes; an unread text (-1) is wrong."""
    from sklearn.metrics import accuracy_score

    return accuracy_score(t, p)


def quadratic_kappa(n_classes: int):
    """Quadratic-weighted Cohen's kappa over ``n_classes`` ordered grades (scikit-learn); an unread text
    counts as the grade farthest from the truth, so that a model cannot gain kappa by writing no grade."""
    from sklearn.metrics import cohen_kappa_score

    def kappa(t: np.ndarray, p: np.ndarray) -> float:
        p = np.where(p < 0, np.where(t >= n_classes / 2, 0, n_classes - 1), p)
        if len(np.union1d(t, p)) < 2:  # one grade everywhere: kappa is undefined
            return float("nan")
        return cohen_kappa_score(t, p, weights="quadratic", labels=list(range(n_classes)))

    return kappa


def balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """Recall averaged over the classes present in ``t`` (sklearn's definition); NaN with one class."""
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(t, p) if len(np.unique(t)) > 1 else float("nan")


def macro_f1_present(t: np.ndarray, p: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``t``, as balanced accuracy: a resample that lacks a rare class
    would otherwise score it 0 and pull the interval below every value the data can give."""
    from sklearn.metrics import f1_score

    return f1_score(t, p, labels=np.unique(t[t >= 0]), average="macro", zero_division=0)


def task_metrics(modality: str) -> tuple[list[str], dict[str, Any]]:
    """The classes of ``modality``'s task and its headline metrics, name -> f(true, predicted class
    indices), as :func:`ordinal_scores` and :func:`multiclass_scores` report them."""
    task, classes = MODALITY_TASKS[modality]
    if task == "ordinal":
        return list(classes), {
            "accuracy": accuracy,
            "quadratic_weighted_kappa": quadratic_kappa(len(classes)),
        }
    return list(classes), {"balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1_present}


def interval(metric, *arrays, n_resamples: int, seed: int) -> dict[str, Any]:
    """A headline number with its 95 % percentile-bootstrap interval over rows."""
    result = bootstrap(metric, *arrays, n_resamples=n_resamples, seed=seed)
    return {k: result[k] for k in ("value", "ci_low", "ci_high", "n_skipped_resamples")}


def ordinal_scores(
    truth: Sequence[str],
    predicted: Sequence[str | None],
    classes: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, quadratic-weighted kappa, per-grade F1 and confusion of an ordinal grade (KL 0-4).

    An unread prediction counts as wrong for accuracy and F1 and, for kappa, as the grade farthest from
    the truth, so that a model cannot gain kappa by writing no grade.
    """
    y_true, y_pred = class_indices(truth, classes), class_indices(predicted, classes)
    kappa = quadratic_kappa(len(classes))
    return {
        "n": len(y_true),
        "n_unread": int((y_pred < 0).sum()),
        "accuracy": interval(accuracy, y_true, y_pred, n_resamples=n_resamples, seed=seed),
        "quadratic_weighted_kappa": interval(kappa, y_true, y_pred, n_resamples=n_resamples, seed=seed),
        "per_class": _per_class_f1(y_true, y_pred, classes),
        "confusion": _confusion(y_true, y_pred, classes),
        "protocol": {
            "classes": list(classes),
            "kappa": "Cohen's kappa with quadratic weights (scikit-learn); an unread text counts as the "
            "grade farthest from the truth",
            "accuracy": "exact grade; an unread text is wrong",
            "ci": f"95 % percentile bootstrap over rows, {n_resamples} resamples, seed {seed}",
        },
    }


def multiclass_scores(
    truth: Sequence[str],
    predicted: Sequence[str | None],
    classes: Sequence[str],
    *,
    scores: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy, macro-F1, one-vs-rest AUC per class and confusion of a diagnosis.

    Args:
        truth, predicted: class names; a prediction of None (an unread text) is wrong.
        classes: the classes, in order.
        scores: ``[n, len(classes)]`` class scores (a probe's probabilities, zero-shot similarities);
            without them there is no AUC (a generated text gives a class, not a score).
    """
    from sklearn.metrics import roc_auc_score

    y_true, y_pred = class_indices(truth, classes), class_indices(predicted, classes)
    result: dict[str, Any] = {
        "n": len(y_true),
        "n_unread": int((y_pred < 0).sum()),
        "balanced_accuracy": interval(balanced_accuracy, y_true, y_pred, n_resamples=n_resamples, seed=seed),
        "macro_f1": interval(macro_f1_present, y_true, y_pred, n_resamples=n_resamples, seed=seed),
        "per_class": _per_class_f1(y_true, y_pred, classes),
        "confusion": _confusion(y_true, y_pred, classes),
        "protocol": {
            "classes": list(classes),
            "balanced_accuracy": "mean recall over the classes present in the truth (scikit-learn); an "
            "unread text is wrong",
            "macro_f1": "mean F1 over the classes present in the truth",
            "ci": f"95 % percentile bootstrap over rows, {n_resamples} resamples, seed {seed}",
        },
    }
    if scores is not None:
        result["auc_one_vs_rest"] = {}
        for i, c in enumerate(classes):
            positive = (y_true == i).astype(int)

            def auc(t: np.ndarray, s: np.ndarray) -> float:
                return roc_auc_score(t, s) if 0 < t.sum() < len(t) else float("nan")

            if 0 < positive.sum() < len(positive):
                result["auc_one_vs_rest"][c] = interval(
                    auc, positive, scores[:, i], n_resamples=n_resamples, seed=seed
                )
        result["protocol"]["auc_one_vs_rest"] = (
            "ROC AUC of each class against the rest, from the class scores"
        )
    return result
