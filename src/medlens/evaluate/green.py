"""GREEN (Ostmeier et al. 2024), opt-in: a 7B language model reads each reference and generated report and
counts the clinically significant errors and the matched findings; a report's score is
matched / (matched + significant errors), 0 when nothing matches.

radeval's copy of the GREEN package builds the prompt, generates and parses the answer. Its loader asks
for ``trust_remote_code=True``; medlens runs no code from the Hub, so the model and tokenizer are loaded
here with it off, from the local cache only. StanfordAIMI/GREEN-radllama2-7b is a stock Llama, which needs
none; a repository that does need its own code fails to load, and GREEN is reported as not computed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import MetricNotComputed

__all__ = ["GREEN_MODEL", "green_scores", "green_score_of_analysis"]

logger = logging.getLogger(__name__)

GREEN_MODEL = "StanfordAIMI/GREEN-radllama2-7b"


class _WithoutRemoteCode:
    """A transformers Auto class whose ``from_pretrained`` never runs a repository's code and never goes
    online, whatever its caller asks."""

    def __init__(self, auto):
        self._auto = auto

    def from_pretrained(self, *args, **kwargs):
        return self._auto.from_pretrained(
            *args, **{**kwargs, "trust_remote_code": False, "local_files_only": True}
        )


def _scorer(model_path: str | Path, device: str):
    """radeval's GREEN with the model at ``model_path`` loaded by stock transformers."""
    from unittest import mock

    import transformers

    from medlens.evaluate.radeval_compat import radeval_module

    module = radeval_module("radeval.metrics.green_score.green")

    # GREEN.__init__ loads through these module names; swapping them keeps its own tokenizer set-up (its
    # chat template, left padding) instead of a copy of it here
    safe = {
        "AutoModelForCausalLM": _WithoutRemoteCode(transformers.AutoModelForCausalLM),
        "AutoTokenizer": _WithoutRemoteCode(transformers.AutoTokenizer),
    }
    with mock.patch.multiple(module, **safe):
        # one device: with several GREEN spawns workers that load the model with its own loader
        return module.GREEN(str(model_path), cpu=device == "cpu", num_gpus=1)


def _needs_remote_code(model_path: str | Path) -> bool:
    """Whether the snapshot's config or tokenizer config maps a class to code of its own (``auto_map``)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(model_path) / name
        try:
            if "auto_map" in json.loads(path.read_text()):
                return True
        except (OSError, ValueError):
            continue
    return False


def green_scores(
    refs: list[str], hyps: list[str], model_path: str | Path, device: str, batch_size: int = 8
) -> tuple[np.ndarray, dict[str, Any]]:
    """Each report's GREEN score, and the mean count of each kind of error and of matched findings.

    Raises:
        MetricNotComputed: when the model or tokenizer cannot be loaded without the repository's own code or is
            incomplete in the cache, or generation fails (out of GPU memory even one report at a time;
            a larger batch that runs out is halved and retried): GREEN is then not computed and the job's
            other metrics are still written.
    """
    if device == "cpu":
        logger.warning(
            "GREEN runs a 7B model on the CPU: expect hours per thousand reports (docs/evaluation.md)"
        )
    import torch

    try:
        scorer = _scorer(model_path, device)
    except OSError as e:  # a file of the snapshot missing (an interrupted prefetch)
        raise MetricNotComputed(f"GREEN's model at {model_path} is incomplete in the cache: {e}") from e
    except Exception as e:  # out of memory, a corrupt shard...: the other metrics must still be written
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if _needs_remote_code(model_path):  # transformers refuses it without trust_remote_code
            raise MetricNotComputed(
                f"GREEN's model at {model_path} cannot load without code from the Hub, which medlens never "
                f"runs: {e}"
            ) from e
        raise MetricNotComputed(
            f"GREEN's model at {model_path} could not be loaded on {device}: {type(e).__name__}: {e}"
        ) from e

    while True:
        scorer.batch_size = batch_size
        try:
            _, _, scores, table = scorer(refs, hyps)
            break
        except torch.OutOfMemoryError as e:  # 8 answers of 2,048 tokens need ~9 GB of cache beside the model
            if batch_size == 1:
                raise MetricNotComputed(f"GREEN ran out of GPU memory at batch size 1: {e}") from e
            logger.warning(
                "GREEN ran out of GPU memory at batch size %d; retrying at %d", batch_size, batch_size // 2
            )
            batch_size //= 2
            torch.cuda.empty_cache()
        except RuntimeError as e:  # the other metrics must still be written
            raise MetricNotComputed(f"GREEN failed while generating (batch size {batch_size}): {e}") from e
    counts = {c: float(table[c].mean()) for c in [*scorer.sub_categories, "Matched Findings"]}
    return np.asarray(scores, dtype=float), counts


def green_score_of_analysis(analysis: str) -> float:
    """The score GREEN gives one analysis the model wrote (radeval's parser; no model needed)."""
    from medlens.evaluate.radeval_compat import radeval_module

    # cpu=True: GREEN() alone would select a CUDA device in this process
    return float(radeval_module("radeval.metrics.green_score.green").GREEN(cpu=True).compute_green(analysis))
