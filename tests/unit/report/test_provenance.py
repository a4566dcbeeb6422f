"""Provenance: benchmark files, device lines of training logs, seeds, checksums, git state."""

from __future__ import annotations

import hashlib
import subprocess

from medlens.report.provenance import git_state, input_checksums, read_benchmark, seeds_of, stage_device

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_benchmark_reads_the_last_run_and_leaves_unmeasured_cells_none(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text(
        HEADER + "1.0\t0:00:01\t10\t1\t1\t1\t0\t0\t1\t0.5\n" + "2.5\t0:00:02\t-\t1\t1\t1\t0\t0\t1\t1.5\n"
    )
    got = read_benchmark(path)
    assert (got["seconds"], got["cpu_seconds"], got["max_rss_mb"]) == (2.5, 1.5, None)
    assert got["finished"].endswith("UTC")
    assert read_benchmark(tmp_path / "absent.tsv") is None
    (tmp_path / "empty.tsv").write_text(HEADER)
    assert read_benchmark(tmp_path / "empty.tsv") is None


def test_stage_device_reads_both_trainers_start_lines(tmp_path):
    enc, dec, other = tmp_path / "e.log", tmp_path / "d.log", tmp_path / "o.log"
    enc.write_text(
        "x | INFO | medlens.train.encoder | model m: 7 parameters (7 trainable); device cuda:0, "
        "precision bf16, 4 process(es)\n"
    )
    dec.write_text(
        "x | INFO | medlens.train.decoder | captioner: 1 parameters, 1 trainable; device cpu; precision fp32\n"
    )
    other.write_text("nothing here\n")
    assert stage_device(enc) == "cuda:0, bf16, 4 process(es)"
    assert stage_device(dec) == "cpu, fp32"
    assert stage_device(other) is None and stage_device(tmp_path / "absent.log") is None


def test_seeds_are_found_at_any_depth():
    config = {
        "seed": 1,
        "split": {"seed": 2},
        "decoder": {"trainer": {"seed": 3}},
        "evaluate": {"seed": True},
        "datasets": ["a"],
    }
    assert seeds_of(config) == {"seed": 1, "split.seed": 2, "decoder.trainer.seed": 3}


def test_checksums_hash_the_bytes_and_mark_absent_inputs(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"medlens")
    got = input_checksums({"a": tmp_path / "a.bin", "b": tmp_path / "b.bin"})
    assert got["a"]["sha256"] == hashlib.sha256(b"medlens").hexdigest() and got["a"]["bytes"] == 7
    assert got["b"] is None


def test_git_state_sees_a_dirty_tracked_file(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "f").write_text("2")
    assert git_state(tmp_path)["dirty"] is True
