"""``manifest``: a folder of images plus a CSV that pairs each image with its text.

The CSV (``DatasetConfig.manifest`` inside ``DatasetConfig.path``) needs the columns ``image`` (a
path relative to the folder, or absolute) and ``text``. Optional columns: ``id`` (else the image
path is the id), ``labels`` (``|``-separated, any vocabulary but signed or decimal numbers, which
are exported values), ``patient_id``, ``study_id``, ``view``, ``split`` (train/val/test;
``validate``/``valid`` are read as val), ``modality`` (default ``chest_xray``; one of ``MODALITIES``,
else the row is rejected) and ``text_source`` (default ``report``). Every other column is kept in
``meta``. Clusters often stage data by hand, so this is the way in for any folder a user has. Image
paths must stay inside the folder (``../`` and links out of it are rejected rows) unless the dataset
sets ``allow_outside_paths: true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.images import MODALITIES
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.readers import CsvTable, frontal_filter, normalise_split, normalise_view

_KNOWN = (
    "id",
    "image",
    "text",
    "labels",
    "patient_id",
    "study_id",
    "view",
    "split",
    "modality",
    "text_source",
)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links followed, lies in ``folder`` (already resolved)."""
    return path.resolve() == folder or folder in path.resolve().parents


@register_adapter("manifest")
def manifest_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """A folder plus a CSV of image, text, labels and optional patient_id, study_id, view, split."""
    table = CsvTable(Path(root) / cfg.manifest, required=("image", "text"))
    inside = Path(root).resolve()
    extra = [c for c in table.columns if c not in _KNOWN]
    for row in table:
        ref = table.ref(row.line)
        image = row.get("image")
        native_id = row.get(table.column("id")) or image or f"line{row.line}"
        view = normalise_view(row.get(table.column("view"))) if table.column("view") else None
        labels = [x.strip() for x in row.get(table.column("labels")).split("|") if x.strip()]
        path = Path(image) if Path(image).is_absolute() else Path(root) / image
        reject = row.problem
        detail = row.detail
        modality = (row.get(table.column("modality")) or "chest_xray").strip()
        if modality.lower() in MODALITIES:
            modality = modality.lower()
        elif reject is None:
            reject, detail = (
                "unknown modality",
                f"{modality!r}; expected one of {', '.join(sorted(MODALITIES))}",
            )
        if reject is None and image and not cfg.allow_outside_paths and not _inside(path, inside):
            reject, detail = (
                "image outside the dataset folder",
                f"{image} (allow_outside_paths: true reads it)",
            )
        if reject is None and table.column("id") and not row.get("id"):
            reject, detail = "missing id", "the id cell is empty"
        elif reject is None and not image:
            reject, detail = "missing image file", "the image cell is empty"
        elif reject is None and not path.is_file():
            reject, detail = "missing image file", str(path)
        reject = reject or frontal_filter(cfg.frontal_only, view)
        yield RawRecord(
            native_id=native_id,
            image=str(path),
            text=row.get("text"),
            labels=labels,
            text_source=row.get(table.column("text_source")) or "report",
            modality=modality,
            view=view,
            patient_id=row.get(table.column("patient_id")) or None,
            study_id=row.get(table.column("study_id")) or None,
            official_split=normalise_split(row.get(table.column("split"))),
            meta={c: row.values[c] for c in extra if row.values.get(c)},
            source_ref=ref,
            reject=reject,
            reject_detail=detail,
        )
