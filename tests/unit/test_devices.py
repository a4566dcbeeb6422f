"""medlens.devices: each job claims GPUs of its own, set in CUDA_VISIBLE_DEVICES; SLURM's choice stands."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from medlens.devices import claim_gpus, release_gpus, visible_devices
from medlens.errors import ConfigError, MedlensError

FOUR = ["0", "1", "2", "3"]


@pytest.fixture(autouse=True)
def released():
    yield
    release_gpus()


def test_two_jobs_get_disjoint_devices_and_see_only_their_own(tmp_path):
    first, second = {}, {}
    assert claim_gpus(2, environ=first, devices=FOUR, lock_dir=tmp_path) == ["0", "1"]
    assert claim_gpus(1, environ=second, devices=FOUR, lock_dir=tmp_path) == ["2"]
    assert first["CUDA_VISIBLE_DEVICES"] == "0,1" and second["CUDA_VISIBLE_DEVICES"] == "2"


def test_a_job_waits_while_the_devices_are_held_and_gets_them_once_freed(tmp_path):
    assert claim_gpus(3, environ={}, devices=FOUR, lock_dir=tmp_path, timeout=0) == ["0", "1", "2"]
    with pytest.raises(MedlensError, match="2 of the GPUs 0,1,2,3 were not free"):
        claim_gpus(2, environ={}, devices=FOUR, lock_dir=tmp_path, timeout=0.2, poll=0.05)
    release_gpus()
    env = {}
    assert claim_gpus(2, environ=env, devices=FOUR, lock_dir=tmp_path, timeout=0) == ["0", "1"]


def test_a_claim_held_by_another_process_is_respected_and_freed_when_it_exits(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from medlens.devices import claim_gpus
            print(claim_gpus(1, environ={{}}, devices=["0", "1"], lock_dir={str(tmp_path)!r}), flush=True)
            sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "['0']"
        assert claim_gpus(1, environ={}, devices=["0", "1"], lock_dir=tmp_path, timeout=0) == ["1"]
        release_gpus()
        with pytest.raises(MedlensError):  # "0" is the other process's, "1" ours again: no two free
            claim_gpus(2, environ={}, devices=["0", "1"], lock_dir=tmp_path, timeout=0)
    finally:
        holder.communicate("\n", timeout=30)
    assert claim_gpus(2, environ={}, devices=["0", "1"], lock_dir=tmp_path, timeout=0) == ["0", "1"]


def test_the_visible_devices_are_the_pool_and_keep_their_names(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "3,GPU-5e1b"}
    assert claim_gpus(1, environ=env, lock_dir=tmp_path) == ["3"]
    other = {"CUDA_VISIBLE_DEVICES": "3,GPU-5e1b"}
    assert claim_gpus(1, environ=other, lock_dir=tmp_path) == ["GPU-5e1b"]
    assert other["CUDA_VISIBLE_DEVICES"] == "GPU-5e1b"


def test_under_slurm_the_schedulers_devices_stand(tmp_path):
    env = {"SLURM_JOB_ID": "12", "CUDA_VISIBLE_DEVICES": "1"}
    assert claim_gpus(1, environ=env, devices=FOUR, lock_dir=tmp_path) == ["1"]
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and not list(tmp_path.iterdir())


def test_a_cpu_job_sees_no_gpu_and_a_machine_without_gpus_runs_on_the_cpu(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert claim_gpus(0, environ=env, lock_dir=tmp_path) == [] and env["CUDA_VISIBLE_DEVICES"] == ""
    assert visible_devices(env) == []
    none = {"CUDA_VISIBLE_DEVICES": ""}
    assert claim_gpus(2, environ=none, lock_dir=tmp_path) == [] and none["CUDA_VISIBLE_DEVICES"] == ""


def test_asking_for_more_gpus_than_the_machine_has_names_the_setting(tmp_path):
    with pytest.raises(
        ConfigError, match=r"resources.gpus: the job asks for 3 GPUs but 2 are visible \(0,1\)"
    ):
        claim_gpus(3, environ={}, devices=["0", "1"], lock_dir=tmp_path)
