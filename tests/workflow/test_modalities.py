"""The tiny pipeline on knee radiographs, skin lesions and SLAKE: each modality scored the way its field scores it.

One run of the real Snakefile on an experiment of the three sources (real layouts, tests/helpers/sources/
modalities.py) with the tiny encoder and captioner; the chest experiment of the same test session must
get none of their metrics, and they none of the chest labeler's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow.conftest import make_workdir, snakemake

from helpers.sources import modalities

KL = ["KL0", "KL1", "KL2", "KL3", "KL4"]


@pytest.fixture(scope="module")
def modality_run(tmp_path_factory) -> Path:
    workdir = make_workdir(tmp_path_factory.mktemp("modalities"))
    sources = workdir / "sources"
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["run"] = ["mixed"]
    config["datasets"] = {
        "knee": {
            "source": "path",
            "adapter": "knee_kl_oai",
            "path": str(modalities.build_knee(sources / "knee")),
            "store_size": 64,
        },
        "pad": {
            "source": "path",
            "adapter": "pad_ufes_20",
            "path": str(modalities.build_pad_ufes(sources / "pad")),
            "store_size": 64,
        },
        "slake": {
            "source": "path",
            "adapter": "slake",
            "path": str(modalities.build_slake(sources / "slake") / "Slake1.0"),
            "store_size": 64,
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    experiment = yaml.safe_load((workdir / "experiments" / "tiny.yaml").read_text())
    experiment.update(
        description="Knee grades, skin-lesion diagnoses and SLAKE questions (test fixtures).",
        datasets=["knee", "pad", "slake"],
        split={"official": True, "train": 0.5, "val": 0.25, "test": 0.25},
    )
    experiment["evaluate"].pop("external_datasets")
    experiment["evaluate"].pop("probe_datasets")
    (workdir / "experiments" / "mixed.yaml").write_text(yaml.safe_dump(experiment))
    snakemake(workdir, "--cores", "2", "results/report.html")
    return workdir


def _json(workdir: Path, experiment: str, name: str) -> dict:
    return json.loads((workdir / "results" / experiment / "eval" / name).read_text())


def _lines(workdir: Path, name: str, experiment: str = "tiny") -> list[str]:
    return (workdir / "results" / experiment / "eval" / name).read_text().splitlines()


def _has_interval(score: dict) -> bool:
    return score["ci_low"] <= score["value"] <= score["ci_high"]


def test_knee_grades_are_scored_with_accuracy_and_quadratic_kappa_from_text_and_encoder(modality_run):
    decoder = _json(modality_run, "mixed", "decoder.json")
    knee = decoder["overall"]["grading"]["knee_xray"]
    assert knee["n"] == 10  # two test knees per grade, official split
    assert knee["protocol"]["classes"] == KL
    assert _has_interval(knee["accuracy"]) and "quadratic_weighted_kappa" in knee
    assert knee["confusion"]["columns"] == [*KL, "unread"]
    assert sum(map(sum, knee["confusion"]["counts"])) == 10
    encoder = _json(modality_run, "mixed", "encoder.json")["modalities"]["knee_xray"]
    for read_by in ("zero_shot", "linear_probe"):
        assert encoder[read_by]["n"] == 10 and "quadratic_weighted_kappa" in encoder[read_by]
    assert set(encoder["zero_shot"]["protocol"]["prompts"]) == set(KL)


def test_skin_lesions_are_scored_with_balanced_accuracy_macro_f1_and_one_vs_rest_auc(modality_run):
    decoder = _json(modality_run, "mixed", "decoder.json")
    derm = decoder["overall"]["grading"]["dermatology"]
    assert derm["n"] >= 6 and "balanced_accuracy" in derm and "macro_f1" in derm
    assert "auc_one_vs_rest" not in derm  # a generated text gives a class, not a score
    encoder = _json(modality_run, "mixed", "encoder.json")["modalities"]["dermatology"]
    assert encoder["zero_shot"]["auc_one_vs_rest"]  # class scores exist for the encoder
    assert set(encoder["zero_shot"]["per_class"]) == set(derm["per_class"])


def test_slake_questions_are_answered_and_scored_closed_and_open_by_category(modality_run):
    vqa = _json(modality_run, "mixed", "decoder.json")["overall"]["vqa"]
    # three test images, six English questions each; the Chinese ones were filtered at prepare
    assert (vqa["n"], vqa["n_closed"], vqa["n_open"]) == (18, 9, 9)
    for key in ("closed_accuracy", "open_accuracy", "open_recall"):
        assert _has_interval(vqa[key])
    assert set(vqa["by_category"]) == {"Abnormality", "Modality", "Organ", "Position"}
    # the tiny captioner cannot read a question, and the protocol says so
    assert "image alone" in vqa["protocol"]["decoder"]


def test_no_modality_gets_the_chest_labeler_and_the_report_shows_each_modality(modality_run):
    decoder = _json(modality_run, "mixed", "decoder.json")
    assert "not_computed" in decoder["overall"]["clinical"]
    # no chest reports, so nothing for the chest report leaderboard
    assert json.loads((modality_run / "results" / "mixed" / "eval" / "rexrank.json").read_text()) == {}
    assert decoder["protocol"]["modalities"] == ["ct", "dermatology", "knee_xray"]
    page = (modality_run / "results" / "mixed" / "report.html").read_text()
    for anchor in (
        'id="modality-encoder-mixed-knee_xray"',
        'id="modality-encoder-mixed-dermatology"',
        'id="modality-decoder-mixed-knee_xray"',
        'id="modality-decoder-mixed-dermatology"',
        'id="vqa-mixed"',
        'id="clinical-not-computed-mixed"',
    ):
        assert anchor in page


def test_a_chest_experiment_gets_no_knee_skin_or_vqa_metrics(tiny_run):
    decoder = _json(tiny_run, "tiny", "decoder.json")
    assert "grading" not in decoder["overall"] and "vqa" not in decoder["overall"]
    assert decoder["overall"]["clinical"]["chexpert14"]["micro"]["f1"] is not None
    assert "modalities" not in _json(tiny_run, "tiny", "encoder.json")
    rexrank = _json(tiny_run, "tiny", "rexrank.json")
    generated = {g["id"]: g["generated"] for g in map(json.loads, _lines(tiny_run, "generations.jsonl"))}
    assert rexrank and all(s["model_prediction"] in generated.values() for s in rexrank.values())
    page = (tiny_run / "results" / "tiny" / "report.html").read_text()
    assert "Kellgren" not in page and 'id="vqa-tiny"' not in page
