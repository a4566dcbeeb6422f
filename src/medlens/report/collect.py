"""Reading everything one experiment produced into plain dicts the report template renders.

A value that is missing stays ``None`` and is shown as missing, never as zero.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from medlens.data.images import load_image
from medlens.data.prepare import read_prepared_summary

__all__ = ["collect_experiment", "dig", "summary_row", "thumbnail", "read_metrics_csv", "read_benchmark"]

logger = logging.getLogger(__name__)


def dig(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]...`` for ``path="a.b"``; None when any step is missing."""
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def thumbnail(src: Any, size: int = 160) -> str:
    """A data: URI of a small PNG (images are inlined so the page makes no request)."""
    img = load_image(src, grey=False)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """A training ``metrics.csv`` as rows of floats (empty cells dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                try:
                    parsed[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(parsed)
    return rows


def read_benchmark(path: str | os.PathLike) -> dict[str, Any] | None:
    """Wall time (s), peak RSS (MB) and finish time of one Snakemake ``benchmark:`` file."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return None
    row = rows[-1]

    def num(key: str) -> float | None:
        try:
            return float(row.get(key, ""))
        except ValueError:
            return None

    return {"seconds": num("s"), "max_rss_mb": num("max_rss"), "finished": os.path.getmtime(path)}


def _examples(generations: Path, chat_dir: Path, n: int) -> list[dict[str, Any]]:
    examples = []
    if not generations.is_file():
        return examples
    with open(generations, encoding="utf-8") as f:
        for line in f:
            if len(examples) >= n:
                break
            g = json.loads(line)
            image = chat_dir / g["image"]
            examples.append({**g, "thumbnail": thumbnail(image) if image.is_file() else None})
    return examples


def _image_strip(pairs: Path, n: int = 8) -> list[dict[str, Any]]:
    if not pairs.is_file():
        return []
    pf = pq.ParquetFile(pairs)
    rows = pf.read_row_group(0, columns=["id", "image", "labels"]).slice(0, n).to_pylist() if pf.num_row_groups else []
    return [{"id": r["id"], "labels": r["labels"], "thumbnail": thumbnail(r["image"], 120)} for r in rows]


def collect_experiment(name: str, files: dict[str, str], experiment: dict[str, Any], *,
                       n_examples: int = 6) -> dict[str, Any]:
    """Everything the report shows for one experiment.

    Args:
        name: the experiment name.
        files: paths of its outputs (split, pairs, chat, encoder, decoder, eval JSONs, prepared parquets,
            generations, benchmarks).
        experiment: the experiment's resolved configuration (``ExperimentConfig`` as a dict).
        n_examples: generated-vs-reference examples shown.
    """
    def load(key: str) -> Any:
        path = files.get(key)
        return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None

    prepared = []
    for path in files.get("prepared", []):
        summary = read_prepared_summary(path)
        summary.pop("config", None)
        prepared.append(summary)
    return {
        "name": name,
        "description": experiment.get("description", ""),
        "config": experiment,
        "datasets": experiment.get("datasets", []),
        "encoder_preset": dig(experiment, "encoder.preset"),
        "decoder_preset": dig(experiment, "decoder.preset"),
        "prepared": prepared,
        "split": load("split"),
        "encoder_eval": load("encoder_eval"),
        "decoder_eval": load("decoder_eval"),
        "encoder_curves": read_metrics_csv(Path(files["encoder"]) / "metrics.csv") if "encoder" in files else [],
        "decoder_curves": read_metrics_csv(Path(files["decoder"]) / "metrics.csv") if "decoder" in files else [],
        "examples": _examples(Path(files.get("generations", "")), Path(files.get("chat", "")), n_examples),
        "strip": _image_strip(Path(files.get("pairs", ""))),
        "benchmarks": {rule: read_benchmark(path) for rule, path in files.get("benchmarks", {}).items()},
    }


def summary_row(exp: dict[str, Any]) -> dict[str, Any]:
    """One paper-table row: what was trained on what, and its headline numbers (None when missing)."""
    enc, dec = exp.get("encoder_eval") or {}, exp.get("decoder_eval") or {}
    return {
        "experiment": exp["name"],
        "datasets": ", ".join(exp["datasets"]),
        "encoder": exp["encoder_preset"],
        "decoder": exp["decoder_preset"],
        "zero_shot_auc": dig(enc, "zero_shot.mean.auc"),
        "zero_shot_auc_ci_low": dig(enc, "zero_shot.mean.ci_low"),
        "zero_shot_auc_ci_high": dig(enc, "zero_shot.mean.ci_high"),
        "probe_auc_chexpert5": dig(enc, "linear_probe.chexpert5.mean.auc"),
        "probe_auc_chexpert14": dig(enc, "linear_probe.chexpert14.mean.auc"),
        "probe_auc_nih14": dig(enc, "linear_probe.nih14.mean.auc"),
        **{f"i2t_r@{k}": dig(enc, f"retrieval.image_to_text.recall@{k}.value") for k in (1, 5, 10)},
        **{f"t2i_r@{k}": dig(enc, f"retrieval.text_to_image.recall@{k}.value") for k in (1, 5, 10)},
        **{f"bleu{k}": dig(dec, f"overall.text.bleu{k}") for k in (1, 2, 3, 4)},
        "rouge_l": dig(dec, "overall.text.rouge_l"),
        "cider_d": dig(dec, "overall.text.cider_d"),
        "clinical_f1_micro_14": dig(dec, "overall.clinical.chexpert14.micro.f1"),
        "clinical_f1_macro_14": dig(dec, "overall.clinical.chexpert14.macro.f1"),
        "clinical_f1_micro_5": dig(dec, "overall.clinical.chexpert5.micro.f1"),
        "clinical_f1_macro_5": dig(dec, "overall.clinical.chexpert5.macro.f1"),
    }
