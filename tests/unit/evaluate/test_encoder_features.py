"""evaluate_encoder's features come from one streamed pass over the parquet, each row's own, in each split's order."""

import numpy as np
import pyarrow.parquet as pq
import torch

from helpers.pairs import write_pairs
from medlens.evaluate.features import encode_rows, encode_stored, read_rows


class _PixelEncoder:
    """Features that identify the image: its mean, spread and corner pixel; records the batch sizes it saw."""

    def __init__(self):
        self.batches = []

    def encode_images(self, images):
        self.batches.append(len(images))
        return torch.tensor(
            [[np.asarray(im).mean(), np.asarray(im).std(), float(np.asarray(im)[0, 0, 0])] for im in images]
        )


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


def test_a_tower_is_probed_on_each_probe_dataset_split_of_its_own(tmp_path):
    import pyarrow as pa
    import pyarrow.compute as pc

    from medlens.config import EvalConfig
    from medlens.evaluate.encoder import probe_sets

    probe = write_pairs(tmp_path / "nih14.parquet", n=300)
    table = pq.read_table(probe)
    no_val = table.set_column(
        table.schema.get_field_index("split"),
        "split",
        pc.if_else(pc.equal(table["split"], "val"), pa.scalar("train"), table["split"]),
    )
    pq.write_table(no_val, tmp_path / "chexpert.parquet")
    cfg = EvalConfig(bootstrap_samples=20)
    out = probe_sets(_PixelEncoder(), [probe, tmp_path / "chexpert.parquet"], cfg)
    assert out["nih14"]["rows_per_split"] == {"train": 210, "val": 45, "test": 45}
    # the blob the text calls an enlarged heart brightens the image: the probe finds it on the test rows
    assert out["nih14"]["chexpert5"]["per_label"]["Cardiomegaly"]["auc"] > 0.8
    assert out["chexpert"]["not_computed"].startswith("no val rows in its split")
