"""How the images a model trained on were prepared: each training dataset's modality and store size.

Recorded in every model folder's ``medlens.json`` when training ends, so that ``medlens generate``,
``classify`` and ``embed`` prepare new images the way training did without the ``results/`` tree the model
came from: :func:`describe_training_images` reads ``pairs.parquet`` (modalities) and each dataset's
prepared parquet (its ``store_size``, from the footer ``prepare_datasets`` wrote).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medlens import layout
from medlens.data.prepare import read_prepared_summary

__all__ = ["describe_training_images"]


def describe_training_images(pairs_path: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"dataset", "adapter", "modality", "store_size", "rows"}]`` of the data in
    ``results/<experiment>/data/pairs.parquet``.

    ``store_size`` and ``adapter`` (the dataset's reader, which the model card's licence comes from) are None
    when the dataset's prepared parquet (``results/prepared/<dataset>.parquet``) is not beside the experiment
    or holds no medlens metadata.
    """
    pairs = Path(pairs_path)
    rows = pq.read_table(pairs, columns=["dataset", "modality"]).to_pylist()
    out = []
    for (dataset, modality), n in sorted(Counter((r["dataset"], r["modality"]) for r in rows).items()):
        prepared = layout.prepared_beside(layout.experiment_of(pairs, layout.PAIRS), dataset)
        summary = read_prepared_summary(prepared) if prepared.is_file() else {}
        size = (summary.get("config") or {}).get("store_size")
        out.append(
            {
                "dataset": dataset,
                "adapter": summary.get("adapter"),
                "modality": modality,
                "store_size": None if size is None else int(size),
                "rows": n,
            }
        )
    return out
