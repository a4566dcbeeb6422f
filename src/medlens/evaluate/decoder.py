"""``evaluate_decoder``: generate reports for the evaluation split and score them.

Writes ``generations.jsonl`` (id, image, reference, generated), one JSON with corpus text metrics
(BLEU-1..4, ROUGE-L, CIDEr-D, METEOR when computable) and clinical efficacy (CheXpert-style labels
of generated vs reference reports), overall and per source dataset, with the protocol of each number,
and a per-label CSV of the clinical scores.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from medlens import environment
from medlens.config import EvalConfig, to_dict
from medlens.data.chat_format import read_chat
from medlens.evaluate.clinical import clinical_efficacy
from medlens.evaluate.text_metrics import corpus_text_metrics
from medlens.io import atomic_path, write_json

__all__ = ["evaluate_decoder", "score_generations"]

logger = logging.getLogger(__name__)


def _target(record: dict[str, Any]) -> tuple[str, str]:
    """(prompt, reference) of a conversation: its first user turn and last assistant turn."""
    prompt = next(m["content"] for m in record["messages"] if m["role"] == "user")
    reference = next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")
    return prompt, reference


def score_generations(generated: list[str], references: list[str], cfg: EvalConfig) -> dict[str, Any]:
    """Text metrics and clinical efficacy of one set of generations."""
    return {
        "n": len(generated),
        "text": corpus_text_metrics(generated, references),
        "clinical": clinical_efficacy(
            generated, references, labeler=cfg.labeler, n_resamples=cfg.bootstrap_samples, seed=cfg.seed
        ),
    }


def evaluate_decoder(
    cfg: EvalConfig,
    chat_dir: str | os.PathLike,
    decoder_dir: str | os.PathLike,
    *,
    pairs: str | os.PathLike | None = None,
    out_json: str | os.PathLike,
    out_generations: str | os.PathLike,
    out_per_label: str | os.PathLike,
) -> dict[str, Any]:
    """Generate for ``chat/{cfg.split}.jsonl`` and score against the references.

    Args:
        cfg: evaluation settings (split, decoding, labeler, bootstrap, max_samples).
        chat_dir: ``results/{experiment}/data/chat``.
        decoder_dir: ``results/{experiment}/decoder``.
        pairs: ``results/{experiment}/data/pairs.parquet``; with it, a decoder that saved its own image tower
            (``encoder_final/``, the captioner) has that tower linear-probed as ``encoder_final_probe``.
        out_json, out_generations, out_per_label: the rule's outputs.

    Returns:
        The metrics written to ``out_json``.
    """
    from medlens.models.generator import load_generator

    chat_path = Path(chat_dir) / f"{cfg.split}.jsonl"
    records = read_chat(chat_path)
    if cfg.max_samples is not None and len(records) > cfg.max_samples:
        records = sorted(random.Random(cfg.seed).sample(records, cfg.max_samples), key=lambda r: r["id"])
    generator = load_generator(decoder_dir)
    prompts, references = zip(*(_target(r) for r in records), strict=True) if records else ((), ())
    generated = generator.generate(
        [r["images"][0] for r in records], list(prompts), generation=cfg.generation
    )
    logger.info("generated %d reports for split '%s'", len(generated), cfg.split)

    with atomic_path(out_generations) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec, ref, gen in zip(records, references, generated, strict=True):
            image = os.path.relpath(rec["images"][0], Path(chat_dir))
            f.write(
                json.dumps(
                    {
                        "id": rec["id"],
                        "dataset": rec.get("dataset"),
                        "image": image,
                        "reference": ref,
                        "generated": gen,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )

    overall = score_generations(list(generated), list(references), cfg)
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_dataset[rec.get("dataset") or "?"].append(i)
    per_dataset = (
        {
            name: score_generations([generated[i] for i in idx], [references[i] for i in idx], cfg)
            for name, idx in sorted(by_dataset.items())
        }
        if len(by_dataset) > 1
        else {}
    )
    result = {
        "split": cfg.split,
        "n": len(records),
        "overall": overall,
        "per_dataset": per_dataset,
        "protocol": {
            "decoding": to_dict(cfg.generation),
            "labeler": overall["clinical"].get("labeler"),
            "chat_file": str(chat_path),
            "max_samples": cfg.max_samples,
            "seed": cfg.seed,
        },
    }
    tower = Path(decoder_dir) / "encoder_final"
    if pairs is not None and cfg.linear_probe.enabled and (tower / "vision.safetensors").is_file():
        from medlens.evaluate.encoder import probe_image_tower

        result["encoder_final_probe"] = probe_image_tower(cfg, pairs, tower)
    result["environment"] = environment.record()
    write_json(result, out_json)
    with atomic_path(out_per_label) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        columns = ["precision", "recall", "f1", "ci_low", "ci_high", "support", "n_generated"]
        w.writerow(["label", *columns])
        for label, row in overall["clinical"]["per_label"].items():
            w.writerow([label, *(row.get(c) for c in columns)])
    logger.info(
        "decoder metrics: %s", json.dumps({k: v for k, v in overall["text"].items() if k != "protocol"})
    )
    return result
