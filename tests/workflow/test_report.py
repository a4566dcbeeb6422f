"""The report rule beyond its own page: Snakemake's --report of the marked outputs, and seed-claims config."""

from __future__ import annotations

import pytest
import yaml
from workflow.conftest import make_workdir, snakemake

pytestmark = pytest.mark.slow


def test_snakemake_report_holds_the_outputs_marked_with_report(tiny_run, tmp_path):
    out = tmp_path / "snakemake_report.html"
    proc = snakemake(tiny_run, "--report", str(out))
    assert out.stat().st_size > 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    # every marked output was found (a pattern that matched nothing is only a warning in Snakemake)
    assert "No files found" not in log, log[-3000:]
    for name in (
        "report.html",
        "summary.csv",
        "summary.tex",
        "synthetic_cxr.rejected.csv",
        "split.json",
        "metrics.csv",
        "encoder.json",
        "encoder_per_label.csv",
        "encoder_roc.csv",
        "decoder.json",
        "generations.jsonl",
        "decoder_per_label.csv",
    ):
        assert f"Adding {name} (" in log, name
    page = out.read_text(errors="replace")
    for category in ("Data", "Training", "Evaluation", "Report"):
        assert category in page


def test_an_unknown_seed_claims_name_fails_before_any_job(tmp_path):
    workdir = make_workdir(tmp_path)
    path = workdir / "experiments" / "tiny.yaml"
    config = yaml.safe_load(path.read_text())
    config["report"]["seed_claims"] = "lapvqa"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "-n", "results/report.html", check=False)
    assert proc.returncode != 0
    assert (
        "experiments/tiny.yaml: report.seed_claims: unknown seed system 'lapvqa'" in proc.stdout + proc.stderr
    )
    assert "lapvqa_captioner" in proc.stdout + proc.stderr
