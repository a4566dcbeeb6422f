"""What a model learned, per finding: each score beside what a model that ignores the image scores.

The report opens an experiment with this table, so a reader sees at once which findings the models
can and cannot recognise. The baselines are those of a model blind to the image:

* AUC (zero-shot, linear probe): 0.5, whatever the prevalence.
* F1 of a finding mentioned by the generated reports: ``2p / (1 + p)`` for prevalence ``p``, which
  an image-blind generator reaches by stating the finding in every report (mentioning it at random in
  a share ``q`` of the reports gives ``2pq / (p + q)``, largest at ``q = 1``).

A finding counts as *learned* when the lower end of its 95 % bootstrap interval lies above the
baseline, *weak* when only the point estimate does, and *not learned* otherwise.
"""

from __future__ import annotations

from typing import Any

from medlens.config import FINDINGS, dig

__all__ = ["AUC_CHANCE", "f1_baseline", "verdict", "learned_per_finding", "learned_counts"]

AUC_CHANCE = 0.5
VERDICTS = ("learned", "weak", "not learned")


def f1_baseline(prevalence: float) -> float:
    """The best F1 of an image-blind generator for a finding of this prevalence: ``2p / (1 + p)``."""
    return 2 * prevalence / (1 + prevalence)


def verdict(value: float | None, ci_low: float | None, baseline: float) -> str | None:
    """``learned`` (CI above the baseline), ``weak`` (estimate above it) or ``not learned``; None if unscored."""
    if value is None:
        return None
    if ci_low is not None and ci_low > baseline:
        return "learned"
    return "weak" if value > baseline else "not learned"


def _scored(entry: dict[str, Any] | None, key: str, baseline: float) -> dict[str, Any] | None:
    if not entry or entry.get(key) is None:
        return None
    value, low, high = entry[key], entry.get("ci_low"), entry.get("ci_high")
    return {
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "baseline": baseline,
        "verdict": verdict(value, low, baseline),
    }


def learned_per_finding(
    encoder_eval: dict[str, Any] | None, decoder_eval: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per finding present in the evaluation split: CheXpert's order, then any other label.

    Args:
        encoder_eval: ``eval/encoder.json`` (zero-shot and the CheXpert-14 linear probe), or None.
        decoder_eval: ``eval/decoder.json`` (per-observation F1 of the generated reports), or None.

    Returns:
        ``[{"finding", "n_pos", "n", "prevalence", "zero_shot", "probe", "captioner"}]``; each of the
        last three is ``{"value", "ci_low", "ci_high", "baseline", "verdict"}`` or None when that
        evaluation did not score the finding. The captioner's entry also has ``support`` and
        ``n_generated`` (reports labelled positive). Prevalence comes from the dataset's labels where
        the encoder was evaluated, else from the labeler's reading of the reference reports.
    """
    zero_shot = dig(encoder_eval or {}, "zero_shot.per_label") or {}
    probe = dig(encoder_eval or {}, "linear_probe.chexpert14.per_label") or {}
    clinical = dig(decoder_eval or {}, "overall.clinical.per_label") or {}
    n_reports = dig(decoder_eval or {}, "overall.clinical.n") or dig(decoder_eval or {}, "n") or 0
    rows = []
    names = list(dict.fromkeys([*zero_shot, *clinical]))
    order = {name: i for i, name in enumerate(FINDINGS)}
    for finding in sorted(names, key=lambda f: order.get(f, len(order))):  # stable: others keep their order
        truth = zero_shot.get(finding) or probe.get(finding) or {}
        n = (truth.get("n_pos") or 0) + (truth.get("n_neg") or 0)
        n_pos = truth.get("n_pos") if n else None
        report = clinical.get(finding) or {}
        support = report.get("support")
        if not n and support is not None and n_reports:
            n_pos, n = support, n_reports
        if not n_pos and not support:
            continue  # absent from the evaluation split: nothing to learn or to score
        captioner = None
        if support and n_reports:
            captioner = _scored(report, "f1", f1_baseline(support / n_reports))
            if captioner is not None:
                captioner.update(support=support, n_generated=report.get("n_generated"))
        rows.append(
            {
                "finding": finding,
                "n_pos": n_pos,
                "n": n,
                "prevalence": n_pos / n if n else None,
                "zero_shot": _scored(zero_shot.get(finding), "auc", AUC_CHANCE),
                "probe": _scored(probe.get(finding), "auc", AUC_CHANCE),
                "captioner": captioner,
            }
        )
    return rows


def learned_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{evaluation: {verdict: count, "scored": count}}`` over the rows, for the summary's one-line headline."""
    out: dict[str, dict[str, int]] = {}
    for key in ("zero_shot", "probe", "captioner"):
        scored = [r[key]["verdict"] for r in rows if r[key] is not None]
        if scored:
            out[key] = {"scored": len(scored), **{v: scored.count(v) for v in VERDICTS}}
    return out
