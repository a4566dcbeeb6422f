"""Plots as inline SVG strings (matplotlib's Agg backend; no file or network access from the page)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["line_plot", "roc_plot"]

plt.rcParams.update(
    {
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.fonttype": "none",
        "svg.hashsalt": "medlens",
    }
)  # fixed salt: same data, same SVG


def _plain(text: str) -> str:
    """Text shown as written: a "$" in a label or title is data, not the start of a mathtext formula."""
    return str(text).replace("$", r"\$")


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog so the SVG can sit inside HTML


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    log_y: bool = False,
) -> str:
    """One line per series name: ``{name: (x, y)}``, as an ``<svg>`` string (matplotlib escapes the text in it)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=_plain(name), linewidth=1.4, marker="o" if len(x) < 12 else None, markersize=3)
    ax.set_title(_plain(title))
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel or (next(iter(series)) if len(series) == 1 else "")))
    if log_y:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=7)
    return _svg(fig)


def roc_plot(curves: dict[str, tuple[Sequence[float], Sequence[float], float | None]], *, title: str) -> str:
    """ROC curves ``{label: (fpr, tpr, auc)}`` with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="#bbb", linewidth=0.8, linestyle="--")
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, linewidth=1.2, label=_plain(f"{label} ({auc:.2f})" if auc is not None else label))
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(_plain(title))
    ax.set_aspect("equal")
    ax.legend(frameon=False, fontsize=6, loc="lower right")
    return _svg(fig)
