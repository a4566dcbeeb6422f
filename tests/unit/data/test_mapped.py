"""Splits memory-mapped for training: the split's rows exactly, nothing read into the process, one file reused."""

import json
import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.pairs import write_pairs
from medlens.data.chat_format import read_chat
from medlens.data.datasets import PairsDataset
from medlens.data.mapped import MappedRecords, map_chat, map_split, open_mapped
from medlens.errors import DataError


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


def _chat(folder, n, *, text="Small left pleural effusion."):
    """A chat JSONL of ``n`` conversations over one image beside it."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "a.png").write_bytes(b"png")
    lines = [
        {
            "id": f"r{i}",
            "images": ["images/a.png"],
            "messages": [
                {"role": "user", "content": "<image>Describe the radiograph."},
                {"role": "assistant", "content": f"{text} ({i})"},
            ],
        }
        for i in range(n)
    ]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_mapped_conversations_are_the_records_read_in_order_and_travel_as_their_path(tmp_path):
    chat = _chat(tmp_path / "chat", 2500)  # three record batches
    records = MappedRecords(map_chat(chat, tmp_path / "mapped"))
    want = read_chat(chat)
    assert len(records) == 2500 and list(records) == want  # images made absolute, as read_chat does
    assert records[-1] == want[-1] and records[1023:1026] == want[1023:1026]
    with pytest.raises(IndexError):
        records[2500]
    blob = pickle.dumps(records)  # what a spawned loader worker receives: the path, not the records
    assert len(blob) < 1000 and pickle.loads(blob)[1500] == want[1500]


def test_the_mapped_conversations_follow_their_jsonl(tmp_path):
    chat = _chat(tmp_path / "chat", 10)
    path = map_chat(chat, tmp_path / "mapped")
    made = path.stat().st_mtime_ns
    assert map_chat(chat, tmp_path / "mapped").stat().st_mtime_ns == made  # reused on resume
    _chat(tmp_path / "chat", 12, text="No effusion.")  # convert_to_chat_format ran again
    os.utime(chat, ns=(made + 10**9, made + 10**9))
    records = MappedRecords(map_chat(chat, tmp_path / "mapped"))
    assert len(records) == 12 and records[0]["messages"][1]["content"] == "No effusion. (0)"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"id": "x", "images": ["missing.png"], "messages": []}\n')
    with pytest.raises(DataError, match="train.jsonl.*1"):
        map_chat(bad / "train.jsonl", tmp_path / "mapped_bad")
    assert not (tmp_path / "mapped_bad" / "train.arrow").exists()  # nothing half-written is left to reuse
