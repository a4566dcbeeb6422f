"""What the profiles promise the jobs, read from dry runs (no cluster needed)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from workflow.conftest import REPO, SNAKEMAKE

pytestmark = pytest.mark.slow

TRAINING = {"train_encoder", "train_decoder"}


def job_resources(*args: str) -> dict[str, str]:
    """Rule name -> the resources line of its job in a dry run of the demo in the repository."""
    proc = subprocess.run(
        [*SNAKEMAKE, "-n", *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    jobs = re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: (.*)\n", proc.stdout)
    return dict(jobs)


@pytest.mark.parametrize(
    "extra",
    [[], ["--set-resources", "train_decoder:gpu_model=a100", "train_encoder:mem_mb=9000"]],
    ids=["profile", "command-line-set-resources"],
)
def test_training_jobs_ask_for_sigterm_before_their_time_limit_whatever_set_resources_says(extra):
    # a --set-resources on the command line replaces the profile's whole set-resources: the signal the
    # checkpoint-on-preemption relies on must not live there
    jobs = job_resources("--profile", str(REPO / "profiles" / "slurm"), *extra, "--", "results/report.html")
    assert set(jobs) >= TRAINING
    for rule, resources in jobs.items():
        assert ("slurm_extra=--signal=TERM@600" in resources) == (rule in TRAINING), (rule, resources)
    if extra:  # the command line's own settings still apply
        assert "gpu_model=a100" in jobs["train_decoder"] and "mem_mb=9000" in jobs["train_encoder"]


# the rules whose jobs reach the internet (Kaggle, the Hugging Face Hub): compute nodes of many clusters cannot
NETWORK_RULES = {
    "download": "data.smk",
    "prefetch_weights": "prefetch.smk",
    "prefetch_metric_weights": "prefetch.smk",
}


@pytest.mark.parametrize("rule", NETWORK_RULES)
def test_rules_that_reach_the_internet_run_on_the_submit_host(rule):
    text = (REPO / "workflow" / "rules" / NETWORK_RULES[rule]).read_text()
    block = re.search(rf"^rule {rule}:\n((?:    .*\n)*)", text, re.M).group(1)
    assert "    localrule: True\n" in block, block


def test_the_shipped_profiles_are_data_not_templates():
    # Snakemake runs the Python of a profile that is a YTE template (`__use_yte__: true`) before the Snakefile
    # can refuse it; the profiles medlens ships must never be one (medlens's loader refuses templates)
    from medlens.config import load_yaml

    profiles = sorted((REPO / "profiles").glob("*/config.yaml"))
    assert profiles and all(isinstance(load_yaml(p), dict) for p in profiles)
