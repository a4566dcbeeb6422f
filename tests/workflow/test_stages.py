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
ENCODER = ["train_encoder", "evaluate_encoder"]
DECODER = ["convert_to_chat_format", "train_decoder", "evaluate_decoder"]
SEEDS = {  # seed experiment -> the stages of its system
    "hybrid_dinov3_clip": ENCODER,  # seed 000: a contrastive encoder
    "siglip_base": ENCODER,  # the SigLIP half of seeds 001/002
    "llama32_vision": ENCODER + DECODER,  # seeds 001/002 as one system: SigLIP and Llama side by side
    "paligemma_qlora": DECODER,  # seed 003: a VLM fine-tune
    "lapvqa_captioner": DECODER,  # seed 004: a captioner from scratch, its tower probed
}


def dry_run(*args: str) -> str:
    """A dry run in the repository itself, with its own config/config.yaml (placeholders and all)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*SNAKEMAKE, "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def planned_rules(out: str) -> set[str]:
    table = out[out.index("Job stats") :]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


@pytest.mark.parametrize("name", SEEDS)
def test_each_seed_experiment_schedules_exactly_its_stages(name):
    out = dry_run("--config", f"run=[{name}]", "--", "results/report.html")
    assert planned_rules(out) == {*DATA, *SEEDS[name], "report"}


def test_any_experiment_page_can_be_asked_for_by_name():
    # not in `run` (the repository's run is the demo): its page alone, no overview and no paper table
    out = dry_run("results/hybrid_dinov3_clip/report.html")
    assert planned_rules(out) == {*DATA, *ENCODER, "report_experiment"}
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
