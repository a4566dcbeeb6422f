"""The whole DAG on the tiny configuration: outputs, caching, determinism, DAG rendering (issue #3)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
import yaml
from workflow.conftest import make_workdir, snakemake

pytestmark = pytest.mark.slow

EXPERIMENT_OUTPUTS = [
    "data/pairs.parquet",
    "data/dropped.csv",
    "data/split.json",
    "data/chat/train.jsonl",
    "data/chat/val.jsonl",
    "data/chat/test.jsonl",
    "encoder/open_clip_config.json",
    "encoder/open_clip_model.safetensors",
    "encoder/metrics.csv",
    "decoder/medlens.json",
    "decoder/metrics.csv",
    "decoder/encoder_final/vision.safetensors",
    "eval/encoder.json",
    "eval/encoder_per_label.csv",
    "eval/encoder_roc.csv",
    "eval/decoder.json",
    "eval/generations.jsonl",
    "eval/decoder_per_label.csv",
    "eval/rexrank.json",
    "eval/report_metrics.json",
    "eval/report_metric_scores.csv",
    "eval/zero_shot_scores.csv",
    "eval/class_predictions.csv",
    "eval/probe_scores.csv",
    "eval/tower_probe_scores.csv",
    "hub/encoder/README.md",
    "hub/encoder/open_clip_model.safetensors",
    "hub/decoder/README.md",
    "hub/decoder/model.safetensors",
    "report.html",
]
RULES = [
    "download",
    "prepare_datasets",
    "split",
    "convert_to_chat_format",
    "train_encoder",
    "train_decoder",
    "evaluate_encoder",
    "evaluate_decoder",
    "export_rexrank",
    "prefetch_metric_weights",
    "score_reports",
    "export_hub",
    "report",
]


def planned_jobs(workdir) -> dict[str, int]:
    """Rule -> job count of a dry run (Snakemake's "Job stats" table)."""
    proc = snakemake(workdir, "results/report.html", "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr  # Snakemake 9 logs the table to stderr
    jobs = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def test_every_rule_output_exists_and_is_well_formed(tiny_run):
    results = tiny_run / "results"
    for name in ("synthetic_cxr", "synthetic_ext"):
        table = pq.read_table(results / "prepared" / f"{name}.parquet")
        assert table.num_rows > 0 and (results / "prepared" / f"{name}.rejected.csv").exists()
        assert (results / "raw" / name / ".complete").exists()
    for rel in EXPERIMENT_OUTPUTS:
        assert (results / "tiny" / rel).stat().st_size > 0, rel
    assert (results / "report.html").stat().st_size > 0
    assert {p.name for p in (results / "paper").iterdir()} >= {
        "summary.csv",
        "summary.tex",
        "differences.csv",
    }
    for rule in RULES:  # every rule has its log and benchmark
        assert any((results / "logs" / rule).iterdir()), rule
        assert any((results / "benchmarks" / rule).iterdir()), rule

    pairs = pq.read_table(results / "tiny" / "data" / "pairs.parquet").to_pylist()
    by_patient = {}
    for row in pairs:
        by_patient.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_patient.values())  # patient-level split
    leakage = json.loads((results / "tiny" / "data" / "split.json").read_text())["leakage"]
    assert leakage["rows_audited"] == len(pairs) and leakage["images_exact"]["action"] == "keep"
    enc = json.loads((results / "tiny" / "eval" / "encoder.json").read_text())
    assert 0 <= enc["zero_shot"]["mean"]["auc"] <= 1 and enc["protocol"]["templates"]
    assert "synthetic_ext" in enc["external"]
    assert {"recall@1", "recall@5", "recall@10"} <= set(enc["retrieval"]["image_to_text"])
    dec = json.loads((results / "tiny" / "eval" / "decoder.json").read_text())
    assert {"bleu4", "rouge_l", "cider_d"} <= set(dec["overall"]["text"])
    assert dec["overall"]["clinical"]["labeler"] == "rules" and dec["protocol"]["decoding"]
    # the captioner's own tower is probed too (seed 004); the tiny captioner keeps the encoder's tower frozen,
    # so its probe must equal evaluate_encoder's
    assert enc["linear_probe"] and set(dec["encoder_final_probe"]) == set(enc["linear_probe"])
    for name, probe in enc["linear_probe"].items():
        assert dec["encoder_final_probe"][name]["mean"]["auc"] == pytest.approx(
            probe["mean"]["auc"], abs=1e-6
        ), name
    # and both on the probe dataset's own split, never trained on
    external = enc["external_probes"]["synthetic_ext"]
    probe_split = json.loads((results / "tiny" / "data" / "probe" / "synthetic_ext.split.json").read_text())
    assert external["rows_per_split"] == {
        s: probe_split["rows_per_split"][s] for s in ("train", "val", "test")
    }
    assert (
        sum(external["rows_per_split"].values()) == 40 and external["chexpert14"]["mean"]["auc"] is not None
    )
    tower = dec["encoder_final_external_probes"]["synthetic_ext"]
    assert tower["chexpert14"]["mean"]["auc"] == pytest.approx(
        external["chexpert14"]["mean"]["auc"], abs=1e-6
    )
    # each probe's per-row scores are kept for the paired comparisons, the tower's as the encoder's
    from medlens.evaluate.paired import read_probe_scores

    probe_rows = read_probe_scores(results / "tiny" / "eval" / "probe_scores.csv")
    tower_rows = read_probe_scores(results / "tiny" / "eval" / "tower_probe_scores.csv")
    assert "external_probes/synthetic_ext/chexpert14" in probe_rows
    ids, labels, _, targets = probe_rows["external_probes/synthetic_ext/chexpert14"]
    assert len(ids) == external["rows_per_split"]["test"] and targets.shape == (len(ids), len(labels))
    assert {k.replace("encoder_final_probe", "linear_probe") for k in tower_rows} >= {
        k for k in probe_rows if k.startswith("linear_probe/")
    }
    # the shareable copies: the training folders' files, with the evaluation in their model cards
    from huggingface_hub import ModelCard

    for stage, weights in (("encoder", "open_clip_model.safetensors"), ("decoder", "model.safetensors")):
        hub = results / "tiny" / "hub" / stage
        assert (hub / weights).read_bytes() == (results / "tiny" / stage / weights).read_bytes()
        card = ModelCard.load(hub / "README.md")
        assert card.data.eval_results and "## Evaluation" in card.text
        assert not ModelCard.load(results / "tiny" / stage / "README.md").data.eval_results
    gens = [json.loads(line) for line in (results / "tiny" / "eval" / "generations.jsonl").open()]
    assert gens and all({"id", "image", "reference", "generated"} <= set(g) for g in gens)
    # the evaluated images' distance from the decoder's training images, in its own image space, on its page
    assert dec["ood"]["n"] == len(gens) and 0 < dec["ood"]["quantiles"]["0.5"] < dec["ood"]["warn_at"]
    assert 'id="decoder-ood-tiny"' in (results / "tiny" / "report.html").read_text()
    # the field's report metrics: each scored or said not to be, with the command that fetches its weights
    field = json.loads((results / "tiny" / "eval" / "report_metrics.json").read_text())
    # report_metrics.json is written with sorted keys: none is left out
    assert set(field["metrics"]) == {"bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore"}
    for name, metric in field["metrics"].items():
        assert "protocol" in metric or (metric["not_computed"] and "fetch" in metric), name
    assert 'id="report-metrics-tiny"' in (results / "tiny" / "report.html").read_text()
    with open(results / "paper" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["experiment"] for r in rows] == ["tiny"]
    html = (results / "report.html").read_text()
    assert "tiny" in html and "<table" in html


def test_second_run_has_nothing_to_do(tiny_run):
    out = snakemake(tiny_run, "-n", "results/report.html").stdout
    assert "Nothing to be done" in out, out[-2000:]


def _edit(workdir, rel, edit):
    path = workdir / rel
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def copy_of_run(tiny_run, tmp_path):
    """The finished tiny run's working directory, copied so that a test can edit its config."""
    shutil.copytree(tiny_run, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def test_a_decoder_edit_reruns_only_the_decoder_and_what_follows(copy_of_run):
    _edit(copy_of_run, "experiments/tiny.yaml", lambda d: d["decoder"]["trainer"].update(learning_rate=3e-4))
    assert planned_jobs(copy_of_run) == {
        "train_decoder": 1,
        "evaluate_decoder": 1,
        "score_reports": 1,
        "export_rexrank": 1,
        "export_hub": 1,
        "report": 1,
    }


def test_trying_other_decoding_reruns_only_the_evaluation(copy_of_run):
    # evaluate.generation replaces the decoder folder's generation_config.json for evaluate_decoder alone
    _edit(
        copy_of_run, "experiments/tiny.yaml", lambda d: d["evaluate"].update(generation={"max_new_tokens": 8})
    )
    assert planned_jobs(copy_of_run) == {
        "evaluate_decoder": 1,
        "score_reports": 1,
        "export_rexrank": 1,
        "export_hub": 1,
        "report": 1,
    }


def test_changing_the_report_metrics_reruns_only_their_scoring(copy_of_run):
    _edit(copy_of_run, "experiments/tiny.yaml", lambda d: d["evaluate"].update(report_metrics=["bertscore"]))
    assert planned_jobs(copy_of_run) == {"prefetch_metric_weights": 1, "score_reports": 1, "report": 1}
    # GREEN, a 7B model, asks the scheduler for the memory and time it needs
    _edit(copy_of_run, "experiments/tiny.yaml", lambda d: d["evaluate"].update(report_metrics=["green"]))
    proc = snakemake(copy_of_run, "results/report.html", "-n")
    job = (proc.stdout + proc.stderr).split("rule score_reports:")[1].split("\n\n")[0]
    # float32 on the CPU: the tiny decoder has no GPU
    assert "mem_mb=48000" in job and "runtime=720" in job, job


def test_an_encoder_edit_reruns_the_encoder_and_everything_downstream_but_no_data_rule(copy_of_run):
    _edit(copy_of_run, "experiments/tiny.yaml", lambda d: d["encoder"].update(learning_rate=5e-4))
    assert planned_jobs(copy_of_run) == {
        "train_encoder": 1,
        "evaluate_encoder": 1,
        "train_decoder": 1,
        "evaluate_decoder": 1,
        "score_reports": 1,
        "export_rexrank": 1,
        "export_hub": 2,
        "report": 1,
    }


def test_editing_memory_or_time_requests_reruns_nothing(copy_of_run):
    _edit(
        copy_of_run,
        "experiments/tiny.yaml",
        lambda d: d["encoder"].update(resources={"mem_mb": 12000, "runtime": 240, "cpus": 4}),
    )
    assert planned_jobs(copy_of_run) == {}


def test_a_dataset_edit_reruns_from_prepare_for_that_dataset_only(copy_of_run):
    _edit(copy_of_run, "config.yaml", lambda d: d["datasets"]["synthetic_cxr"]["synthetic"].update(seed=1))
    jobs = planned_jobs(copy_of_run)
    assert jobs == {
        "prepare_datasets": 1,
        "split": 1,
        "convert_to_chat_format": 1,
        "train_encoder": 1,
        "evaluate_encoder": 1,
        "train_decoder": 1,
        "evaluate_decoder": 1,
        "score_reports": 1,
        "export_rexrank": 1,
        "export_hub": 2,
        "report": 1,
    }
    proc = snakemake(copy_of_run, "results/report.html", "-n")
    prepared = re.findall(r"output: (results/prepared/\S+?)\.parquet", proc.stdout + proc.stderr)
    assert prepared == ["results/prepared/synthetic_cxr"]


def test_same_seed_gives_identical_metrics(copy_of_run):
    results = copy_of_run / "results" / "tiny" / "eval"
    before = {p: (results / p).read_bytes() for p in ("encoder.json", "decoder.json", "generations.jsonl")}
    snakemake(copy_of_run, "--cores", "2", "--forcerun", "train_encoder", "results/report.html")
    after = {p: (results / p).read_bytes() for p in before}
    assert after == before


def test_the_dag_renders_to_svg_with_graphviz(tiny_run, tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (.ci/run installs it)")
    dag = snakemake(tiny_run, "results/report.html", "--dag").stdout
    svg = subprocess.run(["dot", "-Tsvg"], input=dag, capture_output=True, text=True, check=True).stdout
    assert svg.lstrip().startswith("<?xml") and "train_encoder" in svg and "prepare_datasets" in svg


@pytest.mark.parametrize(
    "file, edit, message",
    [
        (
            "experiments/tiny.yaml",
            lambda d: d["encoder"].update(learning_rte=0.1),
            "encoder.learning_rte: unknown key 'learning_rte'",
        ),
        ("experiments/tiny.yaml", lambda d: d["encoder"].update(max_steps="many"), "encoder.max_steps"),
        (
            "experiments/tiny.yaml",
            lambda d: d.update(datasets=["synthetic_cxr", "mimic"]),
            "datasets[1]: unknown dataset 'mimic'",
        ),
        (
            "experiments/tiny.yaml",
            lambda d: d["encoder"].update(per_device_train_batch_size=-4),
            "tiny.yaml: encoder.per_device_train_batch_size: -4 is less than the minimum of 1",
        ),
        (
            "config.yaml",
            lambda d: d["datasets"]["synthetic_cxr"].update(store_size=-1),  # the file given to --configfile
            "config.yaml: datasets.synthetic_cxr.store_size: -1 is less than the minimum of 16",
        ),
        (
            "experiments/tiny.yaml",
            lambda d: d["evaluate"].update(external_datasets=["synthetic_cxr"]),
            "tiny.yaml: evaluate.external_datasets[0]: 'synthetic_cxr' is also a training dataset",
        ),
        (
            "experiments/tiny.yaml",
            lambda d: d.update(split={"train": 0.5, "val": 0.3, "test": 0.3}),
            "tiny.yaml: split: shares train 0.5, val 0.3, test 0.3 do not sum to 1",
        ),
        (
            "experiments/tiny.yaml",
            lambda d: d["decoder"].update(num_heads=3),
            "tiny.yaml: decoder.num_heads: num_heads 3 does not divide hidden_size 64",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "unknown-dataset",
        "out-of-bounds",
        "configfile",
        "external-is-training",
        "split-shares",
        "heads",
    ],
)
def test_config_mistakes_stop_the_run_before_any_job_with_the_key_path(tmp_path, file, edit, message):
    workdir = make_workdir(tmp_path / "bad")
    _edit(workdir, file, edit)
    proc = snakemake(workdir, "-n", "results/report.html", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("rnu=[tiny]", "--config: rnu: unknown key 'rnu'; expected one of container, datasets"),
        ("run=[tny]", "--config: run: experiment 'tny' not found; expected one of ['tiny']"),
        (
            "experiments_dir=nowhere",
            "--config: experiments_dir: 'nowhere' is not a folder",
        ),  # was: "not found"
    ],
    ids=["unknown-key", "unknown-experiment", "no-experiments-dir"],
)
def test_a_mistake_given_with_config_is_named_as_coming_from_config(tmp_path, override, message):
    # was: blamed on config.yaml, which the user had not touched
    workdir = make_workdir(tmp_path / "bad")
    proc = snakemake(workdir, "-n", "results/report.html", "--config", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not (workdir / "results").exists()


def _repeat_dataset(raw: bytes) -> bytes:
    return raw + b"  synthetic_cxr:\n    source: synthetic_cxr\n"


def _repeat_encoder(raw: bytes) -> bytes:
    return raw + b"encoder:\n  learning_rate: 0.01\n"


@pytest.mark.parametrize(
    "file, edit, message",
    [
        (
            "config.yaml",
            _repeat_dataset,
            r"config\.yaml: datasets\.synthetic_cxr: repeated key \(lines 6 and 23\)",
        ),
        ("experiments/tiny.yaml", _repeat_encoder, r"tiny\.yaml: encoder: repeated key \(lines 3 and 35\)"),
        (
            "experiments/tiny.yaml",
            lambda raw: b"# r\xe9sum\xe9\n" + raw,
            r"tiny\.yaml: byte 0xe9 at byte position 3 \(line 1\) is not UTF-8; expected a UTF-8 text file",
        ),
    ],
    ids=["dataset-defined-twice", "two-encoder-blocks", "latin-1"],
)
def test_yaml_that_would_be_misread_stops_the_run_before_any_job(tmp_path, file, edit, message):
    # YAML keeps the last of two equal keys: the first definition was silently dropped
    workdir = make_workdir(tmp_path / "bad")
    (workdir / file).write_bytes(edit((workdir / file).read_bytes()))
    proc = snakemake(workdir, "-n", "results/report.html", check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), proc.stderr[-2000:]
    assert not (workdir / "results").exists()


def test_a_yte_template_as_the_default_config_is_refused_before_it_runs(tmp_path):
    # Snakemake's `configfile:` would run the template's Python; medlens reads config/config.yaml itself
    from workflow.conftest import SNAKEMAKE

    workdir = make_workdir(tmp_path / "bad")
    marker = tmp_path / "ran"
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(
        f"__use_yte__: true\nrun:\n  - ?open({str(marker)!r}, 'w').write('x') and 'tiny'\n"
        + (workdir / "config.yaml").read_text().replace("run: [tiny]\n", "")
    )
    proc = subprocess.run(
        [*SNAKEMAKE, "-d", str(workdir), "-n"],
        cwd=workdir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert (
        "config/config.yaml: __use_yte__: medlens configs are data, not templates"
        in proc.stdout + proc.stderr
    )
    assert not marker.exists()
    # the same file without the template runs: the default config is still read when no --configfile is given
    (workdir / "config" / "config.yaml").write_text((workdir / "config.yaml").read_text())
    proc = subprocess.run(
        [*SNAKEMAKE, "-d", str(workdir), "-n", "--config", "run=[tiny]"],
        cwd=workdir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
