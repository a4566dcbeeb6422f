"""``medlens info``: what an experiment folder holds, read from its files; missing stages shown as missing."""

from __future__ import annotations

import json
import shutil

import pytest

from medlens.errors import ConfigError
from medlens.inference.info import format_summary, summarise_experiment


@pytest.fixture
def exp(experiment, tmp_path):
    """A copy of the session experiment (these tests add files to it) with split, eval and a benchmark."""
    exp = tmp_path / "results" / "exp"
    shutil.copytree(experiment, exp)
    (exp / "data" / "split.json").write_text(
        json.dumps({"rows_per_split": {"train": 14, "val": 3, "test": 3}, "patients": 20, "dropped": 0})
    )
    (exp / "encoder" / "metrics.csv").write_text("step,train/loss,val/loss\n1,2.0,\n2,1.8,1.5\n")
    (exp / "eval").mkdir()
    (exp / "eval" / "encoder.json").write_text(
        json.dumps(
            {
                "split": "test",
                "n": 3,
                "protocol": {"templates": "report"},
                "zero_shot": {"mean": {"auc": 0.71, "ci_low": 0.6, "ci_high": 0.8}},
                "retrieval": {
                    "image_to_text": {"recall@1": {"value": 0.25}, "mean_rank": 2.0},
                    "text_to_image": {"recall@1": {"value": 0.5}},
                },
                "linear_probe": {"chexpert5": {"mean": {"auc": 0.9, "ci_low": 0.85, "ci_high": 0.95}}},
                "external": {"ext": {"zero_shot": {"mean": {"auc": 0.55, "ci_low": 0.5, "ci_high": 0.6}}}},
            }
        )
    )
    bench = tmp_path / "results" / "benchmarks" / "train_encoder"
    bench.mkdir(parents=True)
    (bench / "exp.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t900\n")
    return exp


def test_summary_reads_config_metrics_checkpoints_and_sizes(exp):
    from safetensors.torch import load_file

    summary = summarise_experiment(exp)
    enc = summary["encoder"]
    weights = load_file(exp / "encoder" / "open_clip_model.safetensors")
    assert enc["checkpoints"] == [
        {
            "file": "open_clip_model.safetensors",
            "bytes": (exp / "encoder" / "open_clip_model.safetensors").stat().st_size,
            "parameters": sum(t.numel() for t in weights.values()),
        }
    ]
    assert (enc["steps"], enc["best_value"], enc["config"]) == (3, 1.5, {"preset": "tiny"})
    assert enc["last_metrics"] == {"step": 2.0, "train/loss": 1.8, "val/loss": 1.5}
    assert summary["decoder"] is None
    ev = summary["evaluation"]["encoder"]
    assert ev["zero_shot_auc"] == {"auc": 0.71, "ci_low": 0.6, "ci_high": 0.8}
    assert ev["retrieval"] == {"image_to_text": {"recall@1": 0.25}, "text_to_image": {"recall@1": 0.5}}
    assert (
        ev["linear_probe_auc"]["chexpert5"]["auc"] == 0.9
        and ev["external_zero_shot_auc"]["ext"]["auc"] == 0.55
    )
    assert summary["benchmarks"]["train_encoder"] == {"s": 12.5, "max_rss": 900.0}
    assert summary["bytes"] > enc["bytes"] > enc["checkpoints"][0]["bytes"]


def test_text_shows_the_numbers_and_says_what_is_missing(exp):
    text = format_summary(summarise_experiment(exp))
    assert "data: {'train': 14, 'val': 3, 'test': 3} rows per split, 20 patients" in text
    assert "3 steps; best val/loss = 1.5 at step 2" in text
    assert "zero-shot AUC 0.710 [0.600, 0.800]" in text and "linear probe chexpert5: AUC 0.900" in text
    assert "decoder: not trained" in text and "decoder evaluation: missing" in text
    assert "train_encoder 12.5 s" in text


def test_a_folder_that_is_no_experiment_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not an experiment folder"):
        summarise_experiment(tmp_path)


def test_info_names_each_stage_lock_and_every_package_that_produced_the_numbers(exp):
    from medlens.environment import record

    rec = record()
    info = json.loads((exp / "encoder" / "medlens.json").read_text())
    (exp / "encoder" / "medlens.json").write_text(json.dumps({**info, "environment": rec}))
    drifted = {
        **rec,
        "matches_lock": False,
        "differences": {
            "missing": ["numpy"],
            "different": [],
            "extra": [{"name": "kernels", "installed": "1"}],
        },
    }
    enc_eval = json.loads((exp / "eval" / "encoder.json").read_text())
    (exp / "eval" / "encoder.json").write_text(json.dumps({**enc_eval, "environment": drifted}))
    summary = summarise_experiment(exp)
    assert summary["environments"]["train_encoder"]["packages"]["torch"] == rec["packages"]["torch"]
    text = format_summary(summary)
    assert f"environment of train_encoder: lock {rec['lock']} sha256 {rec['lock_sha256'][:12]}" in text
    machine = rec["machine"]
    assert (
        f"  ran on {machine['host']}: {machine['cpu']} ({machine['cpu_id']})" in text
    )  # where numbers can move
    assert (
        "environment of evaluate_encoder: lock" in text
        and "DIFFERING FROM THE LOCK: numpy locked, not installed; kernels 1 installed, not in the lock"
        in text
    )
    assert "environment of train_decoder: not recorded" in text
    packages = next(line for line in text.splitlines() if line.startswith("packages of train_encoder: "))
    assert f"torch=={rec['packages']['torch']}" in packages and packages.count("==") == len(rec["packages"])
