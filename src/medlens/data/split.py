"""``split``: merge an experiment's prepared sources into ``pairs.parquet`` with a ``split`` column.

Splits are patient-level (every row of a patient lands in one split) and stratified by label.
The assignment is computed from the metadata columns and the hashes of each kept image, read once;
the images are streamed row group by row group (to hash, then to write), so memory does not grow with
the dataset.

Order of operations:
1. classes (the sorted label set of a row, as ExplainMyXray's ``stratify=df["Labels"]``) with fewer
   than ``min_samples_per_class`` rows are dropped;
2. ``max_samples`` keeps a class-proportional subsample;
3. each kept image is read and hashed once (:func:`medlens.data.leakage.read_fingerprints`); with
   ``split.leakage.images`` / ``.texts: group``, patient groups that share a duplicate image or report
   are merged (connected components, :mod:`medlens.data.groups`), so all copies land in one split;
4. with ``official: true`` rows keep their source's own split; a patient (or merged group) found in
   several official splits is moved to one of them (test before val before train) and counted;
5. the remaining groups are allocated to train/val/test by ratio within label strata;
6. the leakage audit counts images and reports found in two splits or datasets, from the same hashes,
   and, if ``split.leakage`` says ``drop``, drops the later split's copies.
Dropped rows are written to ``dropped.csv`` with their reason.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medlens.config import SplitConfig
from medlens.data.groups import group_rows
from medlens.data.leakage import audit_leakage, groups_to_keep_together, read_fingerprints
from medlens.data.schema import PAIRS_SCHEMA, PREPARED_SCHEMA, SPLITS
from medlens.errors import ConfigError, DataError
from medlens.io import atomic_path, write_json

__all__ = ["split_pairs", "assign_splits", "read_metadata", "pair_rows", "count_rows"]

logger = logging.getLogger(__name__)

_META_COLUMNS = ["id", "dataset", "patient_id", "labels", "meta"]


def read_metadata(paths: Sequence[str | os.PathLike]) -> pa.Table:
    """The small columns of several prepared parquets, concatenated (no image bytes)."""
    tables = []
    for path in paths:
        schema = pq.read_schema(path)
        missing = [c for c in PREPARED_SCHEMA.names if c not in schema.names]
        if missing:
            raise DataError(
                f"missing columns {missing}", file=str(path), expected="the prepared-parquet schema"
            )
        tables.append(pq.read_table(path, columns=_META_COLUMNS))
    return pa.concat_tables(tables)


def _class_key(labels: Sequence[str]) -> str:
    return "|".join(sorted(labels)) or "<no label>"


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of ``n`` items to ratios."""
    raw = [n * r for r in ratios]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _subsample(ids_by_class: dict[str, list[str]], max_samples: int, rng: random.Random) -> set[str]:
    """Class-proportional subsample to at most ``max_samples`` ids (every class keeps >= 1 when possible)."""
    classes = sorted(ids_by_class)
    total = sum(len(v) for v in ids_by_class.values())
    quota = _allocate(max_samples, [len(ids_by_class[c]) / total for c in classes])
    keep: set[str] = set()
    for c, q in zip(classes, quota, strict=True):
        ids = sorted(ids_by_class[c])
        rng.shuffle(ids)
        keep.update(ids[: max(q, 1) if max_samples >= len(classes) else q])
    return keep


def _ratio_split(
    groups: dict[str, list[int]], strata: dict[str, str], weights: Sequence[float], rng: random.Random
) -> dict[str, str]:
    """Assign patient groups to splits so each stratum's rows follow ``weights`` (greedy on deficit).

    Hand-written because sklearn's StratifiedGroupKFold only makes equal-sized folds, not 80/10/10 or 95/5.
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g in sorted(groups):
        by_stratum[strata[g]].append(g)
    open_splits = [s for s, w in zip(SPLITS, weights, strict=True) if w > 0]
    share = dict(zip(SPLITS, weights, strict=True))
    grand_total = sum(len(m) for m in groups.values())
    grand_filled = dict.fromkeys(SPLITS, 0)
    assignment: dict[str, str] = {}
    for stratum in sorted(by_stratum, key=lambda s: (len(by_stratum[s]), s)):  # rarest strata first
        members = by_stratum[stratum]
        rng.shuffle(members)
        members.sort(key=lambda g: -len(groups[g]))  # large patients first, so small ones even out
        total = sum(len(groups[g]) for g in members)
        filled = dict.fromkeys(SPLITS, 0)
        for g in members:
            # the split furthest below its share of this stratum takes the group; ties go to the split
            # furthest below its share overall, so small strata do not all round towards the same split
            split = max(
                open_splits,
                key=lambda s: (
                    round(share[s] * total - filled[s], 9),
                    share[s] * grand_total - grand_filled[s],
                ),
            )
            assignment[g] = split
            filled[split] += len(groups[g])
            grand_filled[split] += len(groups[g])
    return assignment


def _split_counts(rows: list[dict], split_of: dict[str, str]) -> dict[str, dict]:
    """Rows per split and label counts per split, of the rows that have a split."""
    counts = Counter(split_of.values())
    labels: dict[str, Counter] = {s: Counter() for s in SPLITS}
    for r in rows:
        if r["id"] in split_of:
            labels[split_of[r["id"]]].update(r["labels"])
    return {
        "rows_per_split": {s: counts.get(s, 0) for s in SPLITS},
        "labels_per_split": {s: dict(sorted(labels[s].items())) for s in SPLITS},
    }


def _filter_classes(
    rows: list[dict], cfg: SplitConfig, rng: random.Random
) -> tuple[list[dict], list[tuple[str, str, str]], set[str]]:
    """Steps 1-2: drop classes below ``min_samples_per_class`` and subsample to ``max_samples``.

    Returns:
        ``(rows kept, dropped rows as (id, dataset, reason), the rare classes)``.
    """
    dropped: list[tuple[str, str, str]] = []
    ids_by_class: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        ids_by_class[_class_key(r["labels"])].append(r["id"])
    rare = {c for c, ids in ids_by_class.items() if len(ids) < cfg.min_samples_per_class}
    for c in sorted(rare):
        logger.warning(
            "dropping class '%s': %d rows < min_samples_per_class %d",
            c,
            len(ids_by_class[c]),
            cfg.min_samples_per_class,
        )
    keep = {i for c, ids in ids_by_class.items() if c not in rare for i in ids}
    if cfg.max_samples is not None and len(keep) > cfg.max_samples:
        kept_classes = {c: ids for c, ids in ids_by_class.items() if c not in rare}
        keep = _subsample(kept_classes, cfg.max_samples, rng)
    for r in rows:
        if r["id"] not in keep:
            cls = _class_key(r["labels"])
            reason = (
                f"class '{cls}' has fewer than {cfg.min_samples_per_class} rows"
                if cls in rare
                else f"not in the max_samples={cfg.max_samples} subsample"
            )
            dropped.append((r["id"], r["dataset"], reason))
    return [r for r in rows if r["id"] in keep], dropped, rare


def _check_shares(cfg: SplitConfig) -> list[float]:
    weights = [cfg.train, cfg.val, cfg.test]
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ConfigError(
            f"split shares {weights} do not sum to 1",
            key="split.train/val/test",
            expected="non-negative shares summing to 1, e.g. 0.8/0.1/0.1 or 0.95/0.05/0",
        )
    return weights


def assign_splits(
    rows: list[dict], cfg: SplitConfig, rng: random.Random, together: Sequence[Sequence[str]] = ()
) -> tuple[dict[str, str], dict]:
    """Decide the split of every row the class filters kept.

    Args:
        rows: the kept ``read_metadata`` rows, as dicts.
        cfg: the experiment's split settings.
        rng: the generator that drew the class subsample (one stream per seed, so a seed's split is stable).
        together: groups of ids that must share a split (duplicates, ``groups_to_keep_together``).

    Returns:
        ``(split by id, statistics)``.
    """
    weights = _check_shares(cfg)
    groups = group_rows(rows, together, cfg.official)
    split_of = {rows[i]["id"]: split for i, split in groups.official.items()}
    label_freq = Counter(lab for r in rows for lab in (r["labels"] or ["<no label>"]))
    # stratum = the rarest label among the group's rows, so rare findings spread over all splits
    strata = {
        g: (
            min(
                (lab for i in m for lab in (rows[i]["labels"] or ["<no label>"])),
                key=lambda lab: (label_freq[lab], lab),
            )
            if cfg.stratify
            else "all"
        )
        for g, m in groups.free.items()
    }
    for g, split in _ratio_split(groups.free, strata, weights, rng).items():
        for i in groups.free[g]:
            split_of[rows[i]["id"]] = split

    stats = groups.stats
    merged = stats["duplicates_kept_together"]
    merged["by"] = [k for k in ("images", "texts") if getattr(cfg.leakage, k) == "group"]
    if stats["moved_to_keep_patients_together"]:
        logger.warning(
            "%d rows moved from their official split so that no patient spans two splits",
            stats["moved_to_keep_patients_together"],
        )
    if merged["groups"]:
        logger.info(
            "duplicates kept together: %d patients merged into %d groups of %d rows (the largest %d); "
            "%d rows moved from their patient's official split",
            merged["patients"],
            merged["groups"],
            merged["rows"],
            merged["largest"],
            stats["moved_to_keep_duplicates_together"],
        )
    smallest_share = min(w for w in weights if w > 0) * len(rows)
    if merged["largest"] > smallest_share:
        logger.warning(
            "a group of duplicates holds %d rows, more than the smallest split's share (%d rows): "
            "the split ratios cannot be met",
            merged["largest"],
            round(smallest_share),
        )
    return split_of, stats


def split_pairs(
    prepared: Sequence[str | os.PathLike],
    cfg: SplitConfig,
    out_pairs: str | os.PathLike,
    out_dropped: str | os.PathLike,
    out_stats: str | os.PathLike,
) -> dict:
    """Merge prepared datasets into ``pairs.parquet`` with patient-level stratified splits.

    Args:
        prepared: ``results/prepared/{dataset}.parquet`` of each dataset of the experiment.
        cfg: the experiment's split settings.
        out_pairs: ``results/{experiment}/data/pairs.parquet``.
        out_dropped: CSV of rows left out, with reasons.
        out_stats: JSON with counts per split and label.

    Returns:
        The statistics written to ``out_stats``.
    """
    meta = read_metadata(prepared)
    duplicates = [i for i, n in Counter(meta.column("id").to_pylist()).items() if n > 1]
    if duplicates:
        raise DataError(
            f"id '{duplicates[0]}' occurs in more than one prepared dataset",
            file=", ".join(map(str, prepared)),
            expected="unique ids across an experiment's datasets",
        )
    _check_shares(cfg)
    rng = random.Random(cfg.seed)
    rows, dropped, rare = _filter_classes(meta.to_pylist(), cfg, rng)
    # each kept image is read and hashed here, once: the grouping and the audit share the hashes
    fingerprints = (
        read_fingerprints(prepared, {r["id"] for r in rows}, cfg.leakage) if cfg.leakage.enabled else None
    )
    together = groups_to_keep_together(fingerprints, cfg.leakage) if fingerprints is not None else []
    split_of, assigned = assign_splits(rows, cfg, rng, together)
    stats = {
        "rows": len(meta),
        "kept": len(split_of),
        "dropped": len(dropped),
        "dropped_classes": sorted(rare),
        **assigned,
        **_split_counts(rows, split_of),
    }
    stats["leakage"], leaked = (
        audit_leakage(fingerprints, split_of, cfg.leakage)
        if fingerprints is not None
        else ({"enabled": False}, [])
    )
    if leaked:
        for row_id, _, _ in leaked:
            del split_of[row_id]
        dropped += leaked
        stats.update(kept=len(split_of), dropped=len(dropped), **_split_counts(rows, split_of))
    with atomic_path(out_pairs) as tmp, pq.ParquetWriter(tmp, PAIRS_SCHEMA, compression="zstd") as writer:
        for path in prepared:
            pf = pq.ParquetFile(path)
            for i in range(pf.num_row_groups):
                group = pf.read_row_group(i).select(PREPARED_SCHEMA.names).cast(PREPARED_SCHEMA)
                ids = group.column("id").to_pylist()
                mask = pa.array([i in split_of for i in ids])
                group = group.filter(mask)
                if group.num_rows:
                    splits = pa.array([split_of[i] for i in group.column("id").to_pylist()], pa.string())
                    writer.write_table(group.append_column(PAIRS_SCHEMA.field("split"), splits))
    with atomic_path(out_dropped) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "dataset", "reason"])
        w.writerows(sorted(dropped))
    write_json(stats, out_stats)
    logger.info(
        "pairs: %d rows from %d datasets -> %s; dropped %d",
        stats["kept"],
        len(prepared),
        stats["rows_per_split"],
        stats["dropped"],
    )
    return stats


def pair_rows(
    path: str | os.PathLike, columns: Sequence[str], ids: set[str] | None = None
) -> dict[str, dict]:
    """id -> ``{column: value}`` of a pairs parquet (those columns only, never the image bytes unless asked),
    for every row or only ``ids``."""
    table = pq.read_table(path, columns=list(dict.fromkeys(["id", *columns]))).to_pylist()
    return {r["id"]: r for r in table if ids is None or r["id"] in ids}


def count_rows(path: str | os.PathLike, split: str) -> int:
    """Rows of ``split`` in a pairs parquet (reads one column)."""
    return pc.sum(pc.equal(pq.read_table(path, columns=["split"]).column("split"), split)).as_py() or 0
