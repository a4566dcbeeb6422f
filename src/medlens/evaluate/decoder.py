"""``evaluate_decoder``: generate reports for the evaluation split and score them.

Writes ``generations.jsonl`` (id, image, reference, generated), one JSON with corpus text metrics
(BLEU-1..4, ROUGE-L, CIDEr-D, METEOR when computable) and each modality scored its own way: clinical
efficacy of chest radiograph reports (CheXpert-style labels of generated vs reference reports, the
labeler named), the KL grade of knee reports, the diagnosis of skin-lesion texts and SLAKE's accuracies
of VQA answers (:mod:`medlens.evaluate.modality`), overall and per source dataset, with the protocol of
each number, and a per-label CSV of the clinical scores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens import environment, layout
from medlens.config import EvalConfig, GenerationConfig, to_dict
from medlens.data.chat_format import read_chat
from medlens.data.split import pair_rows
from medlens.errors import DataError
from medlens.evaluate.clinical import clinical_efficacy
from medlens.evaluate.modality import (
    MODALITY_TASKS,
    label_from_text,
    multiclass_scores,
    ordinal_scores,
    rows_of_class,
)
from medlens.evaluate.paired import write_probe_scores
from medlens.evaluate.text_metrics import corpus_text_metrics
from medlens.evaluate.vqa import vqa_scores
from medlens.io import atomic_path, write_json

__all__ = ["evaluate_decoder", "score_generations"]

logger = logging.getLogger(__name__)
CHEST = "chest_xray"
_IMAGE_ONLY = (
    "this decoder is a captioner conditioned on the image alone: it cannot read the question, so these "
    "accuracies are those of an image-only answerer (a VLM decoder answers each question)"
)


def _target(record: dict[str, Any]) -> tuple[str, str]:
    """(prompt, reference) of a conversation: its first user turn and last assistant turn."""
    prompt = next(m["content"] for m in record["messages"] if m["role"] == "user")
    reference = next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")
    return prompt, reference


@dataclasses.dataclass(frozen=True)
class RowInfo:
    """What scoring needs to know of an evaluated row, from ``pairs.parquet``."""

    modality: str = CHEST
    text_source: str = "report"
    labels: tuple[str, ...] = ()
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_row_info(pairs: str | os.PathLike, ids: list[str]) -> list[RowInfo]:
    """The modality, text source, labels and metadata of each id, from the pairs table (no image bytes)."""
    by_id = pair_rows(pairs, ["modality", "text_source", "labels", "meta"], set(ids))
    out = []
    for i in ids:
        r = by_id.get(i)
        if r is None:
            raise DataError("an evaluated id is not in the pairs table", file=str(pairs), row=i)
        out.append(
            RowInfo(r["modality"], r["text_source"], tuple(r["labels"]), json.loads(r["meta"] or "{}"))
        )
    return out


def score_generations(
    generated: list[str], references: list[str], cfg: EvalConfig, rows: list[RowInfo] | None = None
) -> dict[str, Any]:
    """Text metrics of one set of generations, and each modality scored the way its field scores it.

    Chest radiograph reports get clinical efficacy (the CheXpert labeler, named in the output); knee
    radiographs the KL grade read from the text (accuracy, quadratic kappa); skin lesions the diagnosis
    (balanced accuracy, macro-F1); VQA rows the SLAKE accuracies of the answers. Without ``rows`` every
    row is a chest radiograph report (the demo).
    """
    rows = rows or [RowInfo()] * len(generated)
    text = corpus_text_metrics(generated, references, n_resamples=cfg.bootstrap_samples, seed=cfg.seed)
    out: dict[str, Any] = {"n": len(generated), "text": text}
    vqa = [i for i, r in enumerate(rows) if r.text_source == "vqa"]
    chest = [i for i, r in enumerate(rows) if r.modality == CHEST and r.text_source != "vqa"]
    if chest:
        out["clinical"] = clinical_efficacy(
            [generated[i] for i in chest],
            [references[i] for i in chest],
            labeler=cfg.labeler,
            n_resamples=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
        if len(chest) < len(rows):
            out["clinical"]["scope"] = f"the {len(chest)} chest radiograph reports of {len(rows)} rows"
    else:
        out["clinical"] = {
            "not_computed": "no chest radiograph reports in this set: the CheXpert labeler reads chest "
            "findings only, so other modalities are scored under `grading` and `vqa`"
        }
    grading = {}
    graded = [r.modality if r.text_source != "vqa" else None for r in rows]  # a VQA answer is no diagnosis
    for modality, (task, classes) in MODALITY_TASKS.items():
        idx, truth = rows_of_class(graded, [r.labels for r in rows], modality, classes)
        if not idx:
            continue
        predicted = [label_from_text(generated[i], modality) for i in idx]
        score = ordinal_scores if task == "ordinal" else multiclass_scores
        grading[modality] = score(truth, predicted, classes, n_resamples=cfg.bootstrap_samples, seed=cfg.seed)
        grading[modality]["protocol"]["read_from"] = (
            "the class each generated text states (medlens.evaluate.modality.label_from_text: explicit "
            "grades, else the phrasings of resources/text_templates); truth from the dataset's labels"
        )
    if grading:
        out["grading"] = grading
    if vqa:
        out["vqa"] = vqa_scores(
            [references[i] for i in vqa],
            [generated[i] for i in vqa],
            [rows[i].meta.get("answer_type") for i in vqa],
            [rows[i].meta.get("content_type") for i in vqa],
            n_resamples=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
    return out


def _write_generations(path, records, references, generated, chat_dir) -> None:
    """``generations.jsonl``: id, dataset, image (relative to the chat folder), reference, generated."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec, ref, gen in zip(records, references, generated, strict=True):
            image = os.path.relpath(rec["images"][0], Path(chat_dir))
            line = {
                "id": rec["id"],
                "dataset": rec.get("dataset"),
                "image": image,
                "reference": ref,
                "generated": gen,
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _per_dataset(records, references, generated, cfg: EvalConfig, rows) -> dict[str, Any]:
    """The same scores per source dataset, when the split mixes several."""
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_dataset[rec.get("dataset") or "?"].append(i)
    if len(by_dataset) < 2:
        return {}
    return {
        name: score_generations(
            [generated[i] for i in idx],
            [references[i] for i in idx],
            cfg,
            [rows[i] for i in idx] if rows else None,
        )
        for name, idx in sorted(by_dataset.items())
    }


def _write_per_label(path, per_label: dict[str, dict]) -> None:
    """``decoder_per_label.csv``: the clinical scores of each observation (empty without chest reports)."""
    columns = ["precision", "recall", "f1", "ci_low", "ci_high", "support", "n_generated"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *columns])
        for label, row in per_label.items():
            w.writerow([label, *(row.get(c) for c in columns)])


def _decoding(cfg: EvalConfig, decoder_dir) -> tuple[GenerationConfig, str]:
    """The decoding settings to evaluate with, and where they come from: the folder's own unless
    ``evaluate.generation`` replaces them."""
    from medlens.models.generation import GENERATION_FILE, read_generation_config

    folder = read_generation_config(decoder_dir)
    if cfg.generation is not None:
        differs = "" if folder is None or folder == cfg.generation else f" (the folder's: {to_dict(folder)})"
        logger.info("decoding with evaluate.generation %s%s", to_dict(cfg.generation), differs)
        return cfg.generation, "evaluate.generation" + differs
    if folder is None:  # a folder written before decoders carried their decoding
        logger.warning("%s has no %s: decoding with medlens's defaults", decoder_dir, GENERATION_FILE)
        return GenerationConfig(), "medlens defaults (the folder has no generation_config.json)"
    return folder, f"the decoder folder's {GENERATION_FILE}"


def _ood(decoder_dir: str | os.PathLike, generator: Any, images: list[str]) -> dict[str, Any] | None:
    """The out-of-distribution scores of the evaluated images in the decoder's own image space (the captioner's
    tower, or the VLM's image encoder); None for a folder without its training images' statistics."""
    import numpy as np

    from medlens.data.images import load_image
    from medlens.evaluate.encoder import ood_summary

    tower = Path(decoder_dir) / layout.TOWER
    if tower.is_dir():
        from medlens.models.captioner import ImageTower

        encoder = ImageTower(tower)
    elif hasattr(generator, "encode_images"):
        encoder = generator
    else:
        return None
    feats = [
        encoder.encode_images([load_image(p, grey=False) for p in images[i : i + 16]]).float().cpu().numpy()
        for i in range(0, len(images), 16)
    ]
    return ood_summary(decoder_dir, np.concatenate(feats)) if feats else None


def _tower_probes(
    cfg: EvalConfig, pairs, decoder_dir: str | os.PathLike, probes: Sequence[str | os.PathLike]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A captioner's own tower (``encoder_final/``) linear-probed on the experiment's split
    (``encoder_final_probe``) and on each probe dataset's (``encoder_final_external_probes``), and the
    probes' per-row scores; nothing for a decoder without its own tower or without ``pairs``."""
    tower = Path(decoder_dir) / layout.TOWER
    scores: list[dict[str, Any]] = []
    if pairs is None or not cfg.linear_probe.enabled or not (tower / "vision.safetensors").is_file():
        return {}, scores
    from medlens.evaluate.probes import probe_image_tower

    own, external = probe_image_tower(cfg, pairs, tower, probes, scores_out=scores)
    probed = {"encoder_final_probe": own}
    if external:
        probed["encoder_final_external_probes"] = external
    return probed, scores


def evaluate_decoder(
    cfg: EvalConfig,
    chat_dir: str | os.PathLike,
    decoder_dir: str | os.PathLike,
    *,
    pairs: str | os.PathLike | None = None,
    probes: Sequence[str | os.PathLike] = (),
    out_json: str | os.PathLike,
    out_generations: str | os.PathLike,
    out_per_label: str | os.PathLike,
    out_probe_scores: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Generate for ``chat/{cfg.split}.jsonl`` and score against the references.

    Args:
        cfg: evaluation settings (split, labeler, bootstrap, max_samples; decoding when ``cfg.generation`` is
            set, else the decoder folder's ``generation_config.json``).
        chat_dir: ``results/{experiment}/data/chat``.
        decoder_dir: ``results/{experiment}/decoder``.
        pairs: ``results/{experiment}/data/pairs.parquet``; with it, a decoder that saved its own image tower
            (``encoder_final/``, the captioner) has that tower linear-probed as ``encoder_final_probe``.
        probes: each probe dataset's own split (``data/probe/<dataset>.parquet``), on which that tower is
            also probed (``encoder_final_external_probes``, seed 004's NIH-14 and CheXpert probes).
        out_json, out_generations, out_per_label: the rule's outputs.
        out_probe_scores: the tower's multi-label probes' test probabilities and truth per row
            (:func:`medlens.evaluate.paired.write_probe_scores`; a header alone without a tower), for the
            report's paired comparisons.

    Returns:
        The metrics written to ``out_json``.
    """
    from medlens.models.generator import load_generator

    generation, decoding_source = _decoding(cfg, decoder_dir)
    chat_path = Path(chat_dir) / f"{cfg.split}.jsonl"
    records = read_chat(chat_path)
    if cfg.max_samples is not None and len(records) > cfg.max_samples:
        records = sorted(random.Random(cfg.seed).sample(records, cfg.max_samples), key=lambda r: r["id"])
    generator = load_generator(decoder_dir)
    prompts, references = zip(*(_target(r) for r in records), strict=True) if records else ((), ())
    generated = generator.generate([r["images"][0] for r in records], list(prompts), generation=generation)
    logger.info("generated %d reports for split '%s'", len(generated), cfg.split)

    _write_generations(out_generations, records, references, generated, chat_dir)

    rows = read_row_info(pairs, [r["id"] for r in records]) if pairs is not None else None
    overall = score_generations(list(generated), list(references), cfg, rows)
    if "vqa" in overall and not getattr(generator, "reads_prompts", True):
        overall["vqa"]["protocol"]["decoder"] = _IMAGE_ONLY
    result = {
        "split": cfg.split,
        "n": len(records),
        "overall": overall,
        "per_dataset": _per_dataset(records, references, generated, cfg, rows),
        "protocol": {
            "decoding": to_dict(generation),
            "decoding_source": decoding_source,
            "labeler": overall["clinical"].get("labeler"),
            "modalities": sorted({r.modality for r in rows}) if rows else [CHEST],
            "chat_file": str(chat_path),
            "max_samples": cfg.max_samples,
            "seed": cfg.seed,
        },
    }
    tower_probes, probe_scores = _tower_probes(cfg, pairs, decoder_dir, probes)
    result |= tower_probes
    if out_probe_scores is not None:
        write_probe_scores(out_probe_scores, probe_scores)
    result["ood"] = _ood(decoder_dir, generator, [r["images"][0] for r in records])
    result["environment"] = environment.record()
    write_json(result, out_json)
    _write_per_label(out_per_label, overall["clinical"].get("per_label", {}))
    logger.info(
        "decoder metrics: %s", json.dumps({k: v for k, v in overall["text"].items() if k != "protocol"})
    )
    return result
