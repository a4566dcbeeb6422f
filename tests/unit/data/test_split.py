"""split: patient-level, stratified, ratios honoured, official splits kept, nothing dropped silently."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from helpers.prepared import population, textured_png
from medlens.config import LeakageConfig, SplitConfig
from medlens.data.split import split_pairs
from medlens.errors import ConfigError, DataError


def run(make_prepared, tmp_path, rows_by_dataset, cfg):
    paths = [make_prepared(name, rows) for name, rows in rows_by_dataset.items()]
    out = tmp_path / "pairs.parquet"
    stats = split_pairs(paths, cfg, out, tmp_path / "dropped.csv", tmp_path / "split.json")
    table = pq.read_table(out, columns=["id", "patient_id", "dataset", "labels", "split"]).to_pylist()
    with open(tmp_path / "dropped.csv") as f:
        dropped = list(csv.DictReader(f))
    return table, dropped, stats


def test_no_patient_crosses_splits_and_ratios_are_close(make_prepared, tmp_path):
    rows, _, stats = run(make_prepared, tmp_path, {"a": population(300)}, SplitConfig())
    splits_of_patient = defaultdict(set)
    for r in rows:
        splits_of_patient[r["patient_id"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of_patient.values())
    n = len(rows)
    counts = Counter(r["split"] for r in rows)
    assert abs(counts["train"] / n - 0.8) < 0.03 and abs(counts["val"] / n - 0.1) < 0.03
    assert stats["rows_per_split"] == {s: counts[s] for s in ("train", "val", "test")}


def test_stratification_spreads_each_label_over_the_splits(make_prepared, tmp_path):
    rows, _, _ = run(make_prepared, tmp_path, {"a": population(600, seed=3)}, SplitConfig())
    for label in ("Cardiomegaly", "Pleural Effusion", "No Finding"):
        with_label = [r for r in rows if label in r["labels"]]
        share = Counter(r["split"] for r in with_label)
        assert abs(share["train"] / len(with_label) - 0.8) < 0.06, (label, share)
        assert share["val"] > 0 and share["test"] > 0


def test_same_seed_same_split_other_seed_other_split(make_prepared, tmp_path):
    rows = population(200)
    a, _, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(seed=1))
    b, _, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(seed=1))
    c, _, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(seed=2))
    assert a == b and a != c


def test_ratio_95_5_leaves_test_empty(make_prepared, tmp_path):
    rows, _, stats = run(
        make_prepared, tmp_path, {"a": population(200)}, SplitConfig(train=0.95, val=0.05, test=0.0)
    )
    assert stats["rows_per_split"]["test"] == 0
    assert 0.02 < stats["rows_per_split"]["val"] / len(rows) < 0.08


def test_rare_classes_are_dropped_and_written_out(make_prepared, tmp_path):
    rows = population(400)
    n_rare = sum(1 for r in rows if r["labels"] == ["Pneumothorax"])
    table, dropped, stats = run(
        make_prepared, tmp_path, {"a": rows}, SplitConfig(min_samples_per_class=n_rare + 1)
    )
    assert "Pneumothorax" in stats["dropped_classes"]
    assert len(dropped) == n_rare and all("Pneumothorax" in d["reason"] for d in dropped)
    assert len(table) + len(dropped) == len(rows)


def test_max_samples_keeps_class_proportions(make_prepared, tmp_path):
    rows = population(500)
    table, dropped, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(max_samples=300))
    assert len(table) == 300 and len(table) + len(dropped) == len(rows)
    full = Counter("|".join(r["labels"]) for r in rows)
    kept = Counter("|".join(r["labels"]) for r in table)
    for cls, n in full.items():
        assert abs(kept[cls] / 300 - n / len(rows)) < 0.02
    assert all(d["reason"].startswith("not in the max_samples") for d in dropped)


def test_official_split_is_kept_and_a_patient_in_two_official_splits_is_moved(make_prepared, tmp_path):
    rows = [
        {
            "id": f"r{i}",
            "patient": f"p{i // 2}",
            "labels": ["No Finding"],
            "meta": {"official_split": "train" if i < 10 else "test"},
        }
        for i in range(20)
    ]
    rows.append({"id": "late", "patient": "p0", "labels": ["No Finding"], "meta": {"official_split": "test"}})
    rows.append(
        {"id": "free", "patient": "q", "labels": ["No Finding"]}
    )  # no official split: allocated by ratio
    table, _, stats = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(official=True))
    split = {r["id"]: r["split"] for r in table}
    assert split["a/r5"] == "train" and split["a/r15"] == "test"
    assert split["a/r0"] == split["a/r1"] == split["a/late"] == "test"  # p0 moved whole to its test study
    assert stats["moved_to_keep_patients_together"] == 2
    assert "a/free" in split


def test_rows_without_patient_are_their_own_group(make_prepared, tmp_path):
    rows = [{"id": f"r{i}", "labels": ["No Finding"]} for i in range(50)]
    table, _, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig())
    assert Counter(r["split"] for r in table)["train"] == 40


def test_several_datasets_are_merged(make_prepared, tmp_path):
    table, _, _ = run(
        make_prepared, tmp_path, {"a": population(30), "b": population(30, seed=1)}, SplitConfig()
    )
    assert {r["dataset"] for r in table} == {"a", "b"}


def test_duplicate_ids_across_datasets_are_an_error(make_prepared, tmp_path):
    a = make_prepared("a", [{"id": "x"}])
    with pytest.raises(DataError, match="id 'a/x' occurs in more than one prepared dataset"):
        split_pairs([a, a], SplitConfig(), tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")


def test_shares_must_sum_to_one(make_prepared, tmp_path):
    a = make_prepared("a", population(5))
    with pytest.raises(ConfigError, match="do not sum to 1"):
        split_pairs(
            [a],
            SplitConfig(train=0.8, val=0.1, test=0.2),
            tmp_path / "p.parquet",
            tmp_path / "d.csv",
            tmp_path / "s.json",
        )
    assert not (tmp_path / "p.parquet").exists()


def test_stats_file_records_labels_per_split(make_prepared, tmp_path):
    run(make_prepared, tmp_path, {"a": population(100)}, SplitConfig())
    stats = json.loads((tmp_path / "split.json").read_text())
    assert set(stats["labels_per_split"]) == {"train", "val", "test"}


def copied_across_patients(n_patients: int = 120) -> list[dict]:
    """Patients with their own images, and every fourth image filed again under a new patient (as the Kaggle
    pneumonia folder copies): a second row, another patient id, the same bytes."""
    rows = [
        {"id": f"p{p}", "patient": f"p{p}", "labels": ["No Finding"], "image": textured_png(p)}
        for p in range(n_patients)
    ]
    rows += [
        {"id": f"copy{p}", "patient": f"q{p}", "labels": ["No Finding"], "image": textured_png(p)}
        for p in range(0, n_patients, 4)
    ]
    return rows


def test_group_puts_the_same_image_under_two_patients_in_one_split_and_drops_nothing(make_prepared, tmp_path):
    rows = copied_across_patients()
    keep, _, _ = run(make_prepared, tmp_path, {"a": rows}, SplitConfig(seed=1))
    split = {r["id"]: r["split"] for r in keep}
    assert any(split[f"a/p{p}"] != split[f"a/copy{p}"] for p in range(0, 120, 4))  # else nothing to test
    cfg = SplitConfig(seed=1, leakage=LeakageConfig(images="group"))
    table, dropped, stats = run(make_prepared, tmp_path, {"a": rows}, cfg)
    split = {r["id"]: r["split"] for r in table}
    assert all(split[f"a/p{p}"] == split[f"a/copy{p}"] for p in range(0, 120, 4))
    assert dropped == [] and len(table) == stats["kept"] == 150
    assert stats["duplicates_kept_together"] == {
        "by": ["images"],
        "groups": 30,
        "patients": 60,
        "rows": 60,
        "largest": 2,
    }
    assert stats["leakage"]["images_exact"]["cross_split_groups"] == 0
    assert stats["leakage"]["images_near"]["cross_split_groups"] == 0
    assert json.loads((tmp_path / "split.json").read_text())["duplicates_kept_together"]["rows"] == 60
    assert Counter(split.values()) == {"train": 120, "val": 15, "test": 15}


def test_group_resolves_copies_in_two_official_splits_by_the_patients_rule_and_counts_them(
    make_prepared, tmp_path
):
    rows = [
        {
            "id": f"r{i}",
            "patient": f"p{i // 2}",
            "labels": ["No Finding"],
            "image": textured_png(i),
            "meta": {"official_split": "train" if i < 10 else "test"},
        }
        for i in range(20)
    ]
    rows.append({"id": "copy", "patient": "q", "labels": ["No Finding"], "image": textured_png(1)})  # of r1
    rows.append(  # r3's image filed again in test under another patient
        {"id": "test-copy", "patient": "t", "image": textured_png(3), "meta": {"official_split": "test"}}
    )
    cfg = SplitConfig(official=True, leakage=LeakageConfig(images="group"))
    table, dropped, stats = run(make_prepared, tmp_path, {"a": rows}, cfg)
    split = {r["id"]: r["split"] for r in table}
    assert split["a/r0"] == split["a/r1"] == split["a/copy"] == "train"  # an unofficial copy follows
    assert split["a/r2"] == split["a/r3"] == split["a/test-copy"] == "test"  # p1 moved whole to test
    assert split["a/r5"] == "train" and split["a/r15"] == "test"
    assert stats["moved_to_keep_duplicates_together"] == 3  # r2, r3 (p1) and copy (q, no official split)
    assert stats["moved_to_keep_patients_together"] == 0 and dropped == []
    assert stats["leakage"]["images_exact"]["cross_split_groups"] == 0


def test_a_duplicate_group_larger_than_a_split_is_kept_whole_and_warned_about(
    make_prepared, tmp_path, caplog
):
    # png()'s flat squares all have the same difference hash: under group, every row is one group
    rows = [{"id": f"r{i}", "patient": f"p{i}", "labels": ["No Finding"]} for i in range(30)]
    cfg = SplitConfig(leakage=LeakageConfig(images="group"))
    table, dropped, stats = run(make_prepared, tmp_path, {"a": rows}, cfg)
    assert len({r["split"] for r in table}) == 1 and len(table) == 30 and dropped == []
    assert stats["duplicates_kept_together"]["largest"] == 30
    assert "a group of duplicates holds 30 rows, more than the smallest split's share (3 rows)" in caplog.text
