"""Running trained models on new images: zero-shot labels, generated reports and embeddings.

Each function takes the model folder and a list of :class:`~medlens.inference.inputs.ImageInput`,
prepares every image as training did (:func:`~medlens.inference.inputs.model_input`), and returns
plain records plus the inputs that failed, so one unreadable file never stops the others.
Zero-shot classification goes through :func:`medlens.evaluate.zero_shot.zero_shot_probabilities`
with the prompt set and the logit scale ``evaluate_encoder`` uses, so the probabilities printed
are the ones the evaluation ranked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medlens import layout
from medlens.config import GenerationConfig
from medlens.errors import ConfigError, DataError
from medlens.inference.inputs import Failure, ImageInput, Preprocessing, load_batches, read_medlens_json
from medlens.io import atomic_path

# medlens.evaluate.zero_shot is imported where it is used: it pulls in scikit-learn, which
# `medlens embed` and `medlens generate` do not need (the command's start-up time is mostly imports).

__all__ = [
    "zero_shot_setup",
    "classify_images",
    "generation_settings",
    "generate_reports",
    "training_prompt",
    "embed_images",
    "EMBED_METADATA_KEY",
]

logger = logging.getLogger(__name__)

EMBED_METADATA_KEY = b"medlens.embed"


def zero_shot_setup(
    encoder_dir: str | os.PathLike, labels: Sequence[str] | None = None, prompts: str | None = None
) -> tuple[list[str], str]:
    """The labels and prompt set to classify with: those given, else the ones the encoder was evaluated with.

    ``medlens.json``'s ``zero_shot`` entry is the experiment's ``evaluate.zero_shot`` (training
    validated with it and ``evaluate_encoder`` reports it), so the defaults reproduce the evaluation.

    Raises:
        ConfigError: no labels given and none recorded, or labels the prompt set has no prompts for.
    """
    from medlens.evaluate.zero_shot import DEFAULT_TEMPLATES, build_prompts, load_prompt_templates

    recorded = read_medlens_json(encoder_dir).get("zero_shot") or {}
    known = (recorded.get("labels") or []) if isinstance(recorded, dict) else None
    if not isinstance(known, list) or not all(isinstance(lab, str) for lab in known):
        raise DataError(
            f"zero_shot.labels is {known!r}" if known is not None else "zero_shot is not an object",
            file=str(Path(encoder_dir) / "medlens.json"),
            expected="a list of label names under zero_shot, as train_encoder writes it",
        )
    templates = prompts or recorded.get("templates") or DEFAULT_TEMPLATES
    if not isinstance(templates, str):  # a damaged record: a TypeError traceback once used as a path
        raise DataError(
            f"zero_shot.templates is {templates!r}"[:200],
            file=str(Path(encoder_dir) / "medlens.json"),
            expected="the name of the prompt set the encoder was evaluated with, as train_encoder writes it",
        )
    if labels and not prompts:
        # a label outside what the model was evaluated on and what its prompt set names would be scored through
        # the generic "{label}" template: a number for a word the model never saw ("Banana")
        named = [*known, *load_prompt_templates(templates)["labels"]]
        unknown = [lab for lab in labels if lab not in named]
        if unknown:
            raise ConfigError(
                f"no prompts for '{unknown[0]}': the model was evaluated on other labels",
                key="--labels",
                expected=f"one of {', '.join(dict.fromkeys(named))}; or a prompt "
                "set of your own for new labels (--prompts my_prompts.yaml)",
            )
    labels = list(labels) if labels else known
    if not labels:
        raise ConfigError(
            f"'{encoder_dir}' records no zero-shot labels",
            key="--labels",
            expected="the labels to score, e.g. --labels Cardiomegaly 'Pleural Effusion'",
        )
    build_prompts(labels, templates)  # fails now, before any image is read, on a label without prompts
    return labels, templates


def _image_features(
    encoder, items: Sequence[ImageInput], prep: Preprocessing, batch_size: int
) -> tuple[list[ImageInput], np.ndarray, list[Failure]]:
    done, feats, failures = [], [], []
    for loaded, failed in load_batches(items, prep, batch_size):
        failures.extend(failed)
        if loaded:
            done.extend(item for item, _ in loaded)
            feats.append(encoder.encode_images([img for _, img in loaded]).float().cpu().numpy())
    if feats:
        return done, np.concatenate(feats), failures
    return (
        done,
        np.zeros((0, int(getattr(encoder, "model_cfg", {}).get("embed_dim", 0))), np.float32),
        failures,
    )


def _encode_texts(encoder, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    return np.concatenate(
        [
            encoder.encode_texts(list(texts[i : i + batch_size])).float().cpu().numpy()
            for i in range(0, len(texts), batch_size)
        ]
    )


def classify_images(
    encoder,
    items: Sequence[ImageInput],
    prep: Preprocessing,
    labels: Sequence[str],
    templates: str,
    *,
    batch_size: int = 64,
    ood: Any = None,
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Zero-shot probability of each label for each image.

    Args:
        encoder: from :func:`medlens.models.encoders.load_encoder`.
        items: the images.
        prep: how training prepared its images.
        labels: label names (see :func:`zero_shot_setup`).
        templates: prompt set name or YAML path.
        batch_size: images encoded at once.
        ood: the model folder's :class:`~medlens.models.ood.OodScorer` (None: no ``ood_score``).

    Returns:
        ``(records, failures)``; a record is ``{"id", "image", "probabilities": {label: p}, "ood_score"}``,
        where ``p = exp(pos) / (exp(pos) + exp(neg))`` with the encoder's own logit scale (CheXzero's rule).
    """
    from medlens.evaluate.zero_shot import zero_shot_probabilities

    done, feats, failures = _image_features(encoder, items, prep, batch_size)
    if not done:
        return [], failures
    probs = zero_shot_probabilities(
        feats, lambda t: _encode_texts(encoder, t), list(labels), templates, logit_scale=encoder.logit_scale
    )  # [N, L]
    scores = ood.score(feats) if ood is not None else [None] * len(done)
    records = [
        {
            "id": item.id,
            "image": str(item.path),
            "probabilities": {lab: float(p) for lab, p in zip(labels, row, strict=True)},
            "ood_score": None if score is None else float(score),
        }
        for item, row, score in zip(done, probs, scores, strict=True)
    ]
    return records, failures


def ood_scores(
    encoder, items: Sequence[ImageInput], prep: Preprocessing, ood: Any, *, batch_size: int = 64
) -> dict[str, float]:
    """``{image path: out-of-distribution score}`` of the images that could be read (``encoder`` is anything
    with ``encode_images``: an encoder, or a captioner's own tower)."""
    done, feats, _ = _image_features(encoder, items, prep, batch_size)
    return {str(item.path): float(s) for item, s in zip(done, ood.score(feats), strict=True)} if done else {}


def training_prompt(decoder_dir: str | os.PathLike) -> str | None:
    """The user turn a decoder was trained to answer with a report: recorded in its ``medlens.json``, else read
    from its experiment's chat data (a folder from before the record).

    Returns:
        The prompt without the image mark, or None when neither says.
    """
    from medlens.data.chat_format import report_prompt

    recorded = read_medlens_json(decoder_dir).get("prompt")
    if recorded is not None:
        return recorded
    return report_prompt(layout.in_experiment(Path(decoder_dir).parent, layout.CHAT))


def generation_settings(decoder_dir: str | os.PathLike, **overrides: Any) -> tuple[GenerationConfig, str]:
    """The decoder folder's decoding settings (its ``generation_config.json``, what ``evaluate_decoder`` used
    unless the experiment replaced them), with ``overrides`` (None ones dropped).

    Returns:
        ``(settings, where the defaults came from)``: the folder's file, else (a folder written before
        decoders carried it) :class:`~medlens.config.GenerationConfig`'s defaults.
    """
    from medlens.models.generation import GENERATION_FILE, read_generation_config

    base, source = read_generation_config(decoder_dir), str(Path(decoder_dir) / GENERATION_FILE)
    if base is None:
        base, source = GenerationConfig(), "medlens defaults"
    return replace(base, **{k: v for k, v in overrides.items() if v is not None}), source


def generate_reports(
    generator,
    items: Sequence[ImageInput],
    prep: Preprocessing,
    *,
    generation: GenerationConfig,
    prompt: str | None = None,
    batch_size: int = 8,
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """One generated report per image.

    Args:
        generator: from :func:`medlens.models.generator.load_generator`.
        items: the images.
        prep: how training prepared its images.
        generation: decoding settings.
        prompt: the user turn for VLM decoders (the captioner ignores it).
        batch_size: images per ``generate`` call.

    Returns:
        ``(records, failures)``; a record is ``{"id", "image", "report"}``.
    """
    records, failures = [], []
    for loaded, failed in load_batches(items, prep, batch_size):
        failures.extend(failed)
        if not loaded:
            continue
        texts = generator.generate(
            [img for _, img in loaded],
            [prompt] * len(loaded) if prompt else None,
            generation=generation,
            batch_size=batch_size,
        )
        records.extend(
            {"id": item.id, "image": str(item.path), "report": text}
            for (item, _), text in zip(loaded, texts, strict=True)
        )
    return records, failures


def embed_images(
    encoder,
    items: Sequence[ImageInput],
    prep: Preprocessing,
    out: str | os.PathLike,
    *,
    with_text: bool = False,
    batch_size: int = 64,
    model_dir: str | None = None,
    ood: Any = None,
) -> tuple[int, list[Failure]]:
    """Write unit-norm image (and text) embeddings of ``items`` to a parquet file.

    Columns: ``id``, ``path``, ``image_embedding`` (fixed-size list of float32), and with ``with_text``
    also ``text`` and ``text_embedding``. The file's key-value metadata ``medlens.embed`` records the
    model folder, the preprocessing, the embedding size and the ids that failed. Failed inputs are
    left out of the file and returned.

    Returns:
        ``(rows written, failures)``; nothing is written when no input could be read.
    """
    done, feats, failures = _image_features(encoder, items, prep, batch_size)
    if not done:
        return 0, failures
    dim = feats.shape[1]
    columns = {
        "id": pa.array([i.id for i in done], pa.string()),
        "path": pa.array([str(i.path) for i in done], pa.string()),
        "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(feats.astype(np.float32).ravel()), dim),
    }
    if ood is not None:  # how far each image lies from the training images (medlens.models.ood)
        columns["ood_score"] = pa.array(ood.score(feats), pa.float64())
    if with_text:
        texts = [i.text or "" for i in done]
        text_feats = _encode_texts(encoder, texts).astype(np.float32)
        columns["text"] = pa.array(texts, pa.string())
        columns["text_embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(text_feats.ravel()), dim)
    meta = {
        "model": model_dir,
        "preprocessing": prep.as_dict(),
        "embed_dim": dim,
        "normalized": True,
        "logit_scale": encoder.logit_scale,
        "n": len(done),
        "failed": [f.id for f in failures],
    }
    table = pa.table(columns).replace_schema_metadata({EMBED_METADATA_KEY: json.dumps(meta, sort_keys=True)})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    logger.info("wrote %d embeddings of size %d to %s", len(done), dim, out)
    return len(done), failures
