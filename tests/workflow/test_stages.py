"""Experiments run the stages their system has; any experiment's page can be built by name (issue #19)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml
from workflow.conftest import REPO, SNAKEMAKE, make_workdir, snakemake

pytestmark = pytest.mark.slow

DATA = ["download", "prepare_datasets", "split"]
ENCODER = ["train_encoder", "evaluate_encoder", "export_hub"]
DECODER = [
    "convert_to_chat_format",
    "train_decoder",
    "evaluate_decoder",
    "prefetch_metric_weights",
    "score_reports",
    "export_rexrank",
    "export_hub",
]
SEEDS = {  # seed experiment -> the stages of its system
    "hybrid_dinov3_clip": ENCODER,  # seed 000: a contrastive encoder
    "siglip_base": ENCODER,  # the SigLIP half of seeds 001/002
    "llama32_vision": ENCODER + DECODER,  # seeds 001/002 as one system: SigLIP and Llama side by side
    "paligemma_qlora": DECODER,  # seed 003: a VLM fine-tune
    "lapvqa_captioner": DECODER + ["split_probe"],  # seed 004: a captioner, its tower probed on NIH, CheXpert
}


@pytest.fixture(scope="module")
def site_config(tmp_path_factory):
    """config/config.yaml as a site fills it in: every placeholder folder points at a folder that exists."""
    root = tmp_path_factory.mktemp("site")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, dataset in config["datasets"].items():
        if dataset.get("path", "").startswith("/path/to/"):
            (root / name).mkdir()
            dataset["path"] = str(root / name)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "config.yaml"


def dry_run(*args: str, check: bool = True, env: dict | None = None) -> str:
    """A dry run in the repository itself; Kaggle credentials are present (fake: nothing is downloaded)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KAGGLE_USERNAME": "someone",
        "KAGGLE_KEY": "k",
        **(env or {}),
    }
    proc = subprocess.run(
        [*SNAKEMAKE, "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 or not check, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def planned_rules(out: str) -> set[str]:
    table = out[out.index("Job stats") :]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


@pytest.mark.parametrize("name", SEEDS)
def test_each_seed_experiment_schedules_exactly_its_stages(name, site_config):
    out = dry_run("--configfile", str(site_config), "--config", f"run=[{name}]", "--", "results/report.html")
    # every seed loads pretrained weights: fetched first, on this host, before any GPU job can start
    assert planned_rules(out) == {*DATA, "prefetch_weights", *SEEDS[name], "report"}
    # a local rule: it runs on the submit host, which reaches the Hub, never in a SLURM job
    assert re.search(
        r"rule prefetch_weights:(?:\n    .*)*\n    localrule: True",
        (REPO / "workflow" / "rules" / "prefetch.smk").read_text(),
    )
    for train in {"train_encoder", "train_decoder"} & set(SEEDS[name]):
        job = re.search(rf"\nrule {train}:\n(?:    .*\n)*", out).group(0)
        assert f"results/{name}/prefetched.json" in job
    # the probes' per-row scores are declared outputs (cached, and rerun when missing) that the report reads
    for rule, scores in (("evaluate_encoder", "probe_scores"), ("evaluate_decoder", "tower_probe_scores")):
        if rule in SEEDS[name]:
            job = re.search(rf"\nrule {rule}:\n(?:    .*\n)*", out).group(0)
            assert f"results/{name}/eval/{scores}.csv" in job.split("output:")[1].split("\n")[0], rule
            report = re.search(r"\nlocalrule report:\n(?:    .*\n)*|\nrule report:\n(?:    .*\n)*", out)
            assert f"results/{name}/eval/{scores}.csv" in report.group(0)
    if "split_probe" in SEEDS[name]:  # each probe dataset split on its own, read by the tower's evaluation
        job = re.search(r"\nrule evaluate_decoder:\n(?:    .*\n)*", out).group(0)
        for dataset in ("nih14", "chexpert"):
            assert f"results/{name}/data/probe/{dataset}.parquet" in job


def test_any_experiment_page_can_be_asked_for_by_name(site_config):
    # not in `run` (the repository's run is the demo): its page alone, no overview and no paper table
    out = dry_run("--configfile", str(site_config), "--", "results/hybrid_dinov3_clip/report.html")
    assert planned_rules(out) == {*DATA, "prefetch_weights", *ENCODER, "report_experiment"}
    assert "results/report.html" not in out and "results/paper/summary.csv" not in out


def test_an_encoder_only_experiment_trains_and_shows_only_its_stage(tmp_path):
    workdir = make_workdir(tmp_path / "enc")
    exp = yaml.safe_load((workdir / "experiments" / "tiny.yaml").read_text())
    exp["stages"] = ["encoder"]
    exp.pop("decoder")
    (workdir / "experiments" / "tiny_encoder.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    snakemake(workdir, "--cores", "2", "results/tiny_encoder/report.html")
    results = workdir / "results"
    assert (results / "tiny_encoder" / "encoder" / "open_clip_model.safetensors").is_file()
    assert (
        not (results / "tiny_encoder" / "decoder").exists()
        and not (results / "tiny_encoder" / "data" / "chat").exists()
    )
    assert not (results / "report.html").exists()  # the page alone
    page = (results / "tiny_encoder" / "report.html").read_text()
    assert "This experiment has no decoder stage (stages: encoder)." in page
    assert "decoder evaluation missing" not in page and 'title="no such stage in this experiment">n/a' in page


def test_the_dry_run_finds_placeholder_paths_and_missing_credentials(tmp_path):
    out = dry_run("results/hybrid_dinov3_clip/report.html", check=False)
    assert "experiment 'hybrid_dinov3_clip' needs 2 datasets that cannot be read" in out
    assert (
        "config/config.yaml: datasets.mimic_cxr.path: '/path/to/mimic-cxr-jpg/2.1.0' is still the placeholder"
        in out
    )
    assert "Job stats" not in out  # nothing is scheduled
    no_credentials = {"KAGGLE_USERNAME": "", "KAGGLE_KEY": "", "HOME": str(tmp_path)}
    out = dry_run("results/paligemma_qlora/report.html", check=False, env=no_credentials)
    assert (
        "datasets.kaggle_pneumonia: downloading it needs Kaggle credentials: no Kaggle credentials found"
        in out
    )
    assert "expected Kaggle credentials: create an API token" in out


def test_the_tiny_pipelines_chat_files_feed_trl_and_llamafactory(tmp_path):
    from helpers.chat_formats import check_llamafactory_info, check_trl_files

    workdir = make_workdir(tmp_path / "chat")
    snakemake(workdir, "--cores", "2", "results/tiny/data/chat")
    chat = workdir / "results" / "tiny" / "data" / "chat"
    assert check_trl_files(chat) == check_llamafactory_info(chat) > 0


@pytest.mark.parametrize(
    "target",
    [
        "results/prepared/synthetic_cx.parquet",
        "results/prepared/synthetic_cx.rejected.csv",
        "results/raw/synthetic_cx/.complete",
        "results/prepared/synthetic_cxr_v2.parquet",  # a configured name as a prefix is still unknown
    ],
)
def test_a_dataset_target_the_config_does_not_define_names_the_ones_it_does(target):
    # was: "MissingRuleException: No rule to produce results/prepared/synthetic_cx.parquet"
    out = dry_run(target, check=False)
    name = target.split("/")[2].split(".")[0]
    assert (
        f"config/config.yaml: datasets: no dataset '{name}' (asked for by {target}); expected one of " in out
    )
    assert "synthetic_cxr" in out.split("expected one of ")[1]
    assert "MissingRuleException" not in out and "Job stats" not in out


def test_under_sdm_apptainer_a_tracker_is_looked_up_in_the_images_lock(tmp_path):
    workdir = make_workdir(tmp_path / "sdm")
    exp = yaml.safe_load((workdir / "experiments" / "tiny.yaml").read_text())
    exp["encoder"]["report_to"] = ["wandb"]
    (workdir / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    out = snakemake(workdir, "-n", "results/report.html", "--sdm", "apptainer", check=False)
    assert out.returncode != 0
    assert (
        f"experiments/tiny.yaml: encoder.report_to[0]: the tracker 'wandb' is not in {REPO / 'requirements.lock'}, "
        "the lock the jobs' container image is built from (--sdm apptainer)" in out.stdout + out.stderr
    )


def test_an_empty_run_refuses_the_report_but_not_other_targets():
    # was: an empty results/report.html, built without a word
    out = dry_run("results/report.html", "--config", "run=[]", check=False)
    assert "--config: run: run lists no experiment, so results/report.html would show nothing" in out
    assert "Job stats" not in out
    assert "prepare_datasets" in dry_run("results/prepared/synthetic_cxr.parquet", "--config", "run=[]")


def test_a_probe_split_of_a_dataset_the_experiment_does_not_probe_is_refused():
    # was: planned a split_probe of demo's own training dataset
    out = dry_run("results/demo/data/probe/synthetic_cxr.parquet", check=False)
    assert (
        "config/experiments/demo.yaml: evaluate.probe_datasets: 'synthetic_cxr' is not a probe dataset of "
        "experiment 'demo' (asked for by results/demo/data/probe/synthetic_cxr.parquet); expected one of []"
        in out
    )
    assert "Job stats" not in out


def test_a_configured_dataset_target_still_plans_its_rules():
    out = dry_run("results/prepared/synthetic_cxr.parquet")
    assert "prepare_datasets" in out and "reject_unknown_dataset" not in out


@pytest.mark.parametrize("target", ["results/dmeo/report.html", "results/dmeo/encoder"])
def test_a_target_in_an_experiment_that_does_not_exist_names_the_ones_there_are(target):
    # was: "MissingRuleException: No rule to produce results/dmeo/report.html"
    out = dry_run(target, check=False)
    assert f"config/experiments: no experiment 'dmeo' (asked for by {target}); expected one of demo, " in out
    assert "MissingRuleException" not in out and "Job stats" not in out
