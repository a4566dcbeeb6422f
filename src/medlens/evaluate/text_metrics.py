"""Corpus-level text metrics of generated reports: BLEU-1..4, ROUGE-1, -2 and -L, CIDEr-D and METEOR.

Each metric comes from the library the field computes it with, and the JSON records how:

* BLEU-n (sacrebleu, corpus level): ``BLEU(max_ngram_order=n, lowercase=True)``, its own ``13a``
  tokenisation, reported on 0-1 (sacrebleu's score / 100) like the other metrics here.
* ROUGE-1, -2 and -L (rouge-score): mean over reports of the F-measure (beta = 1), rouge-score's
  tokeniser (lower case, non-alphanumerics dropped), no stemming (ROUGE-1/2 for the papers that quote
  them, as seed 003 does).
* CIDEr-D (pycocoevalcap's ``CiderScorer``, the coco-caption code: tf-idf n-grams 1..4, clipped counts,
  Gaussian length penalty with sigma 6, x10); document frequencies come from the references of the
  corpus scored, so the value depends on the corpus, as in every paper that quotes it.
* METEOR 1.5 (pycocoevalcap's wrapper of ``meteor-1.5.jar``, English, ``-norm``): it runs under Java,
  fully offline (the paraphrase table ships in the package); without Java it is None with the reason.

A metric that cannot be computed is None and named under ``not_computed`` with its reason, never 0.

``intervals`` holds the 95 % percentile-bootstrap interval over reports of BLEU-1..4 (corpus BLEU
recomputed from each resample's sacrebleu statistics, as sacrebleu's own bootstrap does), ROUGE-1/2/L and
CIDEr-D (means of per-report scores; CIDEr-D's document frequencies stay those of the whole corpus).
METEOR has none: its corpus score is not a sum over reports that a resample could recompute.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from medlens.errors import DataError, MedlensError

__all__ = [
    "corpus_text_metrics",
    "corpus_bleu",
    "corpus_rouge",
    "corpus_cider_d",
    "corpus_meteor",
    "cider_tokens",
    "cider_d_scores",
    "rouge_scores",
    "text_metric_intervals",
    "bleu_statistics",
]

logger = logging.getLogger(__name__)

_CIDER_TOKEN = re.compile(r"[a-z0-9]+(?:[-.'/][a-z0-9]+)*")


def _check_pairs(generated: Sequence[str], references: Sequence[str]) -> None:
    if len(generated) != len(references):
        raise DataError(
            f"{len(generated)} generated reports for {len(references)} references",
            column="generated",
            expected="one generated report per reference",
        )
    for name, texts in (("generated", generated), ("reference", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(
                f"{type(texts[bad]).__name__} instead of text",
                row=bad,
                column=name,
                expected="a string (empty when nothing was generated)",
            )


def _bleu(max_order: int):
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=max_order, lowercase=True)


def corpus_bleu(generated: Sequence[str], references: Sequence[str], max_order: int = 4) -> tuple[float, str]:
    """Corpus BLEU-``max_order`` on 0-1 and sacrebleu's signature (one reference per report)."""
    bleu = _bleu(max_order)
    return bleu.corpus_score(list(generated), [list(references)]).score / 100.0, str(bleu.get_signature())


# medlens's key -> rouge-score's name
ROUGE = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}


def rouge_scores(generated: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Each pair's ROUGE-1, -2 and -L F-measure (rouge-score, no stemming), by medlens's key."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE.values()), use_stemmer=False)
    scores = [scorer.score(ref, gen) for gen, ref in zip(generated, references, strict=True)]
    return {key: np.array([s[name].fmeasure for s in scores], dtype=float) for key, name in ROUGE.items()}


def corpus_rouge(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, -2 and -L F-measure of the pairs."""
    return {key: float(v.mean()) for key, v in rouge_scores(generated, references).items()}


def cider_tokens(text: str) -> str:
    """Lower-cased words with punctuation dropped, joined by spaces (the input CiderScorer expects).

    coco-caption runs the Stanford PTB tokenizer (Java) first; this keeps the same words (hyphenated
    words and decimals stay whole, punctuation goes) without needing Java for CIDEr-D.
    """
    return " ".join(_CIDER_TOKEN.findall(text.lower()))


def cider_d_scores(
    generated: Sequence[str], references: Sequence[str]
) -> tuple[np.ndarray | None, str | None]:
    """Each report's CIDEr-D (document frequencies over all the references), or None and the reason when
    idf is undefined. The corpus CIDEr-D is their mean."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    refs = [cider_tokens(r) for r in references]
    if len(refs) < 2:
        return (
            None,
            "CIDEr-D weighs n-grams by their document frequency over the references; needs >= 2 reports",
        )
    if not any(refs):
        return None, "every reference is empty"
    scorer = CiderScorer(n=4, sigma=6.0)
    for gen, ref in zip(generated, refs, strict=True):
        scorer += (cider_tokens(gen), [ref])
    _, scores = scorer.compute_score()
    return np.asarray(scores, dtype=float), None


def corpus_cider_d(generated: Sequence[str], references: Sequence[str]) -> tuple[float | None, str | None]:
    """CIDEr-D of the corpus, or None and the reason when idf is undefined."""
    scores, reason = cider_d_scores(generated, references)
    return (None, reason) if scores is None else (float(scores.mean()), None)


def bleu_statistics(
    generated: Sequence[str], references: Sequence[str], max_order: int
) -> tuple[Callable[[np.ndarray], float], np.ndarray]:
    """sacrebleu's per-report n-gram statistics ``[N, S]`` and the function giving corpus BLEU (0-1) from
    their sum over any subset of reports (a bootstrap resample's score without re-tokenising)."""
    bleu = _bleu(max_order)
    stats = np.array(bleu._extract_corpus_statistics(list(generated), [list(references)]), dtype=float)
    return (lambda total: bleu._compute_score_from_stats(total).score / 100.0), stats


def text_metric_intervals(
    generated: Sequence[str], references: Sequence[str], n_resamples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """The 95 % percentile-bootstrap interval over reports of BLEU-1..4, ROUGE-1/2/L and CIDEr-D (module doc)."""
    from medlens.evaluate.bootstrap import bootstrap

    generated, references = list(generated), list(references)

    def interval(metric, values, vectorized=False):
        r = bootstrap(metric, values, n_resamples=n_resamples, seed=seed, vectorized=vectorized)
        return {k: r[k] for k in ("ci_low", "ci_high", "n_resamples", "seed", "method")}

    out = {}
    for k in (1, 2, 3, 4):
        score, stats = bleu_statistics(generated, references, k)
        out[f"bleu{k}"] = interval(lambda s, score=score: score(s.sum(0)), stats)
    for key, values in rouge_scores(generated, references).items():
        out[key] = interval(lambda v: v.mean(axis=1), values, vectorized=True)
    cider, _ = cider_d_scores(generated, references)
    if cider is not None:
        out["cider_d"] = interval(lambda v: v.mean(axis=1), cider, vectorized=True)
    return out


def corpus_meteor(generated: Sequence[str], references: Sequence[str]) -> tuple[float | None, str | None]:
    """METEOR 1.5 of the corpus, or None and the reason when Java is not available.

    Raises:
        MedlensError: when Java is there but the METEOR process fails.
    """
    if shutil.which("java") is None:
        return None, "java not found on PATH (METEOR 1.5 is a Java program; install a JRE to compute it)"
    from pycocoevalcap.meteor.meteor import Meteor

    def clean(text: str) -> str:
        # the jar reads one line per segment, fields separated by "|||"
        return " ".join(text.replace("|||", " ").split())

    gts = {i: [clean(r)] for i, r in enumerate(references)}
    res = {i: [clean(g)] for i, g in enumerate(generated)}
    try:
        meteor = Meteor()
        score, _ = meteor.compute_score(gts, res)
    except (OSError, ValueError) as e:
        raise MedlensError(f"METEOR (java -jar meteor-1.5.jar) failed: {e}") from e
    del meteor  # its __del__ stops the Java process now rather than at interpreter exit
    return float(score), None


def corpus_text_metrics(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    meteor: bool = True,
    n_resamples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-1/2/L, CIDEr-D and METEOR of generated reports against their references.

    Args:
        generated: the generated reports.
        references: one reference per generated report.
        meteor: whether to run METEOR (it starts a Java process, about 10 s).
        n_resamples: bootstrap resamples of the ``intervals``; 0 computes none.
        seed: seed of the resampling.

    Returns:
        ``{"n", "bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rouge_l", "cider_d", "meteor", "not_computed":
        {metric: reason}, "intervals": {metric: {"ci_low", "ci_high", ...}}, "protocol": {metric: {...},
        "versions": {...}}}``; values are on 0-1 except CIDEr-D (0-10). A metric in ``not_computed`` is
        None; ``intervals`` is there when ``n_resamples`` is.

    Raises:
        DataError: when the lists differ in length or hold something other than strings.
    """
    _check_pairs(generated, references)
    n = len(generated)
    out: dict[str, Any] = {"n": n}
    not_computed: dict[str, str] = {}
    signature = None
    if n:
        for k in (1, 2, 3, 4):
            out[f"bleu{k}"], signature = corpus_bleu(generated, references, k)
        out.update(corpus_rouge(generated, references))
        out["cider_d"], reason = corpus_cider_d(generated, references)
        if reason:
            not_computed["cider_d"] = reason
        if meteor:
            out["meteor"], reason = corpus_meteor(generated, references)
            if reason:
                logger.warning("METEOR not computed: %s", reason)
        else:
            out["meteor"], reason = None, "not requested (meteor=False)"
        if reason:
            not_computed["meteor"] = reason
        if n_resamples:
            out["intervals"] = text_metric_intervals(generated, references, n_resamples, seed)
    else:
        for key in ("bleu1", "bleu2", "bleu3", "bleu4", *ROUGE, "cider_d", "meteor"):
            out[key] = None
            not_computed[key] = "no reports"
    out["not_computed"] = not_computed
    out["protocol"] = {
        "bleu": {
            "library": "sacrebleu",
            "level": "corpus",
            "signature": signature,
            "scale": "0-1 (score / 100)",
            "n_references": 1,
            "orders": "BLEU-k: geometric mean of 1..k-gram precisions x brevity penalty",
        },
        "rouge": {
            "variants": "rouge1, rouge2 (unigram and bigram overlap) and rouge_l (longest common subsequence)",
            "library": "rouge-score",
            "tokenizer": "rouge-score default (lower case, non-alphanumeric characters split, no stemming)",
            "aggregate": "mean over reports of the F-measure (beta 1)",
        },
        "cider_d": {
            "library": "pycocoevalcap CiderScorer",
            "n": 4,
            "sigma": 6.0,
            "scale": "0-10",
            "tokenizer": "lower case, punctuation dropped (cider_tokens)",
            "idf": "document frequencies over this corpus's references",
        },
        "meteor": {"library": "pycocoevalcap Meteor (meteor-1.5.jar, -l en -norm)", "aggregate": "corpus"},
        "versions": {pkg: version(pkg) for pkg in ("sacrebleu", "rouge-score", "pycocoevalcap")},
    }
    return out
