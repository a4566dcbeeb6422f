"""The tiny pipeline through the SLURM executor with ``profiles/slurm`` on a real (one-node) cluster (issue #9).

GPU stages must reach SLURM with their GPU request and CPU stages without one; a training job cancelled
mid-run (scancel) is resubmitted by Snakemake's retry and resumes from the checkpoint it wrote on SIGTERM,
ending with the weights of an uninterrupted run. The cluster comes from .ci/setup_slurm.sh (CI starts it);
where none answers the tests are skipped, and fail instead when MEDLENS_REQUIRE_SLURM is set (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from workflow.conftest import REPO, SNAKEMAKE, make_workdir, snakemake

from helpers.jobs import assert_same_encoder, edit_experiment, last_step, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# score_reports runs the metrics' BERT models, on the decoder's GPU where it has one
GPU_RULES = {"train_encoder", "train_decoder", "evaluate_encoder", "evaluate_decoder", "score_reports"}
# download is a local rule (it reaches the internet, which compute nodes may not): no SLURM job
CPU_RULES = {"prepare_datasets", "split", "split_probe", "convert_to_chat_format", "report"}
STEPS = 30


def _unavailable(reason: str):
    if os.environ.get("MEDLENS_REQUIRE_SLURM"):
        pytest.fail(f"{reason} (MEDLENS_REQUIRE_SLURM is set)")
    pytest.skip(reason)


def gpu_partition() -> str:
    """A partition of the running cluster whose nodes have GPUs (GRES), or skip saying why there is none."""
    if shutil.which("sinfo") is None:
        _unavailable(
            "SLURM is not installed (no sinfo); .ci/run installs it and starts a one-node cluster "
            "with .ci/setup_slurm.sh"
        )
    info = subprocess.run(["sinfo", "-h", "-o", "%P %G %a"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        _unavailable(
            f"no SLURM controller answers ({info.stderr.strip()}); start one with .ci/setup_slurm.sh"
        )
    parts = [line.split() for line in info.stdout.splitlines() if "gpu" in line and line.endswith(" up")]
    if not parts:
        _unavailable(f"no partition is up with GPUs as generic resources:\n{info.stdout}")
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    min_age = re.search(r"MinJobAge\s*=\s*(\d+)", config)
    if not min_age or int(min_age.group(1)) < 60:
        # the plugin reads job states from squeue (no accounting here), and finished jobs must stay listed
        _unavailable(
            f"MinJobAge is {min_age.group(1) if min_age else 'unknown'}; the squeue status check needs >= 60"
        )
    return parts[0][0].rstrip("*")


def slurm_test_profile(partition: str, path: Path) -> Path:
    """profiles/slurm with this cluster's partition, no account, squeue for job states, 2 cores per job at most."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = partition
    del profile["default-resources"]["slurm_account"]
    profile.update(
        {
            "slurm-no-account": True,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 1,
            "max-threads": os.cpu_count(),
            "latency-wait": 5,
        }
    )
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def light(d):
    """GPU requests on the four GPU stages (the cluster's fake GPUs; torch sees none and runs on the CPU), a
    training run long enough to cancel mid-way, short evaluations."""
    d["encoder"].update(
        max_steps=STEPS, eval_steps=STEPS, save_steps=1000, logging_steps=1, resources={"gpus": 1}
    )
    d["decoder"]["trainer"].update(max_steps=8, eval_steps=8, save_steps=8, logging_steps=2)
    d["decoder"]["resources"] = {"gpus": 1}
    d["evaluate"]["bootstrap_samples"] = 10
    d["evaluate"]["generation"] = {"max_new_tokens": 16}  # an evaluation override: no retraining


@dataclass
class SlurmRun:
    workdir: Path
    returncode: int
    output: str
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)  # SLURM job id -> scontrol's fields
    cancelled: str | None = None  # the train_encoder job cancelled mid-run
    stopped_at: int | None = None  # the step its checkpoint holds

    def rule_of(self, job: str) -> str:
        return re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", self.jobs[job]["Comment"]).group(1)


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", out))


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> SlurmRun:
    """The tiny pipeline under SLURM; its train_encoder job is cancelled at step 3 and left to the retry."""
    partition = gpu_partition()
    workdir = make_workdir(tmp_path_factory.mktemp("slurm"))
    edit_experiment(workdir, light)
    profile = slurm_test_profile(partition, workdir / "profile")
    log = workdir / "results" / "logs" / "train_encoder" / "tiny.log"
    # the hub is not switched off here: the Snakefile must do it for every job (asserted in their logs)
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "CUDA_VISIBLE_DEVICES": ""}
    out_path = workdir / "snakemake.out"
    run = SlurmRun(workdir, -1, "")
    with open(out_path, "w") as out:
        # --verbose: Snakemake prints each sbatch command line
        proc = subprocess.Popen(
            [
                *SNAKEMAKE,
                "-d",
                str(workdir),
                "--configfile",
                str(workdir / "config.yaml"),
                "--profile",
                str(profile),
                "--verbose",
                "results/report.html",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 1800
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                # a job's request is read while SLURM still lists it (MinJobAge after it ends)
                for job in re.findall(r"submitted with SLURM jobid (\d+)", out_path.read_text()):
                    if job not in run.jobs or run.jobs[job].get("JobState") in ("PENDING", "RUNNING"):
                        run.jobs[job] = _scontrol(job) or run.jobs.get(job, {})
                if run.cancelled is None and last_step(log) >= 3:
                    [job] = [
                        j
                        for j, info in run.jobs.items()
                        if info.get("Comment", "").startswith("rule_train_encoder_")
                        and info.get("JobState") not in ("COMPLETED", "FAILED", "CANCELLED")
                    ]
                    subprocess.run(["scancel", job], check=True, timeout=30)
                    run.cancelled = job
                    # read before the resubmitted job starts the log afresh
                    saved = wait_for(
                        lambda: re.search(r"checkpoint saved at step (\d+)", log.read_text()),
                        "the checkpoint written on SIGTERM",
                        timeout=120,
                    )
                    run.stopped_at = int(saved.group(1))
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=120)
    run.returncode, run.output = proc.returncode, out_path.read_text()
    for job in run.jobs:  # final states of jobs that finished after the last poll
        run.jobs[job] = _scontrol(job) or run.jobs[job]
    return run


def test_the_pipeline_runs_on_slurm_and_builds_the_report(slurm_run):
    assert slurm_run.returncode == 0, slurm_run.output[-6000:]
    assert (slurm_run.workdir / "results" / "report.html").stat().st_size > 0
    assert {slurm_run.rule_of(job) for job in slurm_run.jobs} == GPU_RULES | CPU_RULES


def test_gpu_stages_ask_slurm_for_their_gpu_and_data_stages_for_none(slurm_run):
    for job, info in slurm_run.jobs.items():
        rule = slurm_run.rule_of(job)
        if rule in GPU_RULES:
            assert info.get("TresPerJob") == "gres:gpu:1", (rule, info)
        else:
            assert "gpu" not in info.get("TresPerJob", "") and "gpu" not in info.get("TRES", ""), (rule, info)
    for rule in GPU_RULES:  # the allocation reached the job, which left it as SLURM set it
        log = (slurm_run.workdir / "results" / "logs" / rule / "tiny.log").read_text()
        assert re.search(r"GPU\(s\) given by SLURM: CUDA_VISIBLE_DEVICES=\d", log), rule
        if rule.startswith("train_"):  # pretrained artefacts come from the cache prefetch_weights filled
            assert "Hugging Face Hub offline: 1" in log, rule
    sbatch = [line for line in slurm_run.output.splitlines() if line.startswith("sbatch call:")]
    assert len(sbatch) == len(slurm_run.jobs)
    for line in sbatch:  # the early warning goes to training jobs only
        rule = re.search(r"--comment rule_(\w+?)(?:_wildcards_\S*)? ", line).group(1)
        assert ("--signal=TERM@600" in line) == (rule in ("train_encoder", "train_decoder")), line


def test_a_cancelled_training_job_is_resubmitted_and_resumes_to_the_uninterrupted_weights(
    slurm_run, tmp_path
):
    run = slurm_run
    assert run.cancelled is not None and run.stopped_at is not None, (
        "train_encoder ended before it was cancelled"
    )
    encoder_jobs = sorted((j for j in run.jobs if run.rule_of(j) == "train_encoder"), key=int)
    assert encoder_jobs[0] == run.cancelled and len(encoder_jobs) == 2
    assert run.jobs[run.cancelled]["JobState"] == "CANCELLED"
    assert run.jobs[encoder_jobs[1]]["JobState"] == "COMPLETED"
    assert 3 <= run.stopped_at < STEPS
    log = (run.workdir / "results" / "logs" / "train_encoder" / "tiny.log").read_text()
    assert f"resuming from results/tiny/encoder.ckpt/last at step {run.stopped_at}" in log

    # the same training, uninterrupted, on this machine (same config, data, threads and code)
    reference = make_workdir(tmp_path / "reference")
    shutil.copy(run.workdir / "experiments" / "tiny.yaml", reference / "experiments" / "tiny.yaml")
    snakemake(reference, "--cores", "2", "results/tiny/encoder")
    assert "resuming" not in (reference / "results" / "logs" / "train_encoder" / "tiny.log").read_text()
    assert_same_encoder(
        reference / "results" / "tiny" / "encoder", run.workdir / "results" / "tiny" / "encoder"
    )
