"""``report``: render ``results/report.html`` (every experiment in ``run``), one page per experiment,
and the paper table as CSV and LaTeX.

Pages are single self-contained files (styles, plots and thumbnails inline, no script) rendered with
jinja2 autoescaping, so text from datasets or generations can never become markup.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import jinja2
import yaml

from medlens.config import dig
from medlens.environment import describe_machine
from medlens.io import atomic_path
from medlens.report.claims import compare_claims, load_seed_claims
from medlens.report.collect import collect_experiment
from medlens.report.compare import experiment_differences, write_differences
from medlens.report.plots import line_plot, roc_plot
from medlens.report.provenance import environment, lock_warnings
from medlens.report.tables import (
    SUMMARY_COLUMNS,
    SUMMARY_TABLES,
    summary_row,
    write_paper_tables,
)
from medlens.resources import resource_path

__all__ = ["build_report", "write_report", "curve_plots"]

logger = logging.getLogger(__name__)

# (plot name, metrics.csv columns drawn together, title); a plot with no logged column is left out
_CURVES = [
    ("loss", ("train/loss", "val/loss"), "loss"),
    ("lr", ("lr",), "learning rate"),
    ("temperature", ("temperature",), "temperature (1 / logit scale)"),
    ("logit_bias", ("logit_bias",), "logit bias"),
    ("grad_norm", ("grad_norm",), "gradient norm"),
]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def curve_plots(stage: str, rows: Sequence[dict[str, float]]) -> dict[str, str]:
    """Training curves of one stage's ``metrics.csv`` rows against step, as inline SVGs by name."""
    rows = [{**r, "temperature": 1.0 / r["logit_scale"]} if r.get("logit_scale") else r for r in rows]
    val_metrics = sorted({k for r in rows for k in r if k.startswith("val/") and k != "val/loss"})
    plots = {}
    for name, columns, title in [*_CURVES, ("validation", tuple(val_metrics), "validation metrics")]:
        series = {}
        for col in columns:
            pts = [(r["step"], r[col]) for r in rows if col in r and "step" in r]
            if pts:
                series[col] = tuple(zip(*pts, strict=True))
        if series:
            plots[name] = line_plot(
                series,
                title=f"{stage}: {title}",
                log_y=name == "lr" and min(y for _, ys in series.values() for y in ys) > 0,
            )
    return plots


def _plots(exp: dict[str, Any]) -> dict[str, dict[str, str]]:
    plots = {stage: curve_plots(stage, exp.get(f"{stage}_curves") or []) for stage in ("encoder", "decoder")}
    per_label = dig(exp.get("encoder_eval") or {}, "zero_shot.per_label") or {}
    curves = {
        lab: (row["fpr"], row["tpr"], row.get("auc"))
        for lab, row in per_label.items()
        if row.get("fpr") and row.get("tpr")
    }
    split = dig(exp.get("encoder_eval") or {}, "split") or "evaluation"
    plots["roc"] = {"zero_shot": roc_plot(curves, title=f"zero-shot ROC ({split} split)")} if curves else {}
    return plots


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_path("report"))),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["yaml"] = lambda obj: yaml.safe_dump(obj, sort_keys=False, width=100, allow_unicode=True)
    env.globals["dig"] = dig
    env.filters["machine"] = describe_machine  # one wording for the report and medlens info
    return env


def write_report(
    experiments: Sequence[dict[str, Any]],
    *,
    out_pages: Sequence[str | os.PathLike],
    out_html: str | os.PathLike | None = None,
    out_csv: str | os.PathLike | None = None,
    out_tex: str | os.PathLike | None = None,
    out_differences: str | os.PathLike | None = None,
    env_info: dict[str, Any] | None = None,
) -> None:
    """Render the overview page, one page per experiment and the paper tables.

    Args:
        experiments: ``collect_experiment`` results in ``run`` order, each with ``seed_claims`` (the
            ``load_seed_claims`` entry or None).
        out_pages: ``results/{experiment}/report.html`` for each experiment, same order.
        out_html: ``results/report.html``; None writes no overview (one experiment's page alone).
        out_csv: ``results/paper/summary.csv``; None writes no paper table.
        out_tex: ``results/paper/summary.tex``; None writes no paper table.
        out_differences: ``results/paper/differences.csv``, the paired differences between every two
            experiments (:mod:`medlens.report.compare`); None computes none.
        env_info: the build environment; :func:`~medlens.report.provenance.environment` when None.
    """
    template = _environment().get_template("report.html.j2")
    context = {
        "provenance": env_info if env_info is not None else environment(),
        "columns": SUMMARY_COLUMNS,
        "summary_tables": SUMMARY_TABLES,
    }
    rows = [summary_row(e) for e in experiments]
    for exp in experiments:
        exp["plots"] = _plots(exp)
        claims = exp.get("seed_claims")
        exp["claims"] = compare_claims(claims, exp) if claims else None
    for exp, row, page in zip(experiments, rows, out_pages, strict=True):
        with atomic_path(page) as tmp:
            tmp.write_text(
                template.render(
                    title=f"medlens: {exp['title']}",
                    experiments=[exp],
                    rows=[row],
                    differences=[],
                    lock_warnings=lock_warnings(context["provenance"], [exp]),
                    **context,
                ),
                encoding="utf-8",
            )
    differences = experiment_differences(list(experiments)) if out_differences is not None else []
    if out_differences is not None:
        write_differences(differences, out_differences)
    if out_html is not None:
        with atomic_path(out_html) as tmp:
            tmp.write_text(
                template.render(
                    title="medlens report",
                    experiments=list(experiments),
                    rows=rows,
                    differences=differences,
                    lock_warnings=lock_warnings(context["provenance"], experiments),
                    **context,
                ),
                encoding="utf-8",
            )
    if out_csv is not None and out_tex is not None:
        write_paper_tables(rows, out_csv, out_tex)
    logger.info(
        "report written for %d experiment(s): %s",
        len(experiments),
        out_html or ", ".join(map(str, out_pages)),
    )


def build_report(
    experiments: dict[str, dict[str, Any]],
    *,
    out_pages: Sequence[str | os.PathLike],
    out_html: str | os.PathLike | None = None,
    out_csv: str | os.PathLike | None = None,
    out_tex: str | os.PathLike | None = None,
    out_differences: str | os.PathLike | None = None,
) -> None:
    """Collect every experiment's outputs and write the report (the ``report`` and ``report_experiment`` rules' call).

    Args:
        experiments: ``{name: {"config": resolved config, "files": paths of its outputs}}`` in ``run`` order
            (``report_params`` in ``workflow/rules/common.smk``).
        out_html, out_pages, out_csv, out_tex, out_differences: as :func:`write_report`.
    """
    collected = []
    for name, spec in experiments.items():
        report_cfg = spec["config"].get("report") or {}
        exp = collect_experiment(
            name, spec["files"], spec["config"], n_examples=report_cfg.get("examples", 6)
        )
        claims = report_cfg.get("seed_claims")
        exp["seed_claims"] = load_seed_claims(claims) if claims else None
        collected.append(exp)
    write_report(
        collected,
        out_html=out_html,
        out_pages=out_pages,
        out_csv=out_csv,
        out_tex=out_tex,
        out_differences=out_differences,
    )
