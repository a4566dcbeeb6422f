"""Running the real Snakefile on the tiny configuration in a temporary working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "config" / "tiny"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """``snakemake`` in ``workdir`` with its ``config.yaml``; output captured, failures show the log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    # --configfile last: it takes several values and would swallow a target given after it
    cmd = [*SNAKEMAKE, "-d", str(workdir), *args, "--configfile", str(workdir / "config.yaml")]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-8000:]}"
        )
    return proc


def make_workdir(path: Path) -> Path:
    """A working directory holding a copy of the tiny config (edited freely by the tests)."""
    shutil.copytree(TINY, path, dirs_exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole DAG of the tiny configuration, run once per test session."""
    workdir = make_workdir(tmp_path_factory.mktemp("tiny"))
    snakemake(workdir, "--cores", "2", "results/report.html")
    return workdir
