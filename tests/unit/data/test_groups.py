"""The split's groups: patients, joined through duplicates, and the official split a group keeps."""

from __future__ import annotations

import json

from medlens.data.groups import group_rows


def row(rid: str, patient: str | None, official: str | None = None) -> dict:
    meta = {"official_split": official} if official else {}
    return {"id": f"a/{rid}", "dataset": "a", "patient_id": patient, "meta": json.dumps(meta)}


def test_without_duplicates_the_groups_are_the_patients_under_their_own_keys():
    rows = [row("r0", "p1"), row("r1", "p1"), row("r2", "p2"), row("r3", None)]
    groups = group_rows(rows)
    assert groups.free == {"a/p1": [0, 1], "a/p2": [2], "row:a/r3": [3]}
    assert groups.official == {}
    assert groups.stats["duplicates_kept_together"] == {"groups": 0, "patients": 0, "rows": 0, "largest": 0}


def test_patients_sharing_a_duplicate_become_one_group_and_chains_join_through_patients():
    rows = [
        row("r0", "p1"),
        row("r1", "p1"),
        row("r2", "p2"),
        row("r3", "p3"),
        row("r4", "p4"),
        row("r5", None),
    ]
    # r0~r2 joins p1 and p2; r1 (p1 again) ~ r5 joins the row without a patient; p3 and p4 stay apart
    groups = group_rows(rows, together=[["a/r0", "a/r2"], ["a/r5", "a/r1"]])
    assert groups.free == {"a/p1": [0, 1, 2, 5], "a/p3": [3], "a/p4": [4]}
    assert groups.stats["duplicates_kept_together"] == {"groups": 1, "patients": 3, "rows": 4, "largest": 4}
    assert groups.stats["patients"] == 5


def test_a_merged_group_in_two_official_splits_goes_to_test_and_its_moves_are_counted():
    rows = [
        row("r0", "p1", "train"),
        row("r1", "p1", "train"),
        row("r2", "p2", "test"),
        row("r3", "p3"),  # no official split: follows its duplicate
        row("r4", "p4", "train"),
        row("r5", "p4", "val"),  # p4 alone spans two official splits: a patient move, not a duplicate one
    ]
    groups = group_rows(rows, together=[["a/r1", "a/r2", "a/r3"]], official=True)
    assert groups.official == {0: "test", 1: "test", 2: "test", 3: "test", 4: "val", 5: "val"}
    assert groups.free == {}
    assert groups.stats["moved_to_keep_duplicates_together"] == 3  # p1's two rows and p3's one
    assert groups.stats["moved_to_keep_patients_together"] == 1  # r4, from train to p4's val
