"""The split's leakage audit: the same image, or the same report, in two splits or two datasets.

Public chest datasets overlap (a study exported by two hospitals' archives, a Kaggle re-upload of a
PhysioNet set) and sources repeat images under new names; an image in train and again in test inflates
every test number. :func:`audit_leakage` finds

* exact duplicate images: the same stored image bytes (prepare writes every image in one encoding);
* near duplicates: 256-bit difference hashes (dHash: a 17x16 grey thumbnail, one bit per horizontal
  gradient) within ``near_duplicate_distance`` bits, which survive re-encoding, resizing and small
  intensity changes (exact copies are in these groups too);
* repeated reports: the same report text (case and whitespace folded), for ``text_source: report``
  rows only: texts written from labels or VQA questions repeat by design.

Rows are grouped (connected components) and each group that spans splits or datasets is counted, with
examples, in ``split.json``. With ``images: drop`` / ``texts: drop`` the copies in later splits (val,
then test) of a group that also has rows in an earlier split are dropped, written to ``dropped.csv``
with the row they duplicate. With ``images: group`` / ``texts: group`` the split puts each group in one
split before assigning (:func:`groups_to_keep_together`), so the audit then finds none across splits.

:func:`read_fingerprints` reads each kept image once, row group by row group, and keeps only its hashes:
the split's grouping and the audit after it share them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import defaultdict
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from medlens.config import LeakageConfig
from medlens.data.schema import SPLITS

__all__ = [
    "Fingerprints",
    "audit_leakage",
    "connected_components",
    "difference_hash",
    "groups_to_keep_together",
    "hamming_groups",
    "read_fingerprints",
]

logger = logging.getLogger(__name__)

N_EXAMPLES = 5
_SIDE = 16  # the hash is a 16x16 grid of gradient bits
BITS = _SIDE * _SIDE


def difference_hash(image_bytes: bytes) -> int:
    """The 256-bit difference hash (dHash) of an encoded image: a 17x16 grey thumbnail, one bit per
    horizontal gradient.

    256 bits, not the usual 64: on the 110 real radiographs of ``shared/realdata`` the 64-bit hash put two
    pairs of different patients within 3 bits while a JPEG re-encode at a third of the size moved an image
    by up to 5; at 256 bits distinct images were 35 or more apart and the same re-encode at most 18.
    Hand-written: a few lines of PIL and numpy, where ``imagehash`` would add PyWavelets to the lock.
    """
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as im:
        im.draft("L", (4 * _SIDE, 4 * _SIDE))  # JPEG: decode at reduced scale, the hash needs 17x16 pixels
        small = np.asarray(im.convert("L").resize((_SIDE + 1, _SIDE), Image.Resampling.BOX), dtype=np.int16)
    return int.from_bytes(np.packbits(small[:, 1:] > small[:, :-1]).tobytes(), "big")


def connected_components(n: int, edges: list[tuple[int, int]], min_size: int = 2) -> list[list[int]]:
    """The connected components of at least ``min_size`` of ``n`` nodes joined by ``edges`` (scipy's csgraph),
    each in node order, in the order of their first node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = components(graph, directed=False)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(component):
        groups[int(c)].append(i)
    return [m for m in groups.values() if len(m) >= min_size]


def hamming_groups(hashes: Sequence[int], max_distance: int, bits: int = BITS) -> list[list[int]]:
    """Groups of indices whose hashes chain within ``max_distance`` bits (each group has two or more).

    Identical hashes are joined first (linear). Distinct ones are compared when they share one of
    ``max_distance + 1`` disjoint bands, which two hashes within ``max_distance`` bits must (pigeonhole),
    so no pair is missed; bands narrower than 8 bits would match nearly everything, so then every pair
    is compared.
    """
    first: dict[int, int] = {}
    edges = [(i, first.setdefault(h, i)) for i, h in enumerate(hashes)]
    unique = sorted(first)
    if max_distance <= 0 or len(unique) < 2:
        return connected_components(len(hashes), edges)
    n_bands = max_distance + 1
    width = bits // n_bands
    if width >= 8:
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        mask = (1 << width) - 1
        for k, h in enumerate(unique):
            for band in range(n_bands):
                buckets[(band, (h >> (width * band)) & mask)].append(k)
        candidates = [b for b in buckets.values() if len(b) > 1]
    else:
        candidates = [list(range(len(unique)))]
    for bucket in candidates:
        for a_pos, a in enumerate(bucket):
            for b in bucket[a_pos + 1 :]:
                if (unique[a] ^ unique[b]).bit_count() <= max_distance:
                    edges.append((first[unique[a]], first[unique[b]]))
    return connected_components(len(hashes), edges)


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class Fingerprints:
    """What the grouping and the audit need of each row, one list entry per row: no image bytes."""

    id: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    exact: list[bytes] = field(default_factory=list)  # sha256 of the stored image bytes
    dhash: list[int | None] = field(default_factory=list)  # None when near duplicates are not looked for
    text: list[str | None] = field(default_factory=list)  # folded report; None unless text_source is report


def read_fingerprints(
    prepared: Sequence[str | os.PathLike], ids: Container[str], cfg: LeakageConfig
) -> Fingerprints:
    """Hash each image of ``ids`` once, streaming the prepared parquets row group by row group.

    Args:
        prepared: the experiment's prepared parquet files.
        ids: the rows to read (those the split's class filters keep).
        cfg: the experiment's ``split.leakage`` settings (``near_duplicate_distance`` -1: no decoding).

    Returns:
        The rows' fingerprints, in file order.
    """
    out = Fingerprints()
    near = cfg.near_duplicate_distance >= 0
    for path in prepared:
        pf = pq.ParquetFile(path)
        for g in range(pf.num_row_groups):
            group = pf.read_row_group(g, columns=["id", "dataset", "image", "text", "text_source"])
            for r in group.to_pylist():
                if r["id"] not in ids:
                    continue
                out.id.append(r["id"])
                out.dataset.append(r["dataset"])
                out.exact.append(hashlib.sha256(r["image"]).digest())
                out.dhash.append(difference_hash(r["image"]) if near else None)
                out.text.append(_fold(r["text"]) if r["text_source"] == "report" and r["text"] else None)
    return out


def _by_key(keys: Sequence[Any]) -> list[list[int]]:
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k is not None:
            groups[k].append(i)
    return [m for m in groups.values() if len(m) > 1]


def _summarise(
    kind: str, groups: list[list[int]], rows: dict[str, list], action: str, hashes: list | None = None
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Counts and examples of one kind of duplicate, and the rows ``action`` drops."""
    order = {s: i for i, s in enumerate(SPLITS)}
    summary: dict[str, Any] = {
        "groups": len(groups),
        "rows": sum(map(len, groups)),
        "cross_split_groups": 0,
        "cross_dataset_groups": 0,
        "action": action,
        "dropped": 0,
        "examples": [],
    }
    dropped = []
    for members in sorted(groups, key=lambda m: sorted(rows["id"][i] for i in m)):
        splits = {rows["split"][i] for i in members}
        datasets = {rows["dataset"][i] for i in members}
        summary["cross_split_groups"] += len(splits) > 1
        summary["cross_dataset_groups"] += len(datasets) > 1
        if (len(splits) > 1 or len(datasets) > 1) and len(summary["examples"]) < N_EXAMPLES:
            example = {
                "ids": sorted(rows["id"][i] for i in members)[:6],
                "splits": sorted(splits, key=order.__getitem__),
                "datasets": sorted(datasets),
                "size": len(members),
            }
            if hashes is not None:
                example["max_distance"] = max((hashes[i] ^ hashes[members[0]]).bit_count() for i in members)
            summary["examples"].append(example)
        if action == "drop" and len(splits) > 1:
            earliest = min(splits, key=order.__getitem__)
            kept = min(rows["id"][i] for i in members if rows["split"][i] == earliest)
            for i in members:
                if rows["split"][i] != earliest:
                    reason = f"{kind} of {kept} ({earliest}); split.leakage drops later-split copies"
                    dropped.append((rows["id"][i], rows["dataset"][i], reason))
    summary["dropped"] = len(dropped)
    return summary, dropped


def _image_groups(fp: Fingerprints, cfg: LeakageConfig) -> tuple[list[list[int]], list[list[int]] | None]:
    """Exact-copy groups, and near-duplicate groups (None when ``near_duplicate_distance`` is -1)."""
    exact = _by_key(fp.exact)
    if cfg.near_duplicate_distance < 0:
        return exact, None
    return exact, hamming_groups(fp.dhash, cfg.near_duplicate_distance)


def groups_to_keep_together(fp: Fingerprints, cfg: LeakageConfig) -> list[list[str]]:
    """The ids that must share one split: duplicate groups of each kind set to ``group``.

    Groups of different kinds may overlap; the split joins them (connected components).

    Args:
        fp: the fingerprints of the rows to split (``read_fingerprints``).
        cfg: the experiment's ``split.leakage`` settings.

    Returns:
        Lists of two or more ids.
    """
    groups: list[list[int]] = []
    if cfg.images == "group":
        exact, near = _image_groups(fp, cfg)
        groups += exact if near is None else near  # a near group holds every exact copy (same hash)
    if cfg.texts == "group":
        groups += _by_key(fp.text)
    return [[fp.id[i] for i in members] for members in groups]


def audit_leakage(
    fp: Fingerprints, split_of: dict[str, str], cfg: LeakageConfig
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Duplicate images and reports across the splits and datasets of an experiment.

    Args:
        fp: the fingerprints of every kept row (``read_fingerprints``), read before the split was assigned.
        split_of: the split of every kept row (``assign_splits``).
        cfg: the experiment's ``split.leakage`` settings.

    Returns:
        ``(summary for split.json, rows to drop as (id, dataset, reason))``.
    """
    if not cfg.enabled:
        return {"enabled": False}, []
    rows = {"id": fp.id, "dataset": fp.dataset, "split": [split_of[i] for i in fp.id]}
    summary: dict[str, Any] = {"enabled": True, "rows_audited": len(fp.id)}
    drops: list[tuple[str, str, str]] = []
    exact_groups, near_groups = _image_groups(fp, cfg)
    exact, dropped = _summarise("exact duplicate image", exact_groups, rows, cfg.images)
    summary["images_exact"] = exact
    drops += dropped
    if near_groups is not None:
        near, dropped = _summarise("near-duplicate image", near_groups, rows, cfg.images, fp.dhash)
        near["max_distance"] = cfg.near_duplicate_distance
        summary["images_near"] = near
        drops += dropped
    texts, dropped = _summarise("repeated report", _by_key(fp.text), rows, cfg.texts)
    summary["texts"] = texts
    drops += dropped
    unique: dict[str, tuple[str, str, str]] = {}
    for d in drops:  # a row both an exact and a near duplicate is dropped once, for the first reason
        unique.setdefault(d[0], d)
    for kind in ("images_exact", "images_near", "texts"):
        if summary.get(kind, {}).get("cross_split_groups"):
            logger.warning(
                "leakage: %d groups of %s span splits (%s)",
                summary[kind]["cross_split_groups"],
                kind.replace("_", " "),
                "dropped"
                if summary[kind]["action"] == "drop"
                else "kept: set split.leakage to group or drop them",
            )
    return summary, sorted(unique.values())
