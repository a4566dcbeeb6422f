"""A training job killed mid-run with SIGTERM checkpoints, and the rerun resumes to the uninterrupted weights (issue #9).

The same under SLURM (scancel, then Snakemake's retry) is in test_slurm.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest
from workflow.conftest import SNAKEMAKE, make_workdir, snakemake

from helpers.jobs import assert_same_encoder, edit_experiment, last_step, script_pids, wait_for
from medlens.train.checkpoint import read_checkpoint_info

pytestmark = pytest.mark.slow

STEPS = 30


def short_encoder(d):
    # no scheduled checkpoint: the only one is the signal's
    d["encoder"].update(max_steps=STEPS, eval_steps=STEPS, save_steps=1000, logging_steps=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A working directory whose data rules ran, and the encoder an uninterrupted run trained there."""
    workdir = make_workdir(tmp_path_factory.mktemp("preempt"))
    edit_experiment(workdir, short_encoder)
    snakemake(workdir, "--cores", "2", "results/tiny/encoder")
    reference = workdir / "reference_encoder"
    shutil.move(workdir / "results" / "tiny" / "encoder", reference)
    (workdir / "results" / "logs" / "train_encoder" / "tiny.log").unlink()  # the test watches the next run's
    return workdir, reference


def test_sigterm_mid_training_checkpoints_and_the_rerun_resumes_to_the_same_weights(uninterrupted):
    workdir, reference = uninterrupted
    log = workdir / "results" / "logs" / "train_encoder" / "tiny.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(workdir / "interrupted.out", "w") as out:
        proc = subprocess.Popen(
            [
                *SNAKEMAKE,
                "-d",
                str(workdir),
                "--configfile",
                str(workdir / "config.yaml"),
                "--cores",
                "2",
                "results/tiny/encoder",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: last_step(log) >= 3, "training step 3", timeout=600, alive=lambda: proc.poll() is None
            )
            [pid] = script_pids(workdir, "train_encoder")
            os.kill(pid, signal.SIGTERM)
            assert proc.wait(timeout=300) != 0  # the job fails, so that it is run again
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    step = int(re.search(r"checkpoint saved at step (\d+)", text).group(1))
    assert 3 <= step < STEPS and last_step(log) == step  # stopped at the end of the step the signal came in
    ckpt = read_checkpoint_info(workdir / "results" / "tiny" / "encoder.ckpt" / "last")
    assert ckpt["state"]["step"] == step
    assert not (workdir / "results" / "tiny" / "encoder").exists()

    snakemake(workdir, "--cores", "2", "results/tiny/encoder")
    text = log.read_text()
    assert f"resuming from results/tiny/encoder.ckpt/last at step {step}" in text
    assert f"step {step + 1}/{STEPS}" in text and f"step {step}/{STEPS}" not in text
    assert_same_encoder(reference, workdir / "results" / "tiny" / "encoder")
    assert not (workdir / "results" / "tiny" / "encoder.ckpt").exists()
