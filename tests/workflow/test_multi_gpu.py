"""A training job given N GPUs runs N processes inside itself (torchrun); one given one GPU runs one (issue #9).

On this CPU machine the "GPUs" are only Snakemake's `gpu` resource: the processes train on the CPU with gloo,
which exercises the launch decision, the shared log and rank-0 output writing of the real path.
"""

from __future__ import annotations

import re

import pytest
from workflow.conftest import make_workdir, snakemake

from helpers.jobs import edit_experiment

pytestmark = pytest.mark.slow


def planned(out: str, rule: str) -> str:
    """The block a dry run prints for ``rule``'s job."""
    return re.search(rf"rule {rule}:\n(?:    .*\n)*", out).group(0)


def two_gpus(d):
    d["encoder"].update(max_steps=4, eval_steps=4, save_steps=4, logging_steps=1, resources={"gpus": 2})
    d["decoder"]["trainer"].update(max_steps=4, eval_steps=4, save_steps=4, logging_steps=1)
    d["decoder"]["resources"] = {"gpus": 2}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("gpus"))
    edit_experiment(workdir, two_gpus)
    return workdir


def test_two_gpus_train_as_two_processes_that_share_the_log_and_write_one_output(workdir):
    snakemake(workdir, "--cores", "2", "results/tiny/decoder", "--resources", "gpu=2")
    logs = workdir / "results" / "logs"
    encoder = (logs / "train_encoder" / "tiny.log").read_text()
    assert "starting 2 processes (one per GPU): " in encoder and "--nproc-per-node=2" in encoder
    assert re.search(r"rank 0 \| medlens.train.encoder \| model .* 2 process\(es\)", encoder)
    assert re.search(r"rank 1 \| medlens.train.encoder \| model .* 2 process\(es\)", encoder)
    assert re.search(r"rank 0 \| medlens.train.encoder \| step 4/4", encoder)
    decoder = (logs / "train_decoder" / "tiny.log").read_text()
    assert "starting 2 processes" in decoder
    assert {
        int(r) for r in re.findall(r"rank (\d) \| medlens.train.trainer \| decoder trained", decoder)
    } == {0, 1}
    for stage, name in (("encoder", "open_clip_model.safetensors"), ("decoder", "model.safetensors")):
        assert (workdir / "results" / "tiny" / stage / name).stat().st_size > 0
        assert not (workdir / "results" / "tiny" / f"{stage}.ckpt").exists()


@pytest.mark.parametrize("declared, expected", [("1", 1), ("2", 2)])
def test_a_machine_declaring_fewer_gpus_gives_the_job_that_many(workdir, declared, expected):
    out = snakemake(
        workdir,
        "-n",
        "--cores",
        "2",
        "results/tiny/encoder",
        "--forcerun",
        "train_encoder",
        "--resources",
        f"gpu={declared}",
    ).stdout
    job = planned(out, "train_encoder")
    assert re.search(rf"resources: .*\bgpu={expected}\b", job), job


def test_evaluation_asks_for_one_gpu_whatever_training_got(workdir):
    out = snakemake(
        workdir,
        "-n",
        "--cores",
        "2",
        "results/report.html",
        "--resources",
        "gpu=2",
        "--forcerun",
        "train_encoder",
    ).stdout
    assert re.search(r"resources: .*\bgpu=2\b", planned(out, "train_decoder"))
    for rule in ("evaluate_encoder", "evaluate_decoder"):
        job = planned(out, rule)
        assert re.search(r"resources: .*\bgpu=1\b", job), job
