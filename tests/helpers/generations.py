"""A scoring job's inputs (pairs.parquet, generations.jsonl) and a Python subprocess to run it in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from medlens.data.schema import PAIRS_SCHEMA


def write_generations(tmp_path, rows):
    """pairs.parquet and generations.jsonl of (id, modality, text_source, reference, generated) rows."""
    table = [
        {
            "id": rid,
            "dataset": "d",
            "patient_id": "p",
            "study_id": rid,
            "image": b"x",
            "width": 1,
            "height": 1,
            "modality": modality,
            "view": None,
            "text": ref,
            "text_source": source,
            "labels": [],
            "meta": "{}",
            "split": "test",
        }
        for rid, modality, source, ref, _ in rows
    ]
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(table, schema=PAIRS_SCHEMA), pairs)
    generations = tmp_path / "generations.jsonl"
    generations.write_text(
        "".join(json.dumps({"id": r[0], "reference": r[3], "generated": r[4]}) + "\n" for r in rows)
    )
    return generations, pairs


def run_python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    """In a subprocess: huggingface_hub and appdirs read HF_HOME, HF_ENDPOINT, XDG_CACHE_HOME at import."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def prefetch_from_stand_in_hub(tmp_path, repos: dict, metrics: list[str]) -> tuple[dict, list[dict]]:
    """``prefetch_metrics`` of ``metrics`` in a subprocess, from a stand-in hub serving ``repos`` (Hub name ->
    folder), into fresh caches under ``tmp_path``: the caches' environment, for the scoring job, and the
    records it wrote."""
    from helpers.stand_in_hub import StandInHub

    caches = {"HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    fetch = (
        "import sys, json; from medlens.evaluate.metric_weights import prefetch_metrics;"
        "prefetch_metrics(json.loads(sys.argv[1]), sys.argv[2])"
    )
    records = tmp_path / "prefetched.json"
    with StandInHub(repos) as hub:
        env = {**caches, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        run_python(fetch, env, json.dumps(metrics), str(records))
    return caches, json.loads(records.read_text())
