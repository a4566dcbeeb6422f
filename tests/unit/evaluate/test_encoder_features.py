"""evaluate_encoder's features come from one streamed pass over the parquet, each row's own, in each split's order."""

import numpy as np
import pyarrow.parquet as pq

from helpers.encoders import PixelEncoder as _PixelEncoder
from helpers.pairs import write_pairs
from medlens.evaluate.features import encode_rows, encode_stored, read_rows


def test_streamed_features_equal_those_of_the_rows_read_whole(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=400)
    rows = {
        "train": read_rows(pairs, "train", None, 0),
        "val": read_rows(pairs, "val", None, 0),
        "sample": read_rows(pairs, "train", 50, 3),  # subsampled, sorted by id: not the file's order
    }
    assert all("image" not in r for r in rows["train"])
    whole = {r["id"]: r for r in pq.read_table(pairs).to_pylist()}
    encoder = _PixelEncoder()
    feats = encode_stored(encoder, pairs, rows)
    for group, members in rows.items():
        want = encode_rows(_PixelEncoder(), [whole[r["id"]] for r in members])
        np.testing.assert_array_equal(feats[group], want)
    assert max(encoder.batches) == 128  # never more than a batch of images at a time
    assert sum(encoder.batches) == sum(len(m) for m in rows.values())


def test_a_group_without_rows_has_no_features(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.parquet", n=20)
    feats = encode_stored(_PixelEncoder(), pairs, {"none": read_rows(pairs, "nonexistent", None, 0)})
    assert feats["none"].shape[0] == 0


def test_a_sample_picks_the_rows_it_always_picked(tmp_path):
    import random

    pairs = write_pairs(tmp_path / "pairs.parquet", n=300)
    everything = [r for r in pq.read_table(pairs).to_pylist() if r["split"] == "train"]
    want = sorted(random.Random(7).sample(everything, 40), key=lambda r: r["id"])
    got = read_rows(pairs, "train", 40, 7)
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert got[0].keys() == {"id", "dataset", "text", "labels", "meta", "modality"}
