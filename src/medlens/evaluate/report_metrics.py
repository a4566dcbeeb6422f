"""The report-generation metrics the field publishes (ReXrank's ranking), on the chest radiograph reports.

Each metric runs the implementation its authors maintain, with weights from the Hugging Face Hub that the
``prefetch_weights`` rule fetched on the submit host; here the hub is offline and a metric whose weights
are not in the cache, or whose package cannot run, is reported as not computed, with the reason and the
command that fetches them, never left out.

=============  =====================================================================================
bertscore      BERTScore F1 (radeval's copy of bert-score): distilroberta-base, layer 5, rescaled with
               the published baseline, no idf, as CXR-Report-Metric and ReXrank compute it
chexbert       CheXbert F1, CheXpert-14 and -5, micro and macro: medlens's clinical efficacy with the
               published CheXbert weights (StanfordAIMI/RRG_scorers chexbert.pth) as the labeler
sembscore      SembScore: cosine similarity of the CheXbert [CLS] embeddings of the two reports
radgraph       RadGraph F1 (radeval's copy of the radgraph package, RadGraph-XL): simple, partial (the headline)
               and complete rewards. ReXrank's RadGraph column is another number: the mean of entity and
               relation F1 with the original RadGraph model, RadCliQ's feature (``radcliq.features.radgraph``)
radcliq        RadCliQ-v1 (lower is better): CXR-Report-Metric's linear combination of RadGraph
               (entities and relations, the original RadGraph model), BERTScore, SembScore and BLEU-2
ratescore      RaTEScore (radeval's copy of the RaTEScore package): entity-aware similarity
green          GREEN (radeval's copy of the GREEN package), opt-in: a 7B model counts clinically significant
               errors and matched findings (:mod:`medlens.evaluate.green`)
=============  =====================================================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import MetricNotComputed
from medlens.evaluate.bootstrap import bootstrap_distribution, percentile_ci
from medlens.evaluate.metric_weights import CHEXBERT, artefact, missing_weights
from medlens.evaluate.radcliq import radcliq_v1, radgraph_combined
from medlens.evaluate.radeval_compat import radeval_module
from medlens.models.prefetch import fetch_artefact

__all__ = ["OPT_IN_METRICS", "REPORT_METRICS", "headline_rows", "score_generations_file", "score_reports"]

logger = logging.getLogger(__name__)

REPORT_METRICS = ("bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore")  # the default
OPT_IN_METRICS = ("green",)  # a 7B model: scored only when the experiment asks


def _mean_ci(values: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    """Mean of per-report scores with its 95 % percentile bootstrap interval."""
    dist = bootstrap_distribution(
        lambda v: v.mean(axis=1), values, n_resamples=n_resamples, seed=seed, vectorized=True
    )
    low, high, _ = percentile_ci(dist)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": len(values)}


def _bertscore(refs: list[str], hyps: list[str], device: str) -> np.ndarray:
    # CXR-Report-Metric (add_bertscore_col) collapses runs of spaces in both reports before scoring: two spaces
    # are one more RoBERTa token, which moves the score
    refs, hyps = [re.sub(r" +", " ", t) for t in refs], [re.sub(r" +", " ", t) for t in hyps]
    scorer = radeval_module("radeval.metrics.bertscore._vendor").BERTScorer(
        model_type="distilroberta-base",
        num_layers=5,
        rescale_with_baseline=True,
        idf=False,
        lang="en",
        device=device,
    )
    _, _, f1 = scorer.score(cands=hyps, refs=refs, verbose=False, batch_size=64)
    return f1.numpy().astype(float)


def _chexbert_labeler(device: str):
    from medlens.evaluate.chexbert import CheXbertLabeler

    return CheXbertLabeler(fetch_artefact(artefact(CHEXBERT), offline=True), device=device)


def _sembscore(labeler, refs: list[str], hyps: list[str]) -> np.ndarray:
    a, b = labeler.embed_texts(refs), labeler.embed_texts(hyps)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-12), 0.0)


def _radgraph(model_type: str, refs: list[str], hyps: list[str]):
    """(simple, partial, complete rewards, hypothesis annotations, reference annotations) per report.

    F1RadGraph scores a pair with an empty report 0 and leaves it out of its annotations; it gets empty
    annotations here, so that they stay aligned with the reports (radeval's RadCliQ does the same).
    """
    from medlens.evaluate.metric_weights import unpack_radgraph
    from medlens.evaluate.radeval_compat import vendored_radgraph

    unpack_radgraph(model_type)
    scorer = vendored_radgraph().F1RadGraph(reward_level="all", model_type=model_type)
    _, rewards, hyp_ann, ref_ann = scorer(refs=refs, hyps=hyps)
    annotated = iter(zip(hyp_ann, ref_ann, strict=True))
    pairs = [({}, {}) if not h or not r else next(annotated) for r, h in zip(refs, hyps, strict=True)]
    rewards = [np.asarray(r, dtype=float) for r in rewards]
    return rewards, [h for h, _ in pairs], [r for _, r in pairs]


# RaTEScore's score of a pair where one report has no entity (its scorer's own rule)
RATESCORE_NO_ENTITIES = 0.5


def _ratescore(refs: list[str], hyps: list[str], device: str) -> np.ndarray:
    """RaTEScore of each pair. The package drops a report with no sentence of 3 characters or more (an empty
    generation) from its NER output and zips the rest, so one such report would shift every later score to
    the wrong pair (and alone it crashes the tokenizer). Such a pair is found with the package's own
    sentence splitter and scores 0.5, the package's value for a report without entities."""
    try:
        RaTEScore = radeval_module("radeval.metrics.RaTEScore.scorer").RaTEScore  # noqa: N806
        sentence_split = radeval_module("radeval.metrics.RaTEScore.utils").sentence_split
    except (ImportError, ValueError) as e:  # ValueError: a compiled dependency built for another numpy
        raise ImportError(str(e)) from e
    scores = np.full(len(refs), RATESCORE_NO_ENTITIES)
    scored = [
        i for i, pair in enumerate(zip(refs, hyps, strict=True)) if all(sentence_split([t])[0] for t in pair)
    ]
    if scored:
        scorer = RaTEScore(use_gpu=device.startswith("cuda"))
        got = scorer.compute_score(
            candidate_list=[hyps[i] for i in scored], reference_list=[refs[i] for i in scored]
        )[0]
        scores[scored] = got
    return scores


def _bleu2(refs: list[str], hyps: list[str]) -> np.ndarray:
    bleu = radeval_module("radeval.metrics.bleu.bleu").Bleu(n=2)
    return np.asarray(bleu(refs, hyps)[1], dtype=float)


def _fetch_command(experiment: str | None) -> str:
    target = f"results/{experiment or '<experiment>'}/prefetched_metrics.json"
    return (
        f"on a host that reaches the Hugging Face Hub: snakemake {target} --forcerun prefetch_metric_weights "
        "(without HF_HUB_OFFLINE), then rerun this rule"
    )


def score_reports(
    refs: Sequence[str],
    hyps: Sequence[str],
    names: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    device: str | None = None,
    experiment: str | None = None,
    labeler_uncertain: str = "positive",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score generated reports against their references with each named metric.

    Returns:
        (``{metric: result}``, ``{column: per-report scores}``). A result holds the headline numbers
        with their 95 % bootstrap intervals and ``protocol``, or ``not_computed`` (the reason) and
        ``fetch`` (the command that fetches missing weights).
    """
    import torch

    refs, hyps = list(refs), list(hyps)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {}
    per_report: dict[str, np.ndarray] = {}
    cache: dict[str, Any] = {}

    def once(key: str, make: Callable[[], Any]) -> Any:
        if key not in cache:
            cache[key] = make()
        return cache[key]

    for name in names:
        missing = missing_weights(name)
        if missing:
            results[name] = {
                "not_computed": f"weights not in the cache: {', '.join(missing)}",
                "fetch": _fetch_command(experiment),
            }
            logger.warning("%s not computed: %s", name, results[name]["not_computed"])
            continue
        try:
            results[name] = _compute(
                name,
                refs,
                hyps,
                device,
                once,
                per_report,
                n_resamples,
                seed,
                labeler_uncertain,
            )
        # a package that does not import here; GREEN's model needing its own code, incomplete or out of memory
        except (ImportError, MetricNotComputed) as e:
            results[name] = {"not_computed": _import_reason(e)}
            logger.warning("%s not computed: %s", name, results[name]["not_computed"])
    return results, per_report


def _import_reason(e: BaseException) -> str:
    if isinstance(e, MetricNotComputed):  # the reason, in full (medlens.evaluate.green)
        return str(e)
    return f"its package cannot be imported here: {type(e).__name__}: {e}"


def _compute(name, refs, hyps, device, once, per_report, n_resamples, seed, uncertain):
    """One metric's result; intermediate scores shared between metrics are computed once (``once``)."""
    ci = {"n_resamples": n_resamples, "seed": seed}
    if name == "bertscore":
        scores = once("bertscore", lambda: _bertscore(refs, hyps, device))
        per_report["bertscore"] = scores
        return {"f1": _mean_ci(scores, n_resamples, seed), "protocol": {**ci, "source": _SOURCES[name]}}
    if name == "chexbert":
        from medlens.evaluate.clinical import clinical_efficacy

        labeler = once("chexbert", lambda: _chexbert_labeler(device))
        out = clinical_efficacy(
            hyps, refs, labeler=labeler, uncertain=uncertain, n_resamples=n_resamples, seed=seed
        )
        return {
            k: out[k] for k in ("chexpert14", "chexpert5", "per_label", "labeler_info", "uncertain_policy")
        } | {"protocol": {**out["protocol"], "source": _SOURCES[name]}}
    if name == "sembscore":
        labeler = once("chexbert", lambda: _chexbert_labeler(device))
        scores = once("sembscore", lambda: _sembscore(labeler, refs, hyps))
        per_report["sembscore"] = scores
        return {"score": _mean_ci(scores, n_resamples, seed), "protocol": {**ci, "source": _SOURCES[name]}}
    if name == "radgraph":
        rewards, _, _ = once("radgraph-xl", lambda: _radgraph("radgraph-xl", refs, hyps))
        out = {}
        for level, scores in zip(("simple", "partial", "complete"), rewards, strict=True):
            per_report[f"radgraph_{level}"] = scores
            out[level] = _mean_ci(scores, n_resamples, seed)
        return out | {"headline": "partial", "protocol": {**ci, "source": _SOURCES[name]}}
    if name == "radcliq":
        _, hyp_ann, ref_ann = once("radgraph", lambda: _radgraph("radgraph", refs, hyps))
        labeler = once("chexbert", lambda: _chexbert_labeler(device))
        features = {
            "radgraph": radgraph_combined(hyp_ann, ref_ann),
            "bertscore": once("bertscore", lambda: _bertscore(refs, hyps, device)),
            "sembscore": once("sembscore", lambda: _sembscore(labeler, refs, hyps)),
            "bleu2": _bleu2(refs, hyps),
        }
        scores = radcliq_v1(features)
        per_report["radcliq_v1"] = scores
        mean = _mean_ci(scores, n_resamples, seed)
        return {
            "v1": mean,
            "inverse": 1 / mean["mean"] if mean["mean"] else None,  # ReXrank shows 1/RadCliQ-v1
            "features": {k: float(np.mean(v)) for k, v in features.items()},
            "protocol": {**ci, "source": _SOURCES[name], "lower_is_better": True},
        }
    if name == "ratescore":
        scores = _ratescore(refs, hyps, device)
        per_report["ratescore"] = scores
        return {"score": _mean_ci(scores, n_resamples, seed), "protocol": {**ci, "source": _SOURCES[name]}}
    if name == "green":
        from medlens.evaluate.green import GREEN_MODEL, green_scores
        from medlens.evaluate.metric_weights import Weights

        model = fetch_artefact(artefact(Weights(GREEN_MODEL)), offline=True)
        scores, counts = green_scores(refs, hyps, model, device)
        per_report["green"] = scores
        return {
            "score": _mean_ci(scores, n_resamples, seed),
            "mean_counts": counts,
            "protocol": {**ci, "source": _SOURCES[name]},
        }
    raise ValueError(f"unknown report metric {name!r}")


_SOURCES = {
    "bertscore": "radeval's copy of bert-score 0.3.13 (radeval.metrics.bertscore); distilroberta-base, layer 5, "
    "F1 rescaled with bert-score's baseline, no idf (CXR-Report-Metric, ReXrank)",
    "chexbert": "CheXbert (Smit et al. 2020) weights StanfordAIMI/RRG_scorers chexbert.pth labelling both reports; "
    "F1 over CheXpert-14 and -5 (medlens.evaluate.clinical)",
    "sembscore": "cosine similarity of CheXbert's [CLS] embeddings of the two reports (CXR-Report-Metric)",
    "radgraph": "radeval's copy of radgraph 0.1.18 (patched for transformers 5), F1RadGraph, RadGraph-XL; rewards simple, partial, complete; ReXrank's RadGraph is radcliq's radgraph feature instead",
    "radcliq": "RadCliQ-v1 (Yu et al. 2023): CXR-Report-Metric's normaliser and linear model over RadGraph "
    "(entity and relation F1, original RadGraph), BERTScore, SembScore, BLEU-2 (radeval's Bleu)",
    "ratescore": "RaTEScore (Zhao et al. 2024), radeval's copy (radeval.metrics.RaTEScore)",
    "green": "GREEN (Ostmeier et al. 2024), radeval's copy of its prompt, greedy generation and parser "
    "(radeval.metrics.green_score), model StanfordAIMI/GREEN-radllama2-7b loaded without code from the Hub",
}


def score_generations_file(
    generations: str | Path,
    pairs: str | Path,
    params: dict[str, Any],
    out_json: str | Path,
    out_scores: str | Path,
    *,
    experiment: str | None = None,
) -> dict[str, Any]:
    """The ``score_reports`` rule: the field's metrics of the chest radiograph reports of
    ``generations.jsonl`` (the modality from ``pairs.parquet``), with a CSV of each report's scores."""
    import csv

    from medlens import environment
    from medlens.evaluate.decoder import CHEST, read_row_info
    from medlens.evaluate.rexrank import read_generations
    from medlens.io import atomic_path, write_json

    lines = read_generations(generations)
    rows = read_row_info(pairs, [g["id"] for g in lines]) if lines else []
    chest = [g for g, r in zip(lines, rows, strict=True) if r.modality == CHEST and r.text_source != "vqa"]
    names = list(params["report_metrics"])
    result: dict[str, Any] = {"n": len(chest), "n_generations": len(lines)}
    if not chest:
        reason = (
            "no chest radiograph reports among the generations: these metrics (CheXbert, RadGraph, the "
            "BERTScore baseline of ReXrank) are defined for chest radiograph reports"
        )
        result["metrics"] = {n: {"not_computed": reason} for n in names}
        scores: dict[str, np.ndarray] = {}
    else:
        result["metrics"], scores = score_reports(
            [g.get("reference") or "" for g in chest],
            [g["generated"] for g in chest],
            names,
            n_resamples=params["bootstrap_samples"],
            seed=params["seed"],
            experiment=experiment,
        )
    if len(chest) < len(lines):
        result["scope"] = f"the {len(chest)} chest radiograph reports of {len(lines)} generations"
    result["environment"] = environment.record()
    write_json(result, out_json)
    with atomic_path(out_scores) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *scores])
        for i, g in enumerate(chest):
            w.writerow([g["id"], *(f"{v[i]:.6g}" for v in scores.values())])
    return result


_HEADLINES = {
    "bertscore": [("BERTScore F1", "f1")],
    "chexbert": [
        ("CheXbert F1, 14, micro", "chexpert14.micro"),
        ("CheXbert F1, 14, macro (observations present)", "chexpert14.macro"),
        ("CheXbert F1, 14, macro (all 14, as radeval)", "chexpert14.macro_all"),
        ("CheXbert F1, 5, micro", "chexpert5.micro"),
        ("CheXbert F1, 5, macro (observations present)", "chexpert5.macro"),
        ("CheXbert F1, 5, macro (all 5, as radeval)", "chexpert5.macro_all"),
    ],
    "sembscore": [("SembScore", "score")],
    "radgraph": [
        ("RadGraph F1 (partial)", "partial"),
        ("RadGraph F1 (simple)", "simple"),
        ("RadGraph F1 (complete)", "complete"),
    ],
    "radcliq": [("RadCliQ-v1 (lower is better)", "v1")],
    "ratescore": [("RaTEScore", "score")],
    "green": [("GREEN", "score")],
}


def headline_rows(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The report's table of ``report_metrics.json``: one row per headline number (value and interval), or
    per metric not computed (the reason and the fetch command)."""
    rows = []
    for name, metric in ((result or {}).get("metrics") or {}).items():
        if "not_computed" in metric:
            rows.append(
                {"metric": name, "not_computed": metric["not_computed"], "fetch": metric.get("fetch")}
            )
            continue
        for label, path in _HEADLINES[name]:
            d = metric
            for part in path.split("."):
                d = d.get(part) or {}
            value = d.get("mean", d.get("f1"))
            rows.append(
                {"metric": label, "value": value, "ci_low": d.get("ci_low"), "ci_high": d.get("ci_high")}
            )
    return rows
