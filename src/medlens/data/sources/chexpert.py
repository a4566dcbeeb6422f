"""CheXpert v1.0 and v1.0-small (Stanford AIMI; a ``path`` source).

Layout (datasets.md section 5): ``train.csv`` and ``valid.csv`` whose ``Path`` column starts with
``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``) even when the folder was unpacked without that top
level, so images are looked up with and without the prefix, relative to the CSV's folder and its
parent. The official split is the file (``valid`` is read as val). Labels are the 14 CheXpert columns,
selected by name (their order differs from MIMIC's and the labeler's): ``1.0`` positive, ``0.0``
negative, ``-1.0`` uncertain and blank not mentioned; ``uncertain_policy`` decides whether uncertain
counts as negative (``zeros``), positive (``ones``) or neither (``ignore``: listed in
``meta["uncertain"]`` for consumers to mask). There are no reports: the text is synthesised from the
labels, stating the explicit negatives and hedging uncertain findings (unless ``ones`` made them
positive), which stays true to what the labeler read in the report whatever the label policy.

The patient is the ``patientNNNNN`` path component; the study is ``patientNNNNN/studyN``. The view is
``AP``/``PA`` (or the rare ``LL``/``RL``) from ``AP/PA``, else ``LATERAL``/``FRONTAL`` from
``Frontal/Lateral``, which alone decides ``frontal_only`` (``view1_lateral`` and ``view2_frontal``
file names exist, so ``viewN`` says nothing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.manifest import _inside
from medlens.data.sources.readers import (
    CsvTable,
    chexpert_columns,
    chexpert_values,
    conflicting_rows,
    find_file,
    frontal_filter,
    load_label_map,
    normalise_view,
)
from medlens.data.text_from_labels import synthesize_text
from medlens.errors import DataError

__all__ = ["strip_prefix"]

logger = logging.getLogger(__name__)

_FILES = (("train.csv", "train"), ("valid.csv", "val"))
_PREFIX = re.compile(r"^(?:\./)?CheXpert-v1\.0(?:-small)?/", re.IGNORECASE)
_PATIENT = re.compile(r"(patient\d+)/(study\d+)/")


def strip_prefix(path: str) -> str:
    """``CheXpert-v1.0-small/train/patient00001/...`` -> ``train/patient00001/...``."""
    return _PREFIX.sub("", path.replace("\\", "/"))


def _locate(csv_dir: Path, path: str) -> Path | None:
    stripped = strip_prefix(path)
    for candidate in (csv_dir / stripped, csv_dir / path, csv_dir.parent / path, csv_dir.parent / stripped):
        if candidate.is_file():
            return candidate
    return None


def _age(raw: str) -> int | None:
    """Years from ``68`` or a pandas re-save's ``68.0`` (which was dropped unsaid); 0 stands for unknown."""
    m = re.fullmatch(r"(\d+)(?:\.0*)?", raw.strip())
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def _view(frontal_lateral: str, ap_pa: str) -> tuple[str | None, bool | None]:
    """(view code, frontal?) of one row."""
    kind = frontal_lateral.strip().lower()
    frontal = True if kind == "frontal" else False if kind == "lateral" else None
    view = normalise_view(ap_pa) or ("FRONTAL" if frontal else "LATERAL" if frontal is False else None)
    return view, frontal


@register_adapter("chexpert")
def chexpert_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """CheXpert train.csv/valid.csv: 14 labels with the uncertainty policy, official train/valid split."""
    root = Path(root)
    columns = load_label_map("chexpert_columns")
    found = False
    for filename, split in _FILES:
        try:
            path = find_file(root, (filename,), max_depth=2, what="CheXpert label file")
        except DataError:
            continue
        found = True
        yield from _read(cfg, CsvTable(path, required=("Path",)), split, columns, root.resolve())
    if not found:
        raise DataError(
            "no CheXpert label file found",
            file=str(root),
            expected="train.csv and/or valid.csv (with a 'Path' column) within 2 folder levels",
        )


def _read(cfg: DatasetConfig, table: CsvTable, split: str, columns, inside: Path) -> Iterator[RawRecord]:
    label_cols = chexpert_columns(table, columns)
    logger.info(
        "CheXpert: %s (%s), %d label columns, uncertain policy '%s'",
        table.path,
        split,
        len(label_cols),
        cfg.uncertain_policy,
    )
    csv_dir = table.path.parent
    repeated = conflicting_rows(table, "Path")  # which row's labels are right is unknown
    for row in table:
        rel = row.get("Path")
        decoded = chexpert_values(row.values, label_cols, cfg.uncertain_policy)
        view, frontal = _view(row.get(table.column("Frontal/Lateral")), row.get(table.column("AP/PA")))
        image = _locate(csv_dir, rel) if rel else None
        m = _PATIENT.search(strip_prefix(rel))
        reject, detail = row.problem, row.detail
        if reject is None and not rel:
            reject, detail = "missing image file", "the Path cell is empty"
        elif reject is None and rel in repeated:
            reject, detail = "repeated id with different rows", f"{table.path.name}: {repeated[rel]}"
        elif reject is None and decoded.invalid:
            col, value = decoded.invalid[0]
            reject, detail = "invalid label value", f"{col}={value!r}; expected 1.0, 0.0, -1.0 or blank"
        elif reject is None and image is None:
            reject, detail = (
                "missing image file",
                f"{rel} (also looked for {strip_prefix(rel)}) under {csv_dir}",
            )
        elif reject is None and not cfg.allow_outside_paths and not _inside(image, inside):
            # the manifests' guard: a Path of "../../x.jpg" or "/data/x.jpg" must not read some other file
            reject, detail = "image outside the dataset folder", f"{rel} (allow_outside_paths: true reads it)"
        reject = reject or frontal_filter(cfg.frontal_only, view, frontal)
        uncertain = [] if cfg.uncertain_policy == "ones" else decoded.uncertain
        text = (
            None
            if reject
            else synthesize_text(
                decoded.labels,
                modality="chest_xray",
                record_id=rel,
                seed=cfg.seed,
                negatives=decoded.negative,
                uncertain=uncertain,
                context={"view": view if frontal else None},
            )
        )
        if reject is None and not text:
            reject, detail = (
                "no findings recorded",
                "every label cell is blank, so there is nothing to describe",
            )
        age = row.get(table.column("Age"))
        meta = {
            "negative": decoded.negative,
            "uncertain": decoded.uncertain,
            "uncertain_policy": cfg.uncertain_policy,
            "sex": row.get(table.column("Sex")) or None,
            "age": _age(age),
            "frontal": frontal,
            "path": rel,
        }
        yield RawRecord(
            native_id=strip_prefix(rel) or f"{split}:line{row.line}",
            image=str(image) if image else rel,
            text=text,
            labels=decoded.labels,
            text_source="from_labels",
            modality="chest_xray",
            view=view,
            patient_id=m.group(1) if m else None,
            study_id=f"{m.group(1)}/{m.group(2)}" if m else None,
            official_split=split,
            meta={k: v for k, v in meta.items() if v is not None},
            source_ref=table.ref(row.line),
            reject=reject,
            reject_detail=detail,
        )
