"""medlens.launch: zero or one GPU stays one process; N > 1 GPUs become torchrun with N processes."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from medlens.devices import release_gpus
from medlens.launch import launch, torchrun_command


@pytest.fixture(autouse=True)
def restored():
    usr1 = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, usr1)
    release_gpus()


class Exec:
    """Stands in for os.execve: records the call instead of replacing the test process."""

    def __init__(self):
        self.calls = []

    def __call__(self, path, args, env):
        self.calls.append((path, args, env))


@pytest.mark.parametrize("gpus", [0, 1])
def test_zero_or_one_gpu_runs_in_this_process(gpus):
    execve, env = Exec(), {"CUDA_VISIBLE_DEVICES": ""}
    launch(gpus, argv=["train.py"], environ=env, execve=execve)
    assert execve.calls == [] and env["CUDA_VISIBLE_DEVICES"] == ""


def test_two_gpus_replace_the_script_with_torchrun_running_it_twice_on_shared_threads(tmp_path):
    execve, env = (
        Exec(),
        {"CUDA_VISIBLE_DEVICES": "0,1,2", "OMP_NUM_THREADS": "8", "MEDLENS_GPU_LOCK_DIR": str(tmp_path)},
    )
    launch(2, argv=["/w/.snakemake/scripts/tmp1.train_encoder.py"], environ=env, execve=execve)
    [(path, args, child_env)] = execve.calls
    assert path == sys.executable
    assert args == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "/w/.snakemake/scripts/tmp1.train_encoder.py",
    ]
    assert child_env["CUDA_VISIBLE_DEVICES"] == "0,1" and child_env["OMP_NUM_THREADS"] == "4"
    assert (
        signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    )  # torchrun must outlive the early-warning signal


def test_a_process_torchrun_started_trains_without_launching_again():
    execve, env = Exec(), {"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5"}
    launch(2, argv=["train.py"], environ=env, execve=execve)
    assert execve.calls == [] and env["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_the_torchrun_command_runs_the_given_script_with_its_arguments():
    assert torchrun_command(4, ["s.py", "--x", "1"], python="py") == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=4",
        "s.py",
        "--x",
        "1",
    ]


def test_what_a_script_imports_before_choosing_its_gpus_leaves_torch_unloaded():
    """CUDA reads CUDA_VISIBLE_DEVICES once; the modules imported before launch/claim_gpus must not start it."""
    code = (
        "import sys, medlens.config, medlens.devices, medlens.launch, medlens.log; "
        "print(sorted(m for m in ('torch', 'bitsandbytes', 'transformers') if m in sys.modules))"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "[]"
    )
