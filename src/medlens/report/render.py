"""``report``: render ``results/report.html`` (every experiment in ``run``), one page per experiment,
and the paper table as CSV and LaTeX.

Pages are single self-contained files (styles, plots and thumbnails inline), rendered with jinja2
autoescaping so text from datasets or generations can never become markup.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import logging
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml

from medlens import __version__
from medlens.io import atomic_path
from medlens.report.collect import dig, summary_row
from medlens.report.plots import line_plot, roc_plot
from medlens.resources import resource_path

__all__ = ["build_report", "write_report", "provenance", "write_paper_tables", "SUMMARY_COLUMNS"]

logger = logging.getLogger(__name__)

# (key in summary_row, column title) in paper order
SUMMARY_COLUMNS = [
    ("experiment", "Experiment"), ("datasets", "Data"), ("encoder", "Encoder"), ("decoder", "Decoder"),
    ("zero_shot_auc", "Zero-shot AUC"), ("probe_auc_chexpert5", "Probe AUC (CheXpert-5)"),
    ("probe_auc_nih14", "Probe AUC (NIH-14)"),
    ("i2t_r@1", "R@1"), ("i2t_r@5", "R@5"), ("i2t_r@10", "R@10"),
    ("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"),
    ("rouge_l", "ROUGE-L"), ("cider_d", "CIDEr-D"),
    ("clinical_f1_micro_14", "F1 micro-14"), ("clinical_f1_macro_14", "F1 macro-14"),
    ("clinical_f1_micro_5", "F1 micro-5"), ("clinical_f1_macro_5", "F1 macro-5"),
]
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_PACKAGES = ("torch", "torchvision", "open_clip_torch", "timm", "transformers", "peft", "accelerate", "snakemake",
             "polars", "pyarrow", "scikit-learn", "sacrebleu", "rouge-score", "numpy", "pillow")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Who made the numbers: medlens version and commit (dirty flag), Python, packages, hardware."""
    import torch

    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"medlens": __version__, "commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "gpus": gpu,
            "packages": packages, "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _plots(exp: dict[str, Any]) -> dict[str, str]:
    plots: dict[str, str] = {}
    for stage in ("encoder", "decoder"):
        rows = exp.get(f"{stage}_curves") or []
        for key, title in (("train/loss", "training loss"), ("val/loss", "validation loss"), ("lr", "learning rate"),
                           ("logit_scale", "logit scale (1/temperature)"), ("val/zero_shot_auc", "val zero-shot AUC")):
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if pts:
                x, y = zip(*pts, strict=True)
                plots[f"{stage}:{key}"] = line_plot({key: (x, y)}, title=f"{stage}: {title}")
    per_label = dig(exp.get("encoder_eval") or {}, "zero_shot.per_label") or {}
    curves = {lab: (row["fpr"], row["tpr"], row.get("auc")) for lab, row in per_label.items()
              if row.get("fpr") and row.get("tpr")}
    if curves:
        plots["roc"] = roc_plot(curves, title="zero-shot ROC (test split)")
    return plots


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_path("report"))),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["yaml"] = lambda obj: yaml.safe_dump(obj, sort_keys=False, width=100)
    env.globals["dig"] = dig
    return env


def write_paper_tables(rows: Sequence[dict[str, Any]], out_csv: str | os.PathLike, out_tex: str | os.PathLike) -> None:
    """The summary table as CSV (full precision) and as a LaTeX tabular (3 decimals, missing as --)."""
    keys = [k for k, _ in SUMMARY_COLUMNS] + ["zero_shot_auc_ci_low", "zero_shot_auc_ci_high"]
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def tex(value: Any) -> str:
        if value is None:
            return "--"
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return re.sub(r"[\\&%_#${}~^]", lambda m: _TEX_ESCAPES[m.group()], text)  # one pass: escapes stay intact

    lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(SUMMARY_COLUMNS) - 4) + "}", r"\toprule",
             " & ".join(tex(t) for _, t in SUMMARY_COLUMNS) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(row.get(k)) for k, _ in SUMMARY_COLUMNS) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    with atomic_path(out_tex) as tmp:
        tmp.write_text("% generated by medlens; regenerate with snakemake results/report.html\n" + "\n".join(lines) + "\n")


def write_report(experiments: Sequence[dict[str, Any]], *, out_html: str | os.PathLike,
                 out_pages: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
                 out_tex: str | os.PathLike) -> None:
    """Render the overview page, one page per experiment and the paper tables.

    Args:
        experiments: ``collect_experiment`` results, in ``run`` order.
        out_html: ``results/report.html``.
        out_pages: ``results/{experiment}/report.html`` for each experiment, same order.
        out_csv, out_tex: ``results/paper/summary.{csv,tex}``.
    """
    env = _environment()
    prov = provenance()
    rows = [summary_row(e) for e in experiments]
    for exp in experiments:
        exp["plots"] = _plots(exp)
    template = env.get_template("report.html.j2")
    context = {"provenance": prov, "columns": SUMMARY_COLUMNS, "rows": rows}
    for exp, row, page in zip(experiments, rows, out_pages, strict=True):
        with atomic_path(page) as tmp:
            tmp.write_text(template.render(title=f"medlens: {exp['name']}", experiments=[exp], **{**context,
                                           "rows": [row]}))
    with atomic_path(out_html) as tmp:
        tmp.write_text(template.render(title="medlens report", experiments=list(experiments), **context))
    write_paper_tables(rows, out_csv, out_tex)
    logger.info("report written for %d experiments: %s", len(experiments), out_html)


def build_report(experiments: dict[str, dict[str, Any]], *, out_html: str | os.PathLike,
                 out_pages: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
                 out_tex: str | os.PathLike) -> None:
    """Collect every experiment's outputs and write the report (the ``report`` rule's one call).

    Args:
        experiments: ``{name: {"config": resolved config, "files": paths of its outputs}}`` in ``run`` order.
    """
    from medlens.report.collect import collect_experiment

    collected = [collect_experiment(name, spec["files"], spec["config"],
                                    n_examples=spec["config"].get("report", {}).get("examples", 6))
                 for name, spec in experiments.items()]
    write_report(collected, out_html=out_html, out_pages=out_pages, out_csv=out_csv, out_tex=out_tex)
