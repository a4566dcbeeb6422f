"""The tiny pipeline end to end on real chest X-rays with real clinical text: the ``manifest`` source on
``../shared/realdata`` (read in place, never copied into the repository), issue #4."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest
import yaml
from workflow.conftest import make_workdir, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def realdata_run(realdata, tmp_path_factory):
    """The tiny experiment with the real radiographs as its only dataset."""
    workdir = make_workdir(tmp_path_factory.mktemp("realdata"))
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["run"] = ["real"]
    config["datasets"] = {
        "realdata": {
            "source": "manifest",
            "path": str(realdata),
            "manifest": "manifest.csv",
            "store_size": 64,
            "max_text_chars": 2000,
        }
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    experiment = yaml.safe_load((workdir / "experiments" / "tiny.yaml").read_text())
    experiment["datasets"] = ["realdata"]
    experiment["evaluate"].update(
        external_datasets=[], probe_datasets=[], bootstrap_samples=20, generation={"max_new_tokens": 24}
    )
    experiment["encoder"].update(max_steps=12, eval_steps=12, save_steps=12)  # the data path is under test,
    experiment["decoder"]["trainer"].update(max_steps=12, eval_steps=12, save_steps=12)  # not the learning
    (workdir / "experiments" / "real.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    (workdir / "experiments" / "tiny.yaml").unlink()
    snakemake(workdir, "--cores", "2", "results/report.html")
    return workdir


def test_every_real_row_reaches_a_split_and_the_test_reports_are_the_real_notes(realdata_run, realdata):
    with open(realdata / "manifest.csv", newline="") as f:
        source = {r["id"]: r for r in csv.DictReader(f)}
    results = realdata_run / "results"
    with open(results / "prepared" / "realdata.rejected.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []  # nothing rejected, so all 110 rows must be in the pairs

    pairs = pq.read_table(results / "real" / "data" / "pairs.parquet").to_pylist()
    assert sorted(p["id"].removeprefix("realdata/") for p in pairs) == sorted(source)
    splits_of_patient = {}
    for p in pairs:
        splits_of_patient.setdefault(p["patient_id"], set()).add(p["split"])
    assert len(splits_of_patient) == len({r["patient_id"] for r in source.values()})
    assert all(len(s) == 1 for s in splits_of_patient.values())  # no patient crosses splits
    test_ids = {p["id"] for p in pairs if p["split"] == "test"}
    assert test_ids

    gens = [json.loads(line) for line in (results / "real" / "eval" / "generations.jsonl").open()]
    assert {g["id"] for g in gens} == test_ids
    for g in gens:  # the reference is the source's own note (whitespace normalised), not a synthesised one
        assert g["reference"] == " ".join(source[g["id"].removeprefix("realdata/")]["text"].split())
        assert isinstance(g["generated"], str)  # 12 training steps may well generate nothing yet


def test_the_metrics_say_why_a_label_cannot_be_scored_on_a_small_real_test_split(realdata_run):
    results = realdata_run / "results" / "real" / "eval"
    enc = json.loads((results / "encoder.json").read_text())
    assert enc["n"] > 0 and {"recall@1", "recall@5"} <= set(enc["retrieval"]["image_to_text"])
    for name, scored in enc["zero_shot"]["per_label"].items():  # CheXpert-14 names; the notes rarely use them
        assert scored["auc"] is not None or scored["reason"], name
    dec = json.loads((results / "decoder.json").read_text())
    assert 0 <= dec["overall"]["text"]["bleu4"] <= 1
    html = (realdata_run / "results" / "report.html").read_text()
    assert "real" in html and "realdata" in html
