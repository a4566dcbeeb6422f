"""The benchmark scripts take their sizes on the command line and record where their docstring says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a few seconds: the script fits a small linear probe


def bench(repo, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` as a user does, offline, with medlens importable."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(repo / "benchmarks" / script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_bench_evaluate_encoder_takes_its_sizes_and_replaces_only_its_own_section(repo, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# medlens benchmarks\n\n## Encoder-evaluation metrics: time per call, CPU (old)\n\nstale\n\n"
        "## Another benchmark\n\nkept\n"
    )
    argv = ["--rows", "40", "--pairs", "30", "--probe-rows", "60", "30", "30", "--resamples", "5"]
    proc = bench(repo, "bench_evaluate_encoder.py", *argv, "--repeats", "1", "--write", str(doc))
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
        return bench(repo, "bench_prepare.py", "--n", "4", "--workers", "1", "--workdir", str(workdir))

    proc = run(data)
    assert proc.returncode != 0 and f"--workdir {data}: not a folder this benchmark made" in proc.stderr
    assert (data / "manifest.csv").read_text() == "id,image,text\nr1,images/a.png,the user's report\n"
    assert sorted(p.name for p in data.rglob("*")) == ["images", "manifest.csv"]
    for _ in range(2):  # a new folder, then the same one again: its images reused
        proc = run(tmp_path / "work")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Images reused from --workdir" in proc.stdout


def test_bench_gpu_counts_a_linear_layers_flops_as_by_hand(repo, monkeypatch):
    # forward 2*B*in*out multiply-adds counted as 2 FLOPs each; backward as much again for the weight's gradient
    # and, where the input needs one, again for the input's: 4*in*out or 6*in*out per image
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import torch
    from bench_gpu import count_flops_per_image

    layer = torch.nn.Linear(16, 8, bias=False)
    images = torch.randn(4, 16)
    assert count_flops_per_image(lambda: layer(images).sum().backward(), batch=4) == 4 * 16 * 8
    hidden = torch.randn(4, 16, requires_grad=True)  # a layer inside a network passes a gradient back
    assert count_flops_per_image(lambda: layer(hidden).sum().backward(), batch=4) == 6 * 16 * 8


def test_bench_gpu_tiny_runs_every_part_on_cpu_and_reports_mfu_as_not_computed(repo, tmp_path):
    # the GPU benchmark's code paths (medlens's encoder step, the plain loop, open_clip's model, the Trainer
    # for the captioner and the VLMs) on the tiny presets, so that a lent GPU's few minutes are not spent on bugs
    out = tmp_path / "gpu.json"
    proc = bench(
        repo,
        "bench_gpu.py",
        *(
            "--tiny",
            "--encoders",
            "tiny",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
            str(out),
        ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {
        "title",
        "date",
        "argv",
        "torch",
        "machine",
        "lock",
        "peak_note",
        "steps",
        "warmup",
        "rows",
    } <= set(record)
    rows = {r["contender"]: r for r in record["rows"]}
    assert list(rows) == [
        "tiny: medlens",
        "tiny: plain",
        "tiny: stock",
        "tiny_captioner",
        "paligemma_qlora: QLoRA 4-bit",
        "paligemma_qlora: LoRA (not quantised)",
        "llama32_vision_lora: LoRA",
    ]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row.get("error"))
        assert row["images_per_s"] > 0 and row["flops_per_image"] > 0, name
        assert row["mfu"] is None and row["mfu_note"] == "not computed: no CUDA device (CPU run)", name
        assert f"| {name} |" in proc.stdout
    # one model, one count: medlens's step and the plain loop train the same medlens-tiny
    assert rows["tiny: medlens"]["flops_per_image"] == rows["tiny: plain"]["flops_per_image"]
    assert rows["tiny_captioner"]["tokens_per_s"] == rows["tiny_captioner"]["images_per_s"] * 192
    assert "lock `requirements.lock` sha256 `" in proc.stdout

    # the GPU run's JSON comes back from the device; the section is written into the docs here from it
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# medlens benchmarks\n\n"
        + record["title"]
        + "\n\nnot measured yet\n\n## Another benchmark\n\nkept\n"
    )
    # the same record twice: a rerun part's rows replace the earlier ones
    proc = bench(repo, "bench_gpu.py", "--from-json", str(out), str(out), "--write", str(doc))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert "not measured yet" not in text and text.endswith("## Another benchmark\n\nkept\n")
    assert text.count("| tiny: stock | open_clip medlens-tiny (") == 1


def test_bench_gpu_estimates_time_to_train_from_the_rate_measured(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    from bench_gpu import duration, time_to_train

    rows = [
        {"contender": "hybrid_dinov3_clip: medlens", "status": "ok", "images_per_s": 1600.0},
        {"contender": "paligemma_qlora: QLoRA 4-bit", "status": "failed", "error": "no 4-bit"},
        {"contender": "paligemma_qlora: LoRA (not quantised)", "status": "ok", "images_per_s": 16.0},
    ]
    estimates = {e["experiment"]: e for e in time_to_train(rows)}
    assert estimates["hybrid_dinov3_clip"]["hours"] == 25_000 * 64 / 1600 / 3600  # PLIP's steps x the batch
    assert estimates["hybrid_dinov3_clip"]["counted"] == "25,000 steps x 64"  # read from the preset
    # a failed 4-bit run: the unquantised LoRA's rate, and the table names which row it came from
    assert estimates["paligemma_qlora"]["rate_from"] == "paligemma_qlora: LoRA (not quantised)"
    assert estimates["paligemma_qlora"]["hours"] == 10 * 6_400 / 16 / 3600
    assert estimates["paligemma_qlora"]["counted"] == "10 epochs x 6,400 rows (0.8 of 8,000)"
    assert estimates["siglip_base"]["hours"] is None  # not measured: no number is made up
    assert [duration(h) for h in (25_000 * 64 / 1600 / 3600, 5.56, None)] == [
        "17 min",
        "5.6 h",
        "not measured",
    ]
