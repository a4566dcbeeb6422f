"""The ``results/`` layout, written once: every path the pipeline writes, as a template.

The rules name their outputs with these templates (``{dataset}`` and ``{experiment}`` are Snakemake
wildcards); the library finds one output from another it was given with :func:`in_experiment` and
:func:`prepared_beside`, never with a path of its own. Importing it costs nothing (the Snakefile reads it
while the DAG is built).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "RESULTS",
    "EXPERIMENT",
    "RAW",
    "RAW_MARKER",
    "PREPARED",
    "REJECTED",
    "PAIRS",
    "DROPPED",
    "SPLIT",
    "CHAT",
    "PREFETCHED",
    "PREFETCHED_METRICS",
    "ENCODER",
    "DECODER",
    "TOWER",
    "ENCODER_EVAL",
    "ENCODER_PER_LABEL",
    "ENCODER_ROC",
    "ZERO_SHOT_SCORES",
    "CLASS_PREDICTIONS",
    "PROBE_SCORES",
    "TOWER_PROBE_SCORES",
    "PROBE_PAIRS",
    "PROBE_DROPPED",
    "PROBE_SPLIT",
    "DECODER_EVAL",
    "GENERATIONS",
    "DECODER_PER_LABEL",
    "REXRANK",
    "REPORT_METRICS",
    "REPORT_METRIC_SCORES",
    "EXPERIMENT_REPORT",
    "HUB",
    "REPORT",
    "PAPER",
    "log",
    "benchmark",
    "in_experiment",
    "prepared_beside",
    "experiment_of",
    "SHARED_FOLDERS",
    "IN_A_FOLDER",
]

RESULTS = "results"
EXPERIMENT = f"{RESULTS}/{{experiment}}"

# datasets: shared by every experiment that names them
RAW = f"{RESULTS}/raw/{{dataset}}"
RAW_MARKER = f"{RAW}/.complete"
PREPARED = f"{RESULTS}/prepared/{{dataset}}.parquet"
REJECTED = f"{RESULTS}/prepared/{{dataset}}.rejected.csv"

# one experiment
PAIRS = f"{EXPERIMENT}/data/pairs.parquet"
DROPPED = f"{EXPERIMENT}/data/dropped.csv"
SPLIT = f"{EXPERIMENT}/data/split.json"
# a probe dataset (evaluate.probe_datasets) split on its own, for linear probes only
PROBE_PAIRS = f"{EXPERIMENT}/data/probe/{{dataset}}.parquet"
PROBE_DROPPED = f"{EXPERIMENT}/data/probe/{{dataset}}.dropped.csv"
PROBE_SPLIT = f"{EXPERIMENT}/data/probe/{{dataset}}.split.json"
CHAT = f"{EXPERIMENT}/data/chat"
PREFETCHED = f"{EXPERIMENT}/prefetched.json"
PREFETCHED_METRICS = f"{EXPERIMENT}/prefetched_metrics.json"  # the report metrics' weights
ENCODER = f"{EXPERIMENT}/encoder"
DECODER = f"{EXPERIMENT}/decoder"
TOWER = "encoder_final"  # inside a captioner folder: its image tower alone (seed 004's probe)
ENCODER_EVAL = f"{EXPERIMENT}/eval/encoder.json"
ENCODER_PER_LABEL = f"{EXPERIMENT}/eval/encoder_per_label.csv"
ENCODER_ROC = f"{EXPERIMENT}/eval/encoder_roc.csv"
ZERO_SHOT_SCORES = f"{EXPERIMENT}/eval/zero_shot_scores.csv"
CLASS_PREDICTIONS = f"{EXPERIMENT}/eval/class_predictions.csv"
PROBE_SCORES = f"{EXPERIMENT}/eval/probe_scores.csv"  # the encoder's linear probes, per row and label
DECODER_EVAL = f"{EXPERIMENT}/eval/decoder.json"
GENERATIONS = f"{EXPERIMENT}/eval/generations.jsonl"
DECODER_PER_LABEL = f"{EXPERIMENT}/eval/decoder_per_label.csv"
TOWER_PROBE_SCORES = f"{EXPERIMENT}/eval/tower_probe_scores.csv"  # a captioner's tower's probes, likewise
REXRANK = f"{EXPERIMENT}/eval/rexrank.json"
REPORT_METRICS = f"{EXPERIMENT}/eval/report_metrics.json"  # the field's report-generation metrics
REPORT_METRIC_SCORES = f"{EXPERIMENT}/eval/report_metric_scores.csv"  # their per-report scores
EXPERIMENT_REPORT = f"{EXPERIMENT}/report.html"
HUB = f"{EXPERIMENT}/hub/{{stage}}"  # a trained model's folder with its evaluation in its card, to share

# every experiment in `run`
REPORT = f"{RESULTS}/report.html"
PAPER = f"{RESULTS}/paper/{{table}}"  # summary.csv, summary.tex, differences.csv


def log(rule: str, name: str = "{experiment}") -> str:
    """A rule's log: ``results/logs/<rule>/<experiment or dataset>.log``."""
    return f"{RESULTS}/logs/{rule}/{name}.log"


def benchmark(rule: str, name: str = "{experiment}") -> str:
    """A rule's Snakemake benchmark (time and memory): ``results/benchmarks/<rule>/<name>.tsv``."""
    return f"{RESULTS}/benchmarks/{rule}/{name}.tsv"


# the entries of results/ that belong to no one experiment (every other one is an experiment's folder)
SHARED_FOLDERS = tuple(
    sorted({Path(t).parts[1] for t in (RAW, PREPARED, REPORT, PAPER, log("r"), benchmark("r"))})
)
# any path in any folder of results/: what rule reject_unknown_experiment matches in a folder of no experiment
IN_A_FOLDER = f"{RESULTS}/{{folder}}/{{path}}"


def in_experiment(experiment_dir: str | os.PathLike, template: str) -> Path:
    """Where ``template`` (an ``{experiment}`` path) is inside an experiment folder found on disk, wherever
    ``results/`` is: ``in_experiment(model.parent, PAIRS)``."""
    prefix = EXPERIMENT + "/"
    if not template.startswith(prefix):
        raise ValueError(f"'{template}' is not a path inside an experiment folder")
    return Path(experiment_dir) / template.removeprefix(prefix)


def experiment_of(path: str | os.PathLike, template: str) -> Path:
    """The experiment folder that holds ``path``, an output written at ``template`` (the inverse of
    :func:`in_experiment`)."""
    depth = len(Path(template.removeprefix(EXPERIMENT + "/")).parts)
    return Path(path).parents[depth - 1]


def prepared_beside(experiment_dir: str | os.PathLike, dataset: str) -> Path:
    """A dataset's prepared parquet, beside an experiment folder found on disk."""
    return Path(experiment_dir).parent / Path(PREPARED.format(dataset=dataset)).relative_to(RESULTS)
