"""Where the report's numbers come from: code version, environment, hardware, seeds, input checksums,
and each stage's wall time, peak memory, device and finish time.

Anything that cannot be read stays ``None`` and is shown as unknown, never guessed.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medlens import __version__
from medlens import environment as python_environment
from medlens.io import sha256_file

__all__ = [
    "environment",
    "git_state",
    "read_benchmark",
    "stage_device",
    "input_checksums",
    "seeds_of",
    "stage_environment",
    "lock_warnings",
    "PACKAGES",
]

# the packages named first in the report; every other installed one follows
PACKAGES = (
    "torch",
    "torchvision",
    "open-clip-torch",
    "timm",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "snakemake",
    "polars",
    "pyarrow",
    "numpy",
    "pillow",
    "scikit-learn",
    "sacrebleu",
    "rouge-score",
    "pycocoevalcap",
    "matplotlib",
    "jinja2",
)
# the source checkout medlens runs from (an editable install); the pipeline's working directory may be elsewhere
_REPO = Path(__file__).resolve().parents[3]
# what medlens.train logs once at start: "device cuda:0, precision bf16, 4 process(es)" (encoder),
# "device cpu; precision fp32" (decoder)
_DEVICE_LINE = re.compile(r"device ([^\s,;]+)[,;] precision ([^\s,;]+)(?:, (\d+) process)?")


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def git_state(repo: str | os.PathLike = _REPO) -> dict[str, Any]:
    """Commit of the medlens checkout and whether tracked files differ from it (None when not a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
        for i in range(torch.cuda.device_count())
    ]


def environment() -> dict[str, Any]:
    """The code and machine the report was built with (training may have run elsewhere: see stage devices).

    ``packages`` is every installed distribution with its version (the main ones first) and ``lock`` the
    lock this environment was installed from and how the environment departs from it
    (:func:`medlens.environment.record`).
    """
    rec = python_environment.record()
    installed = rec.pop("packages")
    packages = {name: installed.get(name) for name in PACKAGES}
    packages.update((name, version) for name, version in installed.items() if name not in packages)
    return {
        "medlens": __version__,
        **git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node() or None,
        "cpu": rec["machine"]["cpu"],
        "cpu_id": rec["machine"]["cpu_id"],
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "packages": packages,
        "lock": rec,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def stage_environment(output: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``environment`` a stage recorded in its output (a model's ``medlens.json``, an ``eval/*.json``),
    without the package list; None when the output is absent or older than the record."""
    rec = (output or {}).get("environment")
    if not isinstance(rec, Mapping):
        return None
    keys = ("lock", "lock_sha256", "matches_lock", "differences", "python", "machine")
    return {k: rec.get(k) for k in keys} | {"n_packages": len(rec.get("packages") or {})}


def lock_warnings(report_env: Mapping[str, Any], experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the report's numbers may not come from its locked environment: each stage (and the report
    itself) that ran with packages differing from its lock, with another lock, or without a record."""
    own = report_env.get("lock") or {}
    warnings = []
    if not own.get("lock"):
        warnings.append("the report was built in an environment with no lock (install with make venv)")
    elif not own.get("matches_lock"):
        warnings.append(
            "the report was built with packages that differ from its lock: "
            + "; ".join(_difference_lines(own.get("differences")))
        )
    for exp in experiments:
        for stage, rec in (exp.get("environments") or {}).items():
            where = f"{exp['name']}: {stage}"
            if rec is None:
                warnings.append(f"{where} recorded no environment (written by an older medlens; rerun it)")
            elif not rec.get("lock"):
                warnings.append(f"{where} ran in an environment with no lock")
            elif not rec.get("matches_lock"):
                warnings.append(
                    f"{where} ran with packages that differ from its lock: "
                    + "; ".join(_difference_lines(rec.get("differences")))
                )
            elif own.get("lock_sha256") and rec.get("lock_sha256") != own["lock_sha256"]:
                warnings.append(
                    f"{where} ran from another lock (sha256 {str(rec.get('lock_sha256'))[:12]}, "
                    f"this report's is {own['lock_sha256'][:12]})"
                )
    return warnings


def _difference_lines(differences: Mapping[str, Any] | None) -> list[str]:
    d = differences or {}
    return python_environment.LockDifferences(
        d.get("missing") or [], d.get("different") or [], d.get("extra") or []
    ).lines()


def read_benchmark(path: str | os.PathLike) -> dict[str, Any] | None:
    """Wall time (s), CPU time (s), peak RSS (MB) and finish time of one Snakemake ``benchmark:`` file.

    Returns:
        None when the file does not exist or holds no row; a field is None when its cell is not a number
        (Snakemake writes ``-`` when it could not measure).
    """
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return None
    row = rows[-1]  # with `repeat`, the last run

    def num(key: str) -> float | None:
        try:
            return float(row.get(key) or "")
        except ValueError:
            return None

    return {
        "seconds": num("s"),
        "cpu_seconds": num("cpu_time"),
        "max_rss_mb": num("max_rss"),
        "finished": _iso(path.stat().st_mtime),
    }


def stage_device(log_path: str | os.PathLike) -> str | None:
    """``cuda:0, bf16, 4 process(es)`` from a training log's start line, or None when the log has none."""
    path = Path(log_path)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _DEVICE_LINE.search(line)
            if m:
                device, precision, processes = m.groups()
                return f"{device}, {precision}" + (f", {processes} process(es)" if processes else "")
    return None


def input_checksums(paths: Mapping[str, str | os.PathLike]) -> dict[str, dict[str, Any] | None]:
    """SHA-256 and size of each input file (``{name: path}``); None for one that does not exist."""
    out: dict[str, dict[str, Any] | None] = {}
    for name, path in paths.items():
        p = Path(path)
        out[name] = (
            {"path": str(path), "sha256": sha256_file(p), "bytes": p.stat().st_size} if p.is_file() else None
        )
    return out


def seeds_of(config: Any, prefix: str = "") -> dict[str, int]:
    """Every ``seed`` setting in a resolved config, by dotted key (``encoder.seed``, ``evaluate.seed``...)."""
    found: dict[str, int] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "seed" and isinstance(value, int) and not isinstance(value, bool):
                found[path] = value
            else:
                found.update(seeds_of(value, path))
    return found
