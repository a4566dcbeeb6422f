"""What the report shows as examples: a strip of training images, retrieval queries with their top
matches, and generated reports beside their references, each with inline thumbnails.

Thumbnails are PNG ``data:`` URIs so the page makes no request. Text stays plain: the template escapes it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from medlens.data.images import load_image
from medlens.errors import DataError
from medlens.evaluate.retrieval import normalise_text

__all__ = ["thumbnail", "image_strip", "generation_examples", "retrieval_examples"]


def thumbnail(src: Any, size: int = 160) -> str:
    """A ``data:`` URI of a PNG at most ``size`` px on its longer side.

    Args:
        src: a path or encoded image bytes (anything ``medlens.data.images.load_image`` reads).
        size: longest side in pixels.
    """
    img = load_image(src, grey=False)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _images(pairs: Path, ids: list[str]) -> dict[str, bytes]:
    # Only the rows shown: the image column of a real dataset's pairs.parquet is gigabytes.
    if not ids:
        return {}
    table = pq.read_table(pairs, columns=["id", "image"], filters=[("id", "in", sorted(set(ids)))])
    return dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True))


def image_strip(pairs: str | os.PathLike, n: int = 8) -> list[dict[str, Any]]:
    """The first ``n`` training rows of ``pairs.parquet`` as ``{id, labels, thumbnail}``."""
    pairs = Path(pairs)
    if not pairs.is_file():
        return []
    rows = [
        r
        for r in pq.read_table(pairs, columns=["id", "labels", "split"]).to_pylist()
        if r["split"] == "train"
    ][:n]
    images = _images(pairs, [r["id"] for r in rows])
    return [
        {"id": r["id"], "labels": r["labels"], "thumbnail": thumbnail(images[r["id"]], 120)} for r in rows
    ]


def generation_examples(
    generations: str | os.PathLike, chat_dir: str | os.PathLike, n: int
) -> list[dict[str, Any]]:
    """The first ``n`` lines of ``generations.jsonl`` with a thumbnail of each image (None when the file is gone)."""
    generations, chat_dir = Path(generations), Path(chat_dir)
    examples: list[dict[str, Any]] = []
    if not generations.is_file():
        return examples
    with open(generations, encoding="utf-8") as f:
        for line in f:
            if len(examples) >= n:
                break
            g = json.loads(line)
            image = chat_dir / g["image"]
            examples.append({**g, "thumbnail": thumbnail(image) if image.is_file() else None})
    return examples


def _evaluated_rows(pairs: Path, split: str, max_samples: int | None, seed: int) -> list[dict[str, Any]]:
    # The same rows, in the same order, as medlens.evaluate.encoder's reader: retrieval examples index them.
    table = pq.read_table(pairs, columns=["id", "text", "split"])
    rows = [r for r in table.to_pylist() if r["split"] == split]
    if max_samples is not None and len(rows) > max_samples:
        rows = sorted(random.Random(seed).sample(rows, max_samples), key=lambda r: r["id"])
    return rows


def retrieval_examples(
    encoder_eval: dict[str, Any] | None, pairs: str | os.PathLike, *, top: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """The evaluation's retrieval example queries resolved to images and texts.

    Args:
        encoder_eval: ``eval/encoder.json`` (its ``retrieval.examples`` hold row indices of the split).
        pairs: ``pairs.parquet`` the evaluation read.
        top: matches shown per query.

    Returns:
        ``{"image_to_text": [...], "text_to_image": [...]}``; each query is ``{id, text, thumbnail, rank,
        n_positives, matches: [{id, text, thumbnail, score, correct}]}`` (thumbnails of the image side only).

    Raises:
        DataError: the indices do not fit the rows (the evaluation read other rows than ``pairs``).
    """
    examples = ((encoder_eval or {}).get("retrieval") or {}).get("examples") or {}
    if not examples or not Path(pairs).is_file():
        return {}
    protocol = (encoder_eval.get("protocol") or {}).get("config") or {}
    rows = _evaluated_rows(
        Path(pairs), encoder_eval["split"], protocol.get("max_samples"), protocol.get("seed", 0)
    )
    if len(rows) != encoder_eval.get("n"):
        raise DataError(
            f"{len(rows)} rows in split '{encoder_eval['split']}', the evaluation had {encoder_eval.get('n')}",
            file=str(pairs),
            expected="the pairs.parquet evaluate_encoder read",
        )
    texts = [normalise_text(r["text"]) for r in rows]
    for direction, queries in examples.items():
        for ex in queries:
            q, positives = ex["query"], ex.get("positives", [])
            if not all(0 <= i < len(rows) for i in [q, *ex["top"], *positives]) or any(
                texts[i] != texts[q] for i in positives
            ):
                raise DataError(
                    f"retrieval example {direction} {q}: its indices do not fit the split's rows",
                    file=str(pairs),
                    expected="the rows evaluate_encoder read, in its order",
                )
    shown = {rows[ex["query"]]["id"] for ex in examples.get("image_to_text", [])}
    shown |= {rows[i]["id"] for ex in examples.get("text_to_image", []) for i in ex["top"][:top]}
    images = _images(Path(pairs), sorted(shown))

    def item(i: int, score: float | None, q: int, size: int, with_image: bool) -> dict[str, Any]:
        return {
            "id": rows[i]["id"],
            "text": rows[i]["text"],
            "score": score,
            "correct": texts[i] == texts[q],
            "thumbnail": thumbnail(images[rows[i]["id"]], size) if with_image else None,
        }

    out: dict[str, list[dict[str, Any]]] = {}
    for direction, queries in examples.items():
        image_query = direction == "image_to_text"
        out[direction] = [
            {
                **item(ex["query"], None, ex["query"], 120, image_query),
                "rank": ex.get("rank"),
                "n_positives": ex.get("n_positives"),
                "matches": [
                    item(i, s, ex["query"], 96, not image_query)
                    for i, s in zip(ex["top"][:top], ex["scores"][:top], strict=True)
                ],
            }
            for ex in queries
        ]
    return out
