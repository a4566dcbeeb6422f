"""SLAKE's visual question answering scores: closed-question accuracy, open-question accuracy and recall,
overall, by answer type and by question category, each headline with its 95 % bootstrap interval.

Answers are normalised as the VQA evaluation does (which LLaVA-Med's med-VQA evaluation copies); the
open-question recall is LLaVA-Med's token recall.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.evaluate.modality import interval

__all__ = ["vqa_scores", "normalize_answer", "exact_and_recall"]

_ARTICLES = frozenset({"a", "an", "the"})
# the VQA evaluation's number words (its manualMap, which LLaVA-Med's glossary.py copies): "two" scores as "2"
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    **{
        w: str(i)
        for i, w in enumerate(
            ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"], 1
        )
    },
}
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")  # 1,000 -> 1000, as the VQA evaluation's commaStrip
# punctuation becomes a space, except a decimal point between digits (2.5 stays 2.5, as the VQA evaluation keeps it)
_PUNCTUATION = re.compile(r"(?!(?<=\d)\.(?=\d))[" + re.escape(string.punctuation) + "]")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation as spaces, no articles, number words as digits, single spaces (the VQA
    evaluation's normalisation, which LLaVA-Med's med-VQA evaluation applies to both answers)."""
    words = _PUNCTUATION.sub(" ", _DIGIT_COMMA.sub("", text.lower())).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def _answer_scores(references: list[str], answers: list[str], closed: list[bool]) -> dict[str, Any]:
    """Closed accuracy, open accuracy and open recall of one group of questions."""
    out: dict[str, Any] = {"n": len(references), "n_closed": sum(closed), "n_open": len(closed) - sum(closed)}
    exact = [normalize_answer(r) == normalize_answer(a) for r, a in zip(references, answers, strict=True)]
    recall = [_token_recall(r, a) for r, a in zip(references, answers, strict=True)]
    if out["n_closed"]:
        out["closed_accuracy"] = float(np.mean([e for e, c in zip(exact, closed, strict=True) if c]))
    if out["n_open"]:
        out["open_accuracy"] = float(np.mean([e for e, c in zip(exact, closed, strict=True) if not c]))
        out["open_recall"] = float(np.mean([r for r, c in zip(recall, closed, strict=True) if not c]))
    return out


def _token_recall(reference: str, answer: str) -> float:
    """LLaVA-Med's open-question recall (``calculate_f1score`` in its ``llava/eval/eval_metrics``): over the
    distinct words, TP counts the answer's occurrences of the words both share and FN the reference's
    occurrences of the words the answer lacks; recall = TP / (TP + FN), 0 when either text is empty.

    Hand-written: LLaVA-Med's evaluation is not a package. Its counting differs from a plain share of the
    reference's words when words repeat ("left lung" against "left lung, right lung" is 2/3, not 3/4).
    """
    ref, got = Counter(normalize_answer(reference).split()), Counter(normalize_answer(answer).split())
    if not ref or not got:
        return 0.0
    tp = sum(n for w, n in got.items() if w in ref)
    fn = sum(n for w, n in ref.items() if w not in got)
    return tp / (tp + fn)


def exact_and_recall(
    references: Sequence[str], answers: Sequence[str], answer_types: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per question: whether it is closed (SLAKE's ``answer_type``; without one, a yes/no reference), the
    exact match of the normalised answers (0/1) and LLaVA-Med's token recall."""
    closed = np.array(
        [
            (t or "").upper() == "CLOSED" if t else normalize_answer(r) in ("yes", "no")
            for r, t in zip(references, answer_types, strict=True)
        ],
        dtype=bool,
    )
    pairs = list(zip(references, answers, strict=True))
    exact = np.array([normalize_answer(r) == normalize_answer(a) for r, a in pairs], float)
    return closed, exact, np.array([_token_recall(r, a) for r, a in pairs], float)


def vqa_scores(
    references: Sequence[str],
    answers: Sequence[str],
    answer_types: Sequence[str | None],
    categories: Sequence[str | None],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """SLAKE's accuracies: closed (yes/no and other fixed-choice) and open questions, by category.

    Args:
        references, answers: the reference and the generated answer of each question.
        answer_types: SLAKE's ``answer_type`` (``CLOSED`` or ``OPEN``); a missing type counts as closed
            when the reference is yes/no, else open.
        categories: SLAKE's ``content_type`` (organ, position, abnormality, ...), or None.
    """
    references, answers = list(references), list(answers)
    is_closed, exact, recall = exact_and_recall(references, answers, answer_types)
    closed = is_closed.tolist()
    result = _answer_scores(references, answers, closed)
    for name, mask in (("closed_accuracy", is_closed), ("open_accuracy", ~is_closed)):
        if mask.any():
            result[name] = interval(np.mean, exact[mask], n_resamples=n_resamples, seed=seed)
    if (~is_closed).any():
        result["open_recall"] = interval(np.mean, recall[~is_closed], n_resamples=n_resamples, seed=seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(categories):
        groups[c or "unspecified"].append(i)
    result["by_category"] = {
        name: _answer_scores(
            [references[i] for i in idx], [answers[i] for i in idx], [closed[i] for i in idx]
        )
        for name, idx in sorted(groups.items())
    }
    result["protocol"] = {
        "normalisation": "lower case, punctuation as spaces (a decimal point between digits kept), articles "
        "removed, number words zero to ten and 'none' as digits, whitespace collapsed (the VQA evaluation's)",
        "closed_accuracy": "exact match of the normalised answer, questions SLAKE marks CLOSED",
        "open_accuracy": "exact match of the normalised answer, questions SLAKE marks OPEN",
        "open_recall": "LLaVA-Med's token recall: TP / (TP + FN) over distinct words, TP counting the "
        "answer's occurrences of shared words, FN the reference's of missing ones",
        "ci": f"95 % percentile bootstrap over questions, {n_resamples} resamples, seed {seed}",
    }
    return result
