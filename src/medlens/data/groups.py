"""The groups of rows the split assigns whole, and the official split a group keeps.

A patient's rows form one group; a row without a patient id is its own. Duplicates (the ``together``
groups of :func:`medlens.data.leakage.groups_to_keep_together`, with ``split.leakage.images`` or
``.texts: group``) join the patient groups they touch (connected components), so every copy of an image or
report lands in one split, next to all rows of each patient that holds one. With ``official: true`` a group
keeps its rows' official split; one whose rows name several goes to the first of test, val, train, and the
rows it moves are counted: away from their own official split to their patient's, or away from their
patient's to their duplicates'.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from medlens.data.leakage import connected_components

__all__ = ["Groups", "group_rows"]

_PRIORITY = {"test": 0, "val": 1, "train": 2}  # a group in several official splits goes to the first


@dataclass(frozen=True)
class Groups:
    """What :func:`group_rows` decided, by row index into its ``rows``."""

    free: dict[str, list[int]]  # group key -> rows, for the groups the ratio split allocates
    official: dict[int, str]  # row -> the official split its group keeps
    stats: dict  # counts for split.json


def _merge(
    groups: dict[str, list[int]], ids: list[str], together: Sequence[Sequence[str]]
) -> list[list[str]]:
    """Patient-group keys joined through duplicate groups (connected components, singletons included),
    each list sorted, so a group that merges nothing keeps its key and the ratio split draws as before."""
    keys = sorted(groups)
    node = {ids[i]: n for n, k in enumerate(keys) for i in groups[k]}
    edges = [(node[a], node[b]) for dup in together for a, b in itertools.pairwise(dup)]
    return [[keys[n] for n in c] for c in connected_components(len(keys), edges, min_size=1)]


def group_rows(
    rows: Sequence[dict], together: Sequence[Sequence[str]] = (), official: bool = False
) -> Groups:
    """Group the rows to split: patients, joined through duplicates, with their official split.

    Args:
        rows: the rows to split (``id``, ``dataset``, ``patient_id`` and ``meta`` of ``read_metadata``).
        together: groups of ids that must share a split (duplicates).
        official: keep each group's official split (``meta["official_split"]``), as ``split.official``.

    Returns:
        The groups left to the ratio split, the rows whose official split is kept, and the counts:
        ``patients``, ``moved_to_keep_patients_together``, ``moved_to_keep_duplicates_together`` and
        ``duplicates_kept_together`` (merged ``groups``, the ``patients`` and ``rows`` in them, the ``largest``).
    """
    patients: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        pid = r["patient_id"]
        patients[f"{r['dataset']}/{pid}" if pid else f"row:{r['id']}"].append(i)
    official_of = [json.loads(r["meta"]).get("official_split") if official else None for r in rows]

    def first_official(members: Sequence[int]) -> str | None:
        found = {official_of[i] for i in members} - {None}
        return min(found, key=_PRIORITY.__getitem__) if found else None

    patient_split = {p: first_official(m) for p, m in patients.items()}
    moved = sum(official_of[i] != s for p, s in patient_split.items() if s for i in patients[p])
    moved_duplicates = 0
    free: dict[str, list[int]] = {}
    kept: dict[int, str] = {}
    joined: list[tuple[int, int]] = []  # (patients, rows) of each group that merged several patients
    for keys in _merge(patients, [r["id"] for r in rows], together):
        members = [i for p in keys for i in patients[p]]
        if len(keys) > 1:
            joined.append((len(keys), len(members)))
        chosen = first_official(members)
        if chosen:
            # rows of a patient that would have kept another split (or had none) without its duplicates
            moved_duplicates += sum(len(patients[p]) for p in keys if patient_split[p] != chosen)
            kept.update(dict.fromkeys(members, chosen))
        else:
            free[keys[0]] = members
    stats = {
        "patients": len(patients),
        "moved_to_keep_patients_together": moved,
        "moved_to_keep_duplicates_together": moved_duplicates,
        "duplicates_kept_together": {
            "groups": len(joined),
            "patients": sum(n for n, _ in joined),
            "rows": sum(n for _, n in joined),
            "largest": max((n for _, n in joined), default=0),
        },
    }
    return Groups(free, kept, stats)
