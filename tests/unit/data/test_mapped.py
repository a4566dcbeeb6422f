"""Splits memory-mapped for training: the split's rows exactly, nothing read into the process, one file reused."""

import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq

from helpers.pairs import write_pairs
from medlens.data.datasets import PairsDataset
from medlens.data.mapped import map_split, open_mapped


def test_the_mapped_file_holds_the_rows_of_its_split_in_order(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=60)
    want = pq.read_table(pairs).to_pylist()
    for split in ("train", "val", "test"):
        path = map_split(pairs, split, tmp_path / "mapped", columns=("id", "image", "labels"))
        got = open_mapped(path).to_pylist()
        assert got == [{k: r[k] for k in ("id", "image", "labels")} for r in want if r["split"] == split]


def test_reading_the_mapped_split_allocates_nothing_in_the_process(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=300, size=96)
    path = map_split(pairs, "train", tmp_path / "mapped")
    before = pa.total_allocated_bytes()
    table = open_mapped(path)
    images = table["image"]
    total = sum(len(images[i].as_py()) for i in range(table.num_rows))
    assert total > 20_000  # the images are there ...
    assert (
        pa.total_allocated_bytes() - before < 4096
    )  # ... and their bytes were never copied into Arrow's pool
    in_memory = pq.read_table(pairs, columns=["image"])  # the read the mapping replaces copies them all
    assert pa.total_allocated_bytes() - before >= in_memory["image"].nbytes > total


def test_the_file_is_reused_until_the_parquet_changes(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=40)
    path = map_split(pairs, "train", tmp_path / "mapped")
    made = path.stat().st_mtime_ns
    assert map_split(pairs, "train", tmp_path / "mapped").stat().st_mtime_ns == made
    write_pairs(pairs, n=50, seed=1)  # the split rule ran again
    os.utime(pairs, ns=(made + 10**9, made + 10**9))
    path = map_split(pairs, "train", tmp_path / "mapped")
    ids = open_mapped(path)["id"].to_pylist()
    assert ids == [r["id"] for r in pq.read_table(pairs).to_pylist() if r["split"] == "train"]
    assert len(ids) == 35
    # another column selection is another file's content, not the old one's
    path = map_split(pairs, "train", tmp_path / "mapped", columns=("id", "image", "text", "labels"))
    assert open_mapped(path).column_names == ["id", "image", "text", "labels"]


def _size(image):
    return image.size


def test_a_dataset_over_a_mapped_split_travels_to_workers_as_its_path(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=200, size=96)
    dataset = PairsDataset(map_split(pairs, "train", tmp_path / "mapped"), _size)
    blob = pickle.dumps(dataset)  # what a spawned loader worker receives
    assert len(blob) < 2000
    copy = pickle.loads(blob)
    assert len(copy) == len(dataset) == 140
    assert [copy[i] for i in (0, 77, 139)] == [dataset[i] for i in (0, 77, 139)]
