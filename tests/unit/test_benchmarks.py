"""The benchmark scripts take their sizes on the command line and record where their docstring says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a few seconds: the script fits a small linear probe


def test_bench_evaluate_encoder_takes_its_sizes_and_replaces_only_its_own_section(repo, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# medlens benchmarks\n\n## Encoder-evaluation metrics: time per call, CPU (old)\n\nstale\n\n"
        "## Another benchmark\n\nkept\n"
    )
    argv = ["--rows", "40", "--pairs", "30", "--probe-rows", "60", "30", "30", "--resamples", "5"]
    proc = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "bench_evaluate_encoder.py"), *argv, "--repeats", "1"]
        + ["--write", str(doc)],
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert "stale" not in text and text.endswith("## Another benchmark\n\nkept\n")
    assert "`benchmarks/bench_evaluate_encoder.py --rows 40 --pairs 30 --probe-rows 60 30 30" in text
    assert "| per_label_auc, 40 x 14 labels, 5 resamples (vectorised) |" in text
    assert "| linear_probe, 768 dims, 60/30/30 rows, 5 labels, 4 C values, 5 resamples |" in text


def test_the_benchmarks_record_their_results_where_their_docstrings_say(repo):
    # bench_evaluate_encoder.py said so while docs/benchmarks.md held none of its numbers
    recorded = (repo / "docs" / "benchmarks.md").read_text()
    for script in sorted((repo / "benchmarks").glob("bench_*.py")):
        source = script.read_text()
        title = next((line for line in source.splitlines() if line.startswith('TITLE = "## ')), None)
        if title is not None:
            assert title.split('"')[1] in recorded, script.name


def test_bench_prepare_never_writes_into_a_workdir_it_did_not_make(repo, tmp_path):
    # --workdir is reused between runs; a folder of the user's (a dataset) had its manifest.csv rewritten
    data = tmp_path / "my_dataset"
    (data / "images").mkdir(parents=True)
    (data / "manifest.csv").write_text("id,image,text\nr1,images/a.png,the user's report\n")

    def run(workdir):
        return subprocess.run(
            [sys.executable, str(repo / "benchmarks" / "bench_prepare.py"), "--n", "4", "--workers", "1"]
            + ["--workdir", str(workdir)],
            env={**os.environ, "PYTHONPATH": str(repo / "src")},
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = run(data)
    assert proc.returncode != 0 and f"--workdir {data}: not a folder this benchmark made" in proc.stderr
    assert (data / "manifest.csv").read_text() == "id,image,text\nr1,images/a.png,the user's report\n"
    assert sorted(p.name for p in data.rglob("*")) == ["images", "manifest.csv"]
    for _ in range(2):  # a new folder, then the same one again: its images reused
        proc = run(tmp_path / "work")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Images reused from --workdir" in proc.stdout
