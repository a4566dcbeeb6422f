"""Linear probes of a frozen tower on a probe dataset's own split, and their per-row scores for paired comparisons."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from helpers.encoders import PixelEncoder
from helpers.pairs import write_pairs
from medlens.config import EvalConfig
from medlens.evaluate.probes import probe_sets


def test_a_tower_is_probed_on_each_probe_dataset_split_of_its_own(tmp_path):
    import pyarrow as pa
    import pyarrow.compute as pc

    probe = write_pairs(tmp_path / "nih14.parquet", n=300)
    table = pq.read_table(probe)
    no_val = table.set_column(
        table.schema.get_field_index("split"),
        "split",
        pc.if_else(pc.equal(table["split"], "val"), pa.scalar("train"), table["split"]),
    )
    pq.write_table(no_val, tmp_path / "chexpert.parquet")
    cfg = EvalConfig(bootstrap_samples=20)
    scores: list = []
    out = probe_sets(PixelEncoder(), [probe, tmp_path / "chexpert.parquet"], cfg, scores_out=scores)
    assert out["nih14"]["rows_per_split"] == {"train": 210, "val": 45, "test": 45}
    # the blob the text calls an enlarged heart brightens the image: the probe finds it on the test rows
    assert out["nih14"]["chexpert5"]["per_label"]["Cardiomegaly"]["auc"] > 0.8
    assert out["chexpert"]["not_computed"].startswith("no val rows in its split")
    # each fitted multi-label probe's test rows, named as the JSON holds its result; none of a set not computed
    by = {s["evaluation"]: s for s in scores}
    assert set(by) == {f"external_probes/nih14/{name}" for name in out["nih14"] if name != "rows_per_split"}
    got = by["external_probes/nih14/chexpert5"]
    test_ids = [r["id"] for r in table.to_pylist() if r["split"] == "test"]
    assert got["ids"] == test_ids and got["labels"] == ["Cardiomegaly", "Pleural Effusion"]
    for j, label in enumerate(got["labels"]):  # the scores behind the reported AUCs
        assert roc_auc_score(got["targets"][:, j], got["scores"][:, j]) == pytest.approx(
            out["nih14"]["chexpert5"]["per_label"][label]["auc"]
        )
