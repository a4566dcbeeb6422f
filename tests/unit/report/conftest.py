"""Fabricated experiment outputs (no training) in the layouts the report reads, for report tests."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medlens.data.prepare import SUMMARY_KEY
from medlens.data.schema import PAIRS_SCHEMA, PREPARED_SCHEMA

LOCK = {
    "lock": "requirements.lock",
    "lock_sha256": "a" * 64,
    "matches_lock": True,
    "differences": {"missing": [], "different": [], "extra": []},
    "python": "3.x",
}
_ENV_INFO = {
    "medlens": "0.1.0",
    "commit": "0" * 40,
    "dirty": False,
    "python": "3.x",
    "platform": "test",
    "host": "test",
    "cpu": "test CPU",
    "cpu_count": 2,
    "memory_gib": 1.0,
    "gpus": [],
    "slurm_job": None,
    "packages": {"torch": "2.x"},
    "lock": LOCK,
    "generated": "2026-01-01 00:00 UTC",
}


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), value).save(buf, format="PNG")
    return buf.getvalue()


def encoder_eval(
    n: int, *, zero_shot_auc: float, labels: dict[str, str], probe: float | None
) -> dict[str, Any]:
    """An ``eval/encoder.json`` of ``n`` test rows: one AUC per label, recall@1/5/10, retrieval examples."""
    per_label = {
        label: {
            "auc": 0.7,
            "ci_low": 0.6,
            "ci_high": 0.8,
            "fpr": [0.0, 0.5, 1.0],
            "tpr": [0.0, 0.8, 1.0],
            "n_pos": 2,
            "n_neg": n - 2,
            "reason": None,
        }
        for label in labels
    }
    recall = {
        f"recall@{k}": {"value": v, "ci_low": v / 2, "ci_high": min(1.0, v * 1.5)}
        for k, v in ((1, 0.25), (5, 0.5), (10, 0.75))
    }
    example = {
        "query": 1,
        "top": [0, 1, 2],
        "scores": [0.9, 0.8, 0.1],
        "positives": [1],
        "n_positives": 1,
        "rank": 2,
    }
    result = {
        "split": "test",
        "n": n,
        "zero_shot": {
            "per_label": per_label,
            "mean": {"auc": zero_shot_auc, "ci_low": zero_shot_auc - 0.1, "ci_high": zero_shot_auc + 0.1},
        },
        "retrieval": {
            "protocol": {"ks": [1, 5, 10], "n_queries": n},
            "image_to_text": recall,
            "text_to_image": recall,
            "examples": {"image_to_text": [example], "text_to_image": [example]},
        },
        "external": {},
        "protocol": {"config": {"max_samples": None, "seed": 0}},
    }
    if probe is not None:
        result["linear_probe"] = {
            "chexpert5": {
                "mean": {
                    "auc": probe,
                    "ci_low": probe - 0.05,
                    "ci_high": probe + 0.05,
                    "labels": list(labels),
                },
                "protocol": {"chosen_c": 1.0},
            }
        }
    return result


def decoder_eval(n: int, *, bleu4: float | None, f1: float) -> dict[str, Any]:
    """An ``eval/decoder.json``; ``bleu4=None`` leaves BLEU-4 out, as an evaluation that could not compute it."""
    text = {"bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "rouge_l": 0.35, "cider_d": 0.5}
    if bleu4 is not None:
        text["bleu4"] = bleu4
    clinical = {
        s: {
            "micro": {"f1": f1, "precision": 0.5, "recall": 0.5},
            "macro": {"f1": f1 / 2},
            "macro_all": {"f1": f1 / 3},
            "exact_match": 0.1,
        }
        for s in ("chexpert14", "chexpert5")
    }
    return {
        "split": "test",
        "n": n,
        "overall": {"n": n, "text": text, "clinical": clinical},
        "per_dataset": {},
        "protocol": {"decoding": {"num_beams": 1}},
    }


@pytest.fixture
def make_experiment(tmp_path):
    """make(name, texts=..., labels=..., **metrics) -> (files, config), as ``report_params`` gives them."""

    def make(
        name: str,
        *,
        texts: list[str] | None = None,
        labels: dict[str, str] | None = None,
        zero_shot_auc: float = 0.75,
        probe: float | None = 0.8,
        bleu4: float | None = 0.1,
        f1: float = 0.3,
        seed_claims: str | None = None,
        environment: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        root = tmp_path / name
        (root / "data" / "chat" / "images").mkdir(parents=True)
        (root / "eval").mkdir()
        texts = texts or [
            "The heart is enlarged.",
            "No pleural effusion.",
            "Normal chest.",
            "Small effusion.",
        ]
        labels = labels or {"Cardiomegaly": "Cardiomegaly", "Pleural Effusion": "Pleural Effusion"}
        label_names = list(labels)
        rows = [
            {
                "id": f"{name}/{i}",
                "dataset": "toy",
                "patient_id": f"p{i}",
                "study_id": None,
                "image": _png(40 * i),
                "width": 16,
                "height": 16,
                "modality": "chest_xray",
                "view": "PA",
                "text": t,
                "text_source": "report",
                "labels": [label_names[i % len(label_names)]],
                "meta": "{}",
                "split": "train" if i == 0 else "test",
            }
            for i, t in enumerate(texts)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), root / "data" / "pairs.parquet")
        prepared = pa.Table.from_pylist(
            [{k: v for k, v in r.items() if k != "split"} for r in rows], schema=PREPARED_SCHEMA
        )
        summary = {
            "read": len(rows) + 1,
            "kept": len(rows),
            "rejected": 1,
            "reasons": {"unreadable image": 1},
            "config": {"seed": 3},
        }
        pq.write_table(
            prepared.replace_schema_metadata({SUMMARY_KEY: json.dumps(summary)}), root / "toy.parquet"
        )
        test = [r for r in rows if r["split"] == "test"]
        (root / "data" / "split.json").write_text(
            json.dumps(
                {
                    "rows_per_split": {"train": 1, "val": 0, "test": len(test)},
                    "patients": len(rows),
                    "dropped": 0,
                    "dropped_classes": [],
                    "labels_per_split": {"train": {label_names[0]: 1}, "test": {label_names[1]: 1}},
                }
            )
        )
        # what each stage records of its environment (medlens.environment.record)
        env = {**LOCK, "packages": {"torch": "2.x"}, **(environment or {})}
        (root / "eval" / "encoder.json").write_text(
            json.dumps(
                {
                    **encoder_eval(len(test), zero_shot_auc=zero_shot_auc, labels=labels, probe=probe),
                    "environment": env,
                }
            )
        )
        (root / "eval" / "decoder.json").write_text(
            json.dumps({**decoder_eval(len(test), bleu4=bleu4, f1=f1), "environment": env})
        )
        with open(root / "eval" / "generations.jsonl", "w", encoding="utf-8") as f:
            for i, r in enumerate(test):
                image = f"images/{i}.png"
                (root / "data" / "chat" / image).write_bytes(r["image"])
                f.write(
                    json.dumps(
                        {
                            "id": r["id"],
                            "dataset": "toy",
                            "image": image,
                            "reference": r["text"],
                            "generated": f"generated {i}: {r['text']}",
                        }
                    )
                    + "\n"
                )
        for stage in ("encoder", "decoder"):
            (root / stage).mkdir()
            (root / stage / "medlens.json").write_text(json.dumps({"environment": env}))
            (root / stage / "metrics.csv").write_text(
                "step,train/loss,lr,logit_scale,val/loss\n1,11.0,0.001,14.3,\n2,6.0,0.0005,14.5,5.5\n3,4.0,0.0001,,\n"
            )
        bench = root / "bench.tsv"
        bench.write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            "12.5\t0:00:12\t300.5\t1\t1\t1\t0\t0\t50\t6.25\n"
        )
        files = {
            "prepared": {"toy": str(root / "toy.parquet")},
            "pairs": str(root / "data" / "pairs.parquet"),
            "split": str(root / "data" / "split.json"),
            "chat": str(root / "data" / "chat"),
            "encoder": str(root / "encoder"),
            "decoder": str(root / "decoder"),
            "encoder_eval": str(root / "eval" / "encoder.json"),
            "decoder_eval": str(root / "eval" / "decoder.json"),
            "generations": str(root / "eval" / "generations.jsonl"),
            "benchmarks": {"train_encoder": str(bench), "train_decoder": str(root / "absent.tsv")},
            "logs": {"train_encoder": str(root / "absent.log")},
        }
        config = {
            "datasets": ["toy"],
            "description": f"experiment {name}",
            "seed": 0,
            "encoder": {"preset": "tiny", "seed": 1},
            "decoder": {"preset": "tiny_captioner"},
            "report": {"title": None, "examples": 6, "seed_claims": seed_claims},
        }
        return files, config

    return make


@pytest.fixture
def env_info() -> dict[str, Any]:
    """The build environment given to write_report, so that no test imports torch or runs git."""
    return dict(_ENV_INFO)
