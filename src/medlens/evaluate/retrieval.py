"""Image->text and text->image recall@K over paired features, with bootstrap CIs over queries.

Row ``i`` of the image features and row ``i`` of the text features are a pair. A query's positives are
every item whose text equals the query pair's text after whitespace normalisation, so duplicated
reports ("No acute cardiopulmonary process.") are all correct answers instead of arbitrary misses.
recall@K is the share of queries with at least one positive among the top K.

Ties are counted against the query: a positive's rank is the number of non-positives scoring at least
as high. A model whose features are constant therefore scores 0, not a perfect 1 from the order in
which a sort breaks ties.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.errors import ConfigError, DataError
from medlens.evaluate.bootstrap import percentile_ci, resample_indices

__all__ = [
    "retrieval_metrics",
    "retrieval_recall",
    "similarity_matrix",
    "normalise_text",
    "first_positive_ranks",
]

logger = logging.getLogger(__name__)

# Queries per block when ranking, to bound memory at [block, N] on large test sets.
_BLOCK = 1024
# A very common text (a normal impression) can match thousands of items; list only the first few.
_MAX_LISTED = 20


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace and strip the ends (the equality used to find duplicate texts)."""
    return " ".join(text.split())


def similarity_matrix(image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[N_images, N_texts]`` of L2-normalised features.

    Raises:
        DataError: on shape mismatches or zero/non-finite feature rows.
    """
    img, txt = np.asarray(image_features, dtype=np.float64), np.asarray(text_features, dtype=np.float64)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise DataError(
            f"image features {img.shape}, text features {txt.shape}",
            column="features",
            expected="[N, D] and [M, D] with the same D",
        )
    for x, name in ((img, "image_features"), (txt, "text_features")):
        norms = np.linalg.norm(x, axis=1)
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            raise DataError(
                "zero or non-finite feature vector",
                row=int(np.argmax(bad)),
                column=name,
                expected="finite, non-zero vectors",
            )
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    return img @ txt.T


def first_positive_ranks(similarity: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """0-based rank of the best-scoring positive of each query (row), ties counted against the query.

    Args:
        similarity: ``[Q, M]`` query-by-item scores.
        groups: ``[max(Q, M)]`` integer text group of each pair; query ``q`` and item ``m`` match when
            ``groups[q] == groups[m]``.

    Returns:
        ``[Q]`` integer ranks: how many non-positive items score at least as high as the best positive.
    """
    q, m = similarity.shape
    ranks = np.empty(q, dtype=np.int64)
    for start in range(0, q, _BLOCK):
        sim = similarity[start : start + _BLOCK]
        pos = groups[start : start + len(sim), None] == groups[None, :m]  # [b, M]
        best = np.where(pos, sim, -np.inf).max(axis=1)  # [b]
        ranks[start : start + len(sim)] = ((sim >= best[:, None]) & ~pos).sum(axis=1)
    return ranks


def retrieval_metrics(
    texts: Sequence[str],
    *,
    image_features: np.ndarray | None = None,
    text_features: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_examples: int = 5,
) -> dict[str, Any]:
    """Recall@K in both directions with percentile bootstrap CIs over queries, plus retrieval examples.

    Give either ``similarity`` or both feature arrays.

    Args:
        texts: the ``N`` texts of the pairs (row ``i`` of images pairs with text ``i``).
        image_features: ``[N, D]`` image embeddings.
        text_features: ``[N, D]`` text embeddings.
        similarity: ``[N, N]`` image-by-text scores, used instead of the features.
        ks: the K of recall@K.
        n_resamples: bootstrap resamples (queries resampled with replacement).
        seed: seed of the resampling and of the choice of example queries.
        alpha: 1 - confidence level.
        n_examples: queries per direction whose top-K lists are returned.

    Returns:
        ``{"protocol": {...}, "image_to_text": {"recall@K": {"value", "ci_low", "ci_high"}, "median_rank",
        "mean_rank"}, "text_to_image": {...}, "examples": {"image_to_text": [{"query", "top",
        "scores", "positives", "n_positives", "rank"}], "text_to_image": [...]}}``. Ranks are 1-based.

    Raises:
        ConfigError: on a K below 1 or missing inputs.
        DataError: on shape mismatches.
    """
    # long: its docstring (the protocol); the logic is 76 lines
    if similarity is None:
        if image_features is None or text_features is None:
            raise ConfigError(
                "neither a similarity matrix nor both feature arrays given",
                key="similarity",
                expected="similarity=[N, N], or image_features and text_features",
            )
        similarity = similarity_matrix(image_features, text_features)
    sim = np.asarray(similarity, dtype=np.float64)
    n = len(texts)
    if sim.shape != (n, n):
        raise DataError(
            f"similarity shape {sim.shape} for {n} texts",
            column="similarity",
            expected=f"[{n}, {n}] (one image and one text per pair)",
        )
    if not np.isfinite(sim).all():
        raise DataError("non-finite similarity", column="similarity", expected="finite numbers")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks={ks}", key="recall_ks", expected="positive integers")
    _, groups = np.unique([normalise_text(t) for t in texts], return_inverse=True)
    groups = groups.reshape(-1)

    result: dict[str, Any] = {
        "protocol": {
            "n_queries": n,
            "n_unique_texts": int(groups.max()) + 1 if n else 0,
            "ks": ks,
            "positives": "every item whose whitespace-normalised text equals the query's",
            "ties": "counted against the query",
            "n_resamples": n_resamples,
            "seed": seed,
            "alpha": alpha,
            "ci_method": "percentile bootstrap over queries",
        },
        "examples": {},
    }
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=min(n_examples, n), replace=False)) if n else np.array([], int)
    for direction, matrix in (("image_to_text", sim), ("text_to_image", sim.T)):
        ranks = first_positive_ranks(matrix, groups)
        hits = ranks[:, None] < np.asarray(ks)[None, :]  # [Q, K]
        boot = np.concatenate([hits[idx].mean(axis=1) for idx in resample_indices(n, n_resamples, seed)])
        block: dict[str, Any] = {}
        for j, k in enumerate(ks):
            low, high, _ = percentile_ci(boot[:, j], alpha)
            block[f"recall@{k}"] = {"value": float(hits[:, j].mean()), "ci_low": low, "ci_high": high}
        block["median_rank"] = float(np.median(ranks + 1))
        block["mean_rank"] = float(np.mean(ranks + 1))
        result[direction] = block
        result["examples"][direction] = [
            _example(matrix, groups, int(q), int(ranks[q]), max(ks)) for q in chosen
        ]
    logger.info(
        "retrieval on %d pairs (%d distinct texts): i2t R@%d %.3f, t2i R@%d %.3f",
        n,
        result["protocol"]["n_unique_texts"],
        ks[0],
        result["image_to_text"][f"recall@{ks[0]}"]["value"],
        ks[0],
        result["text_to_image"][f"recall@{ks[0]}"]["value"],
    )
    return result


def retrieval_recall(
    image_features: np.ndarray,
    text_features: np.ndarray,
    texts: Sequence[str],
    *,
    ks: Sequence[int] = (1, 5, 10),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_examples: int = 5,
) -> dict[str, Any]:
    """:func:`retrieval_metrics` on paired ``[N, D]`` image and text features (cosine similarity)."""
    return retrieval_metrics(
        texts,
        image_features=image_features,
        text_features=text_features,
        ks=ks,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
        n_examples=n_examples,
    )


def _example(matrix: np.ndarray, groups: np.ndarray, q: int, rank: int, k: int) -> dict[str, Any]:
    # Stable sort: equal scores keep index order, so the listed example is reproducible.
    top = np.argsort(-matrix[q], kind="stable")[:k]
    positives = np.flatnonzero(groups == groups[q])
    return {
        "query": q,
        "top": [int(i) for i in top],
        "scores": [float(matrix[q, i]) for i in top],
        "positives": [int(i) for i in positives[:_MAX_LISTED]],
        "n_positives": len(positives),
        "rank": rank + 1,
    }
