"""Percentile bootstrap confidence intervals over rows (the 95 % CIs in every evaluation JSON).

Rows (images, queries, studies) are resampled with replacement; a metric is computed on each resample
and the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of those values (Efron's percentile
method). A resample on which the metric is undefined (an AUC on a resample holding a single class)
makes the metric return NaN: it is skipped and counted, never scored as 0.

The resample indices are drawn exactly as ``scipy.stats.bootstrap`` draws them
(``Generator.integers(0, n, (batch, n))``), and with no skipped resamples the interval equals its
``method="percentile"`` result (tested). scipy's function itself is not used because a single NaN
statistic turns its whole interval into NaN, and because per-label and mean AUCs must share one set
of resamples so that their intervals describe the same draws.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from medlens.errors import ConfigError, DataError

__all__ = [
    "bootstrap_ci",
    "bootstrap",
    "bootstrap_distribution",
    "resample_indices",
    "percentile_ci",
    "batch_size_for",
]

logger = logging.getLogger(__name__)

# Resample indices are drawn in batches of about this many elements, to bound memory on large sets.
_BATCH_ELEMENTS = 1 << 21


def batch_size_for(n: int, n_resamples: int) -> int:
    """Resamples drawn per batch for ``n`` rows (depends only on ``n``, so results depend only on the seed)."""
    return max(1, min(n_resamples, _BATCH_ELEMENTS // max(n, 1)))


def resample_indices(
    n: int, n_resamples: int = 1000, seed: int = 0, batch: int | None = None
) -> Iterator[np.ndarray]:
    """Yield row indices of bootstrap resamples, in batches.

    Args:
        n: number of rows.
        n_resamples: total number of resamples.
        seed: seed of ``numpy.random.default_rng``.
        batch: resamples per batch; default from :func:`batch_size_for`.

    Yields:
        Integer arrays of shape ``[b, n]``; the batches add up to ``n_resamples`` rows.

    Raises:
        ConfigError: when ``n_resamples`` is below 1.
        DataError: when there are no rows.
    """
    if n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples}", key="bootstrap_samples", expected="an integer >= 1")
    if n < 1:
        raise DataError("nothing to resample: 0 rows", expected="at least one row")
    rng = np.random.default_rng(seed)
    step = batch or batch_size_for(n, n_resamples)
    for start in range(0, n_resamples, step):
        yield rng.integers(0, n, (min(step, n_resamples - start), n))


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float | None, float | None, int]:
    """Percentile interval of a bootstrap distribution, skipping NaN (undefined) resamples.

    Args:
        values: the metric on each resample, shape ``[B]``; NaN marks an undefined resample.
        alpha: 1 - confidence level.

    Returns:
        ``(low, high, n_skipped)``; ``low`` and ``high`` are None when every resample was undefined.

    Raises:
        ConfigError: when ``alpha`` is not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha}", key="alpha", expected="a number in (0, 1), e.g. 0.05")
    values = np.asarray(values, dtype=float)
    finite = values[~np.isnan(values)]
    n_skipped = int(values.size - finite.size)
    if finite.size == 0:
        return None, None, n_skipped
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), n_skipped


def bootstrap_distribution(
    metric: Callable[..., Any], *arrays: Any, n_resamples: int = 1000, seed: int = 0, vectorized: bool = False
) -> np.ndarray:
    """The metric on each bootstrap resample of the rows of ``arrays`` (resampled together, paired).

    Args:
        metric: ``metric(*arrays) -> float``; with ``vectorized=True`` it receives arrays with a
            leading resample axis (``[b, n, ...]``) and returns ``[b]``. NaN marks an undefined value.
        *arrays: equal-length arrays whose rows are resampled together.
        n_resamples: number of resamples.
        seed: seed of the resampling.
        vectorized: whether ``metric`` handles a batch of resamples at once.

    Returns:
        Float array ``[n_resamples]``.

    Raises:
        DataError: when the arrays are missing or differ in length.
    """
    data = [np.asarray(a) for a in arrays]
    n = _common_length(data)
    out = []
    for idx in resample_indices(n, n_resamples, seed):
        if vectorized:
            out.append(np.asarray(metric(*(a[idx] for a in data)), dtype=float).reshape(len(idx)))
        else:
            out.append(np.array([metric(*(a[row] for a in data)) for row in idx], dtype=float))
    return np.concatenate(out)


def bootstrap(
    metric: Callable[..., Any],
    *arrays: Any,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    vectorized: bool = False,
) -> dict[str, Any]:
    """Point estimate and percentile bootstrap CI of ``metric``, with the protocol that produced them.

    Args:
        metric: see :func:`bootstrap_distribution`. The point estimate is ``metric`` on the full data
            (called with a leading axis of size 1 when ``vectorized``).
        *arrays: equal-length arrays whose rows are resampled together.
        n_resamples: number of resamples.
        seed: seed of the resampling.
        alpha: 1 - confidence level.
        vectorized: whether ``metric`` handles a batch of resamples at once.

    Returns:
        ``{"value", "ci_low", "ci_high", "n", "n_resamples", "n_skipped_resamples", "seed", "alpha",
        "method"}``; ``value`` (and the bounds) are None when the metric is undefined on the full data
        (on every resample).
    """
    data = [np.asarray(a) for a in arrays]
    n = _common_length(data)
    if vectorized:
        value = float(np.asarray(metric(*(a[None] for a in data)), dtype=float).reshape(1)[0])
    else:
        value = float(metric(*data))
    dist = bootstrap_distribution(metric, *data, n_resamples=n_resamples, seed=seed, vectorized=vectorized)
    low, high, skipped = percentile_ci(dist, alpha)
    return {
        "value": None if np.isnan(value) else value,
        "ci_low": low,
        "ci_high": high,
        "n": n,
        "n_resamples": n_resamples,
        "n_skipped_resamples": skipped,
        "seed": seed,
        "alpha": alpha,
        "method": "percentile bootstrap over rows",
    }


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap ``1 - alpha`` confidence interval of ``metric`` over the rows of ``arrays``.

    Resamples on which the metric is NaN (e.g. ``roc_auc_score`` on a single class) are skipped; use
    :func:`bootstrap` to get how many.

    Args:
        metric: ``metric(*arrays) -> float`` (or batched, see ``vectorized``).
        *arrays: equal-length arrays whose rows are resampled together (paired).
        n_resamples: number of resamples.
        seed: seed of the resampling.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        vectorized: whether ``metric`` takes a leading resample axis and returns one value per resample.

    Returns:
        ``(low, high)``; both NaN when the metric was undefined on every resample.
    """
    dist = bootstrap_distribution(metric, *arrays, n_resamples=n_resamples, seed=seed, vectorized=vectorized)
    low, high, skipped = percentile_ci(dist, alpha)
    if skipped:
        logger.info("bootstrap: %d of %d resamples undefined, skipped", skipped, n_resamples)
    return (float("nan"), float("nan")) if low is None else (low, high)


def _common_length(data: list[np.ndarray]) -> int:
    if not data:
        raise DataError("no arrays to resample", expected="at least one array")
    lengths = {len(a) for a in data}
    if len(lengths) != 1:
        raise DataError(
            f"arrays differ in length: {[len(a) for a in data]}", expected="one row per sample in every array"
        )
    return lengths.pop()
