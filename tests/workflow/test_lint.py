"""The workflow and the code stay clean under the field's linters, with the project's own configuration."""

from __future__ import annotations

import subprocess
import sys


def run(repo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True, timeout=300
    )


def test_snakemake_lint_has_nothing_to_say(repo):
    # every rule has a log, a benchmark and the container (env/medlens.def) it runs in under --sdm apptainer
    proc = run(repo, "snakemake", "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[
        -3000:
    ]


def test_snakefiles_are_formatted_by_snakefmt(repo):
    # pyproject.toml's [tool.snakefmt]: the project's line length and directive order
    proc = run(repo, "snakefmt", "--check", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, proc.stderr + "\nrun: snakefmt Snakefile workflow/rules"


def test_python_passes_ruff_check_and_is_formatted_by_ruff(repo):
    proc = run(repo, "ruff", "check", "src", "tests", "workflow/scripts", "benchmarks")
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc = run(repo, "ruff", "format", "--check", "src", "tests", "workflow/scripts", "benchmarks")
    assert proc.returncode == 0, (
        proc.stdout[-3000:] + "\nrun: ruff format src tests workflow/scripts benchmarks"
    )
