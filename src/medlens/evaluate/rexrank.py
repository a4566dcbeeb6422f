"""Generated chest radiograph reports in ReXrank's submission format (the public report-generation leaderboard).

ReXrank (rajpurkarlab/ReXrank, ``example_files/prediction.json``) takes one JSON object keyed by study id,
each entry with the study's images (``image_path``, ``key_image_path``), its ``split`` and the model's
report as ``model_prediction``. Its evaluation (``example_files/evaluation_script.md``) reads the ground truth
from the same entry, as ``"Findings: {section_findings} Impression: {section_impression}"``, so each entry
carries the reference's two sections as the source split them (MIMIC-CXR and IU X-ray's Kaggle form; a
missing section is null, as in ReXrank's own files). Where the source gives no sections (IU X-ray's R2Gen
form, a report prepared before medlens kept them) the two keys are left out, and a warning says so,
rather than a guessed split. medlens scores one image at a time, so a study evaluated
through several images gets the generation of one key image: a frontal view (PA before AP) when the view
is known, else the first image by id, and the entry says which. Study ids are the sources' own (MIMIC-CXR
``study_id``, IU X-ray's R2Gen ``CXR<uid>_IM-<n>``), the keys ReXrank's test files use (IU X-ray's Kaggle
form keys by its uid, which they do not). Only chest radiograph reports are exported: VQA answers, knee and
skin texts have no ReXrank track.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Any

from medlens.data.split import pair_rows
from medlens.errors import DataError
from medlens.io import atomic_path

__all__ = ["read_generations", "rexrank_submission", "export_rexrank"]

logger = logging.getLogger(__name__)
_VIEW_ORDER = {"PA": 0, "AP": 1}  # frontal first, PA the standard projection; anything else after


def read_generations(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``eval/generations.jsonl``; a line that is not a record with an id and a generation
    is an error naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not JSON ({e.msg})", file=str(path), row=n) from None
            if not isinstance(record, dict) or not {"id", "generated"} <= record.keys():
                raise DataError("a generation record needs 'id' and 'generated'", file=str(path), row=n)
            records.append(record)
    return records


def rexrank_submission(generations: list[dict[str, Any]], pairs: str | os.PathLike) -> dict[str, Any]:
    """The ReXrank prediction object of the chest radiograph reports among ``generations``.

    Args:
        generations: ``eval/generations.jsonl`` records (id, dataset, image, reference, generated).
        pairs: ``pairs.parquet``, for each row's study, modality, view and split.

    Raises:
        DataError: when a generated id is not in the pairs table, or two datasets share a study id.
    """
    columns = ["dataset", "study_id", "modality", "view", "text", "text_source", "split", "meta"]
    rows = pair_rows(pairs, columns, {g["id"] for g in generations})
    studies: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    owner: dict[str, str] = {}
    for g in generations:
        row = rows.get(g["id"])
        if row is None:
            raise DataError("a generated id is not in the pairs table", file=str(pairs), row=g["id"])
        if row["modality"] != "chest_xray" or row["text_source"] != "report":
            continue
        study = row["study_id"] or g["id"].split("/", 1)[1]
        if owner.setdefault(study, row["dataset"]) != row["dataset"]:
            raise DataError(
                f"study id {study!r} occurs in two datasets ({owner[study]}, {row['dataset']}); ReXrank keys "
                "predictions by study id alone, so export one dataset per experiment",
                file=str(pairs),
                row=g["id"],
            )
        studies[study].append((g, row))
    out, unsectioned = {}, []
    for study, members in sorted(studies.items()):
        members.sort(key=lambda m: (_VIEW_ORDER.get((m[1]["view"] or "").upper(), 2), m[0]["id"]))
        key, key_row = members[0]
        out[study] = {
            "key_image_path": key["id"].split("/", 1)[1],
            "image_path": sorted(m[0]["id"].split("/", 1)[1] for m in members),
            "dataset": key_row["dataset"],
            "split": key_row["split"],
            "view": key_row["view"],
            "report": key_row["text"],
            "model_prediction": key["generated"],
        }
        sections = _sections(key_row, pairs)
        if sections is None:
            unsectioned.append(study)
        else:
            out[study] |= {f"section_{n}": sections.get(n) for n in ("findings", "impression")}
    if unsectioned:
        logger.warning(
            "ReXrank export: %d of %d studies have no findings/impression sections from their source (e.g. %s); "
            "their entries lack section_findings and section_impression, which ReXrank's evaluation reads",
            len(unsectioned),
            len(out),
            unsectioned[0],
        )
    return out


def _sections(row: dict[str, Any], pairs: str | os.PathLike) -> dict[str, str] | None:
    """The reference's ``{"findings", "impression"}`` texts its source recorded in ``meta``, else None."""
    try:
        sections = json.loads(row["meta"] or "{}").get("sections")
    except (json.JSONDecodeError, AttributeError):
        raise DataError("meta is not a JSON object", file=str(pairs), row=row["id"]) from None
    if sections is None:
        return None
    if not isinstance(sections, dict) or not all(isinstance(v, str) for v in sections.values()):
        raise DataError(
            "meta.sections is not an object of section texts",
            file=str(pairs),
            row=row["id"],
            expected='{"findings": "...", "impression": "..."}',
        )
    return sections


def export_rexrank(
    generations: str | os.PathLike, pairs: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:
    """Write ``eval/rexrank.json`` from ``eval/generations.jsonl``; ``{}`` when the set holds no chest reports."""
    records = read_generations(generations)
    submission = rexrank_submission(records, pairs)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(submission, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info(
        "ReXrank submission: %d studies from %d generations (chest radiograph reports only)",
        len(submission),
        len(records),
    )
    return submission
