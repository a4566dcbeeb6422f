"""Reading everything one experiment produced into plain dicts the report template renders.

A value that is missing stays ``None`` and is shown as missing, never as zero.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medlens.config import dig
from medlens.data.prepare import read_prepared_summary
from medlens.evaluate.report_metrics import headline_rows

__all__ = ["collect_experiment", "read_metrics_csv", "source_split_counts"]

logger = logging.getLogger(__name__)


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """A training ``metrics.csv`` as rows of floats; empty and non-finite cells are left out of their row."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(x):
                    parsed[k] = x
            rows.append(parsed)
    return rows


def source_split_counts(pairs: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Rows of ``pairs.parquet`` per source dataset and split: ``{dataset: {split: n}}``."""
    pairs = Path(pairs)
    if not pairs.is_file():
        return {}
    table = pq.read_table(pairs, columns=["dataset", "split"])
    counts = Counter(zip(table.column("dataset").to_pylist(), table.column("split").to_pylist(), strict=True))
    out: dict[str, dict[str, int]] = {}
    for (dataset, split), n in sorted(counts.items()):
        out.setdefault(dataset, {})[split] = n
    return out


def _load_json(path: str | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def collect_experiment(
    name: str, files: dict[str, Any], experiment: dict[str, Any], *, n_examples: int = 6
) -> dict[str, Any]:
    """Everything the report shows for one experiment.

    Args:
        name: the experiment name.
        files: paths of its outputs, as ``report_params`` in ``workflow/rules/common.smk`` lists them:
            ``prepared`` ({dataset: parquet}), ``pairs``, ``split``, ``chat``, ``encoder``, ``decoder``,
            ``encoder_eval``, ``decoder_eval``, ``generations``, ``benchmarks`` ({stage: tsv}) and
            ``logs`` ({stage: log}).
        experiment: the experiment's resolved configuration (``ExperimentConfig`` as a dict).
        n_examples: generated-vs-reference examples shown.

    Returns:
        A dict of plain values; whatever is absent is None or empty.
    """
    # long: one dict, one key per section of the report page
    from medlens.report.examples import generation_examples, image_strip, retrieval_examples
    from medlens.report.findings import learned_counts, learned_per_finding
    from medlens.report.provenance import (
        input_checksums,
        read_benchmark,
        seeds_of,
        stage_device,
        stage_environment,
    )

    prepared, dataset_seeds = [], {}
    for dataset, path in files.get("prepared", {}).items():
        summary = read_prepared_summary(path) if Path(path).is_file() else {}
        dataset_seeds.update(seeds_of(summary.pop("config", {}), f"datasets.{dataset}"))
        prepared.append(
            {
                "dataset": dataset,
                "read": summary.get("read"),
                "kept": summary.get("kept"),
                "rejected": summary.get("rejected"),
                "reasons": summary.get("reasons") or {},
            }
        )
    encoder_eval = _load_json(files.get("encoder_eval"))
    decoder_eval = _load_json(files.get("decoder_eval"))
    outputs = {
        "train_encoder": ("encoder", lambda p: _load_json(str(Path(p) / "medlens.json"))),
        "train_decoder": ("decoder", lambda p: _load_json(str(Path(p) / "medlens.json"))),
        "evaluate_encoder": ("encoder_eval", lambda p: encoder_eval),
        "evaluate_decoder": ("decoder_eval", lambda p: decoder_eval),
    }
    # the environment each stage ran in, as it recorded it (stages may have run on other machines)
    environments = {
        stage: stage_environment(read(files[key])) for stage, (key, read) in outputs.items() if key in files
    }
    pairs = files.get("pairs", "")
    logs = files.get("logs", {})
    findings = learned_per_finding(encoder_eval, decoder_eval)
    report_metrics = _load_json(files.get("report_metrics"))
    return {
        "name": name,
        "title": (experiment.get("report") or {}).get("title") or name,
        "description": experiment.get("description", ""),
        "config": experiment,
        "stages": experiment.get("stages") or ["encoder", "decoder"],
        "datasets": experiment.get("datasets", []),
        "encoder_preset": dig(experiment, "encoder.preset"),
        "decoder_preset": dig(experiment, "decoder.preset"),
        "prepared": prepared,
        "source_split_counts": source_split_counts(pairs),
        "split": _load_json(files.get("split")),
        "encoder_eval": encoder_eval,
        "decoder_eval": decoder_eval,
        # what the paired comparison between experiments reads (medlens.report.compare)
        "paired_inputs": {
            k: files.get(k)
            for k in (
                "zero_shot_scores",
                "class_predictions",
                "probe_scores",
                "tower_probe_scores",
                "generations",
                "pairs",
                "report_metric_scores",
            )
        },
        "rexrank": {"path": files["rexrank"], "studies": len(_load_json(files["rexrank"]) or {})}
        if "rexrank" in files
        else None,
        "report_metrics": headline_rows(report_metrics),
        "report_metrics_eval": report_metrics,
        "report_metrics_scope": (report_metrics or {}).get("scope"),
        "findings": findings,
        "findings_counts": learned_counts(findings),
        "environments": environments,
        "encoder_curves": read_metrics_csv(Path(files["encoder"]) / "metrics.csv")
        if "encoder" in files
        else [],
        "decoder_curves": read_metrics_csv(Path(files["decoder"]) / "metrics.csv")
        if "decoder" in files
        else [],
        "examples": generation_examples(files.get("generations", ""), files.get("chat", ""), n_examples),
        "retrieval_examples": retrieval_examples(encoder_eval, pairs),
        "strip": image_strip(pairs),
        "benchmarks": {
            stage: {
                **(read_benchmark(path) or {"missing": True}),
                "device": stage_device(logs[stage]) if stage in logs else None,
            }
            for stage, path in files.get("benchmarks", {}).items()
        },
        "seeds": {**seeds_of(experiment), **dataset_seeds},
        "checksums": input_checksums(
            {**{f"prepared/{d}": p for d, p in files.get("prepared", {}).items()}, "pairs": pairs}
        ),
    }
