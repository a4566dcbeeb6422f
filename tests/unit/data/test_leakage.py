"""The split's leakage audit: duplicate images (exact and near) and repeated reports across splits and datasets."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers.prepared import make_prepared  # noqa: F401  (fixture)
from medlens.config import LeakageConfig, SplitConfig
from medlens.data.leakage import difference_hash, hamming_groups
from medlens.data.split import split_pairs


def pixels(seed: int, size: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A grey image with structure at every scale (random 8x8 blocks, smoothly upscaled, plus noise)."""
    rng = np.random.default_rng(seed)
    blocks = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )
    return np.clip(np.asarray(blocks, float) + rng.normal(0, 6, blocks.size[::-1]), 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str = "PNG", size: int | None = None) -> bytes:
    img = Image.fromarray(arr)
    if size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_a_reencoded_resized_or_brightened_image_keeps_its_hash_and_another_image_does_not():
    image = pixels(1, (96, 96))
    h = difference_hash(_encode(image))
    assert _distance(h, difference_hash(_encode(image, "JPEG"))) <= 16
    assert _distance(h, difference_hash(_encode(image, size=64))) <= 16
    assert (
        _distance(h, difference_hash(_encode(np.clip(image.astype(int) + 12, 0, 255).astype(np.uint8)))) <= 16
    )
    others = [difference_hash(_encode(pixels(seed, (96, 96)))) for seed in range(2, 12)]
    assert min(_distance(h, o) for o in others) > 40


@pytest.mark.parametrize("max_distance", [0, 1, 2, 3, 5])
def test_hamming_groups_are_the_connected_components_of_close_pairs(max_distance):
    rng = random.Random(max_distance)
    base = [rng.getrandbits(64) for _ in range(12)]
    hashes = [b ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for b in base for _ in range(3)] + base[
        :4
    ]
    parent = list(range(len(hashes)))  # brute force: every pair

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in itertools.combinations(range(len(hashes)), 2):
        if _distance(hashes[a], hashes[b]) <= max_distance:
            parent[find(a)] = find(b)
    expected = {}
    for i in range(len(hashes)):
        expected.setdefault(find(i), set()).add(i)
    expected = sorted(sorted(g) for g in expected.values() if len(g) > 1)
    assert sorted(sorted(g) for g in hamming_groups(hashes, max_distance)) == expected
    assert hamming_groups([0b0, 0b1, 0b11, 0b111000], 1, bits=8) == [[0, 1, 2]]


def _rows(n: int, *, prefix: str, seed: int) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "patient": f"{prefix}{i}",
            "image": _encode(pixels(seed + i, (32, 32))),
            "text": f"{prefix} {i}",
        }
        for i in range(n)
    ]


@pytest.fixture
def leaky(make_prepared):  # noqa: F811
    """Two sources: b re-uses five of a's images (one re-encoded as JPEG) and repeats two of a's reports."""
    a = _rows(40, prefix="a", seed=100)
    b = _rows(40, prefix="b", seed=500)
    for k in range(5):
        b[k]["image"] = a[k]["image"] if k else _encode(pixels(100, (32, 32)), "JPEG")
    b[10]["text"], b[11]["text"] = a[20]["text"].upper(), "  " + a[21]["text"]
    return [make_prepared("a", a), make_prepared("b", b)]


def test_duplicates_across_datasets_are_counted_with_examples_and_kept_by_default(leaky, tmp_path):
    stats = split_pairs(
        leaky, SplitConfig(seed=3), tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json"
    )
    leak = json.loads((tmp_path / "s.json").read_text())["leakage"]
    assert leak == stats["leakage"] and leak["rows_audited"] == 80
    assert (leak["images_exact"]["groups"], leak["images_exact"]["cross_dataset_groups"]) == (4, 4)
    assert leak["images_near"]["groups"] == 5  # the JPEG copy too
    assert leak["texts"]["groups"] == 2
    example = leak["images_exact"]["examples"][0]
    assert example["ids"] == ["a/a1", "b/b1"] and example["datasets"] == ["a", "b"]
    assert stats["dropped"] == 0 and pq.read_metadata(tmp_path / "p.parquet").num_rows == 80


def test_drop_removes_the_later_split_copy_and_says_which_row_it_repeats(leaky, tmp_path):
    cfg = SplitConfig(seed=3, leakage=LeakageConfig(images="drop", texts="drop"))
    stats = split_pairs(leaky, cfg, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")
    leak = stats["leakage"]
    crossing = sum(leak[k]["cross_split_groups"] for k in ("images_near", "texts"))
    assert crossing > 0  # with 80 random patients some copies fall in different splits
    with open(tmp_path / "d.csv") as f:
        dropped = list(csv.DictReader(f))
    assert len(dropped) == stats["dropped"] > 0
    assert all(" of a/" in d["reason"] or " of b/" in d["reason"] for d in dropped)
    pairs = pq.read_table(tmp_path / "p.parquet", columns=["id", "image", "split"]).to_pylist()
    assert len(pairs) == 80 - len(dropped) == stats["kept"] == sum(stats["rows_per_split"].values())
    # no image is left in two splits
    splits_of = {}
    for r in pairs:
        splits_of.setdefault(difference_hash(r["image"]), set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())


def test_exact_only_audit_decodes_nothing_and_the_audit_can_be_switched_off(leaky, tmp_path, monkeypatch):
    import medlens.data.leakage as leakage

    monkeypatch.setattr(leakage, "difference_hash", lambda b: pytest.fail("decoded an image"))
    cfg = SplitConfig(leakage=LeakageConfig(near_duplicate_distance=-1))
    stats = split_pairs(leaky, cfg, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")
    assert stats["leakage"]["images_exact"]["groups"] == 4 and "images_near" not in stats["leakage"]
    off = SplitConfig(leakage=LeakageConfig(enabled=False))
    assert split_pairs(leaky, off, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")[
        "leakage"
    ] == {"enabled": False}


def test_group_leaves_no_copy_across_splits_drops_nothing_and_hashes_each_image_once(
    leaky, tmp_path, monkeypatch
):
    import medlens.data.leakage as leakage

    keep = split_pairs(
        leaky, SplitConfig(seed=12), tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json"
    )["leakage"]
    assert keep["images_near"]["cross_split_groups"] and keep["texts"]["cross_split_groups"]  # to be grouped
    hashed = []
    monkeypatch.setattr(leakage, "difference_hash", lambda b: hashed.append(b) or difference_hash(b))
    cfg = SplitConfig(seed=12, leakage=LeakageConfig(images="group", texts="group"))
    stats = split_pairs(leaky, cfg, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")
    assert len(hashed) == 80  # the grouping and the audit share one hash of each image
    leak = stats["leakage"]
    assert [leak[k]["cross_split_groups"] for k in ("images_exact", "images_near", "texts")] == [0, 0, 0]
    assert leak["images_near"]["groups"] == 5 and leak["texts"]["groups"] == 2  # found, and kept together
    assert leak["images_near"]["action"] == "group" and leak["images_near"]["dropped"] == 0
    assert stats["dropped"] == 0 and pq.read_metadata(tmp_path / "p.parquet").num_rows == 80
    assert stats["duplicates_kept_together"] == {
        "by": ["images", "texts"],
        "groups": 7,
        "patients": 14,
        "rows": 14,
        "largest": 2,
    }
    pairs = pq.read_table(tmp_path / "p.parquet", columns=["id", "split"]).to_pylist()
    split = {r["id"]: r["split"] for r in pairs}
    assert all(split[f"a/a{k}"] == split[f"b/b{k}"] for k in range(5))
    assert split["a/a20"] == split["b/b10"] and split["a/a21"] == split["b/b11"]


def test_near_duplicates_chain_into_one_split_with_their_patients(make_prepared, tmp_path, monkeypatch):  # noqa: F811
    import medlens.data.leakage as leakage

    rows = _rows(60, prefix="a", seed=700)
    # a0 ~ a1 ~ a2 within 10 bits each, a0 and a2 16 bits apart: one group only through a1
    base = 0xF0F0_1234_5678_9ABC_DEF0_1357_9BDF_2468_ACE0_FFFF_0000_AAAA_5555_CCCC_3333
    chain = {rows[0]["image"]: base, rows[1]["image"]: base ^ 0xFF, rows[2]["image"]: base ^ 0xFFFF}
    rows[30]["patient"] = rows[0]["patient"]  # a0's patient has another image, a2's too
    rows[31]["patient"] = rows[2]["patient"]
    real = leakage.difference_hash
    monkeypatch.setattr(leakage, "difference_hash", lambda b: chain.get(b) or real(b))
    path = make_prepared("a", rows)
    for seed in range(20):  # some seed splits the chain when not grouped
        keep = split_pairs(
            [path],
            SplitConfig(seed=seed, leakage=LeakageConfig(near_duplicate_distance=10)),
            tmp_path / "p.parquet",
            tmp_path / "d.csv",
            tmp_path / "s.json",
        )
        if keep["leakage"]["images_near"]["cross_split_groups"]:
            break
    else:
        pytest.fail("no seed split the chain")
    cfg = SplitConfig(seed=seed, leakage=LeakageConfig(near_duplicate_distance=10, images="group"))
    stats = split_pairs([path], cfg, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")
    split = {
        r["id"]: r["split"]
        for r in pq.read_table(tmp_path / "p.parquet", columns=["id", "split"]).to_pylist()
    }
    assert len({split[f"a/a{i}"] for i in (0, 1, 2, 30, 31)}) == 1
    assert (
        stats["duplicates_kept_together"]["rows"] == 5
        and stats["leakage"]["images_near"]["max_distance"] == 10
    )


def test_exact_only_grouping_decodes_nothing(leaky, tmp_path, monkeypatch):
    import medlens.data.leakage as leakage

    monkeypatch.setattr(leakage, "difference_hash", lambda b: pytest.fail("decoded an image"))
    cfg = SplitConfig(seed=3, leakage=LeakageConfig(near_duplicate_distance=-1, images="group"))
    stats = split_pairs(leaky, cfg, tmp_path / "p.parquet", tmp_path / "d.csv", tmp_path / "s.json")
    assert stats["duplicates_kept_together"]["groups"] == 4  # the JPEG copy is not exact: not grouped
    assert stats["leakage"]["images_exact"]["cross_split_groups"] == 0 and stats["dropped"] == 0
