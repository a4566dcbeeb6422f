"""PAD-UFES-20 smartphone skin-lesion photographs (Mendeley Data; a ``path`` source).

Layout (datasets.md section 6): ``metadata.csv`` (26 columns, one row per image; the exact header
includes the ``fitspatrick`` spelling) and PNGs spread over ``images/imgs_part_{1,2,3}/``, often
doubled as ``imgs_part_1/imgs_part_1/`` by unzipping in place, so images are found by name. The
six diagnoses map through ``resources/label_maps/pad_ufes_20.yaml`` (BOD merged into SCC). Three
kinds of missing value occur (blank cells, ``UNK``, and the 804-row block without demographics);
none of them is guessed: the text synthesised from the metadata (``resources/text_templates/
dermatology.yaml``) states only the site, diameters, symptoms answered ``True``/``False`` and a
biopsy when recorded. Booleans are parsed case-insensitively (an Excel re-save writes ``TRUE``).

There is no official split; the patient (``PAT_n``) groups the splits and a lesion with several
images is one study (``PAT_n/<lesion_id>``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.readers import (
    CsvTable,
    cell_text,
    conflicting_rows,
    find_file,
    index_files,
    load_label_map,
    parse_bool,
)
from medlens.data.text_from_labels import load_templates, synthesize_text
from medlens.errors import DataError

logger = logging.getLogger(__name__)

_REQUIRED = ("patient_id", "lesion_id", "diagnostic", "img_id")
_SYMPTOMS = ("itch", "grew", "hurt", "changed", "bleed", "elevation")
_HISTORY = (
    "smoke",
    "drink",
    "pesticide",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "biopsed",
)
_COUNTRY = {"BRASIL": "BRAZIL"}  # both spellings occur in the background columns


def _number(raw: str) -> float | None:
    """A finite number, or None: blank, ``UNK``, text and ``nan``/``inf`` (a pandas re-save writes
    ``nan`` for a blank cell) are all missing values, so no NaN reaches the text or the meta JSON and
    ``int()`` of the value cannot fail."""
    try:
        value = float(raw) if raw.strip() else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


# values no lesion or patient can have; kept, they went into the text ("It measures -6 x 5 mm")
_RANGES = {
    "diameter_1": (0.0, 500.0),
    "diameter_2": (0.0, 500.0),
    "fitspatrick": (1.0, 6.0),
    "age": (0.0, 120.0),
}


def _implausible(row: dict[str, str]) -> list[str]:
    """``column=value`` for each number outside what the column can hold (a diameter of 0 or less, ...)."""
    bad = []
    for col, (low, high) in _RANGES.items():
        value = _number(row.get(col, ""))
        if value is not None and not (
            low < value <= high if col.startswith("diameter") else low <= value <= high
        ):
            bad.append(f"{col}={row[col]}")
    return bad


def _mm(value: float) -> str:
    return f"{value:g}"  # 6.0 -> "6", 6.5 -> "6.5"


def _context(row: dict[str, str], words: dict[str, list[str]]) -> tuple[dict, dict]:
    """(template context, meta) of one metadata row; blank and UNK values are left out of the text."""
    row = {k: cell_text(v) for k, v in row.items()}  # a pandas re-save's "nan" is a blank cell, not a site
    row.update(dict.fromkeys((b.split("=")[0] for b in _implausible(row)), ""))  # missing, as a blank cell is
    meta: dict = {}
    for col in (*_SYMPTOMS, *_HISTORY):
        if col in row:
            meta[col] = parse_bool(row[col])
    present = [words[s][0] for s in _SYMPTOMS if meta.get(s) is True]
    absent = [words[s][1] for s in _SYMPTOMS if meta.get(s) is False]
    d1, d2 = _number(row.get("diameter_1", "")), _number(row.get("diameter_2", ""))
    fitz = _number(row.get("fitspatrick", ""))
    age = _number(row.get("age", ""))
    meta.update(
        {
            "region": row.get("region") or None,
            "diameter_1_mm": d1,
            "diameter_2_mm": d2,
            "fitzpatrick": int(fitz) if fitz is not None else None,
            "age": int(age) if age is not None else None,
            "gender": row.get("gender") or None,
            "background_father": _COUNTRY.get(row.get("background_father", ""), row.get("background_father"))
            or None,
            "background_mother": _COUNTRY.get(row.get("background_mother", ""), row.get("background_mother"))
            or None,
            "lesion_id": row.get("lesion_id"),
            "native_labels": [row.get("diagnostic")],
        }
    )
    context = {
        "site": (row.get("region") or "").lower() or None,
        "present_symptoms": present,
        "absent_symptoms": absent,
        "biopsy": "yes" if meta.get("biopsed") is True else None,
    }
    if d1 is not None and d2 is not None:
        context.update(diameter_1=_mm(d1), diameter_2=_mm(d2))
    return context, {k: v for k, v in meta.items() if v is not None}


@register_adapter("pad_ufes_20")
def pad_ufes_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """PAD-UFES-20: metadata.csv + imgs_part_N PNGs, six diagnoses, text from the clinical metadata."""
    root = Path(root)
    label_map = load_label_map("pad_ufes_20")
    words = load_templates("dermatology")["symptom_words"]
    table = CsvTable(find_file(root, ("metadata.csv",), what="PAD-UFES-20 metadata"), required=_REQUIRED)
    images = index_files(root, (".png",))
    if not images:
        zips = sorted(p.name for p in root.rglob("imgs_part_*.zip"))
        raise DataError(
            "no .png images found" + (f"; the archives {zips} are not extracted" if zips else ""),
            file=str(root),
            expected="PNGs under images/imgs_part_1..3/ (extract the imgs_part_N.zip files)",
        )
    repeated = conflicting_rows(table, "img_id")  # which row's diagnosis is right is unknown
    logger.info("PAD-UFES-20: %s, %d images indexed", table.path, len(images))
    listed = set()
    for row in table:
        img_id, patient, lesion = row.get("img_id"), row.get("patient_id"), row.get("lesion_id")
        listed.add(img_id)
        labels, unknown = label_map.map([row.get("diagnostic")])
        path = images.get(img_id)
        reject, detail = row.problem, row.detail
        if reject is None and not img_id:
            reject, detail = "missing id", "empty img_id"
        elif reject is None and not row.get("diagnostic"):
            reject, detail = "missing labels", "empty diagnostic"
        elif reject is None and unknown:
            reject, detail = (
                f"unknown label '{unknown[0]}'",
                f"diagnostic {unknown[0]!r}; expected one of {', '.join(sorted(label_map.mapping))}",
            )
        elif reject is None and img_id in repeated:
            reject, detail = "repeated id with different rows", repeated[img_id]
        elif reject is None and path is None:
            reject, detail = "missing image file", f"{img_id} is in no imgs_part_N folder under {root}"
        elif reject is None and images.ambiguous(img_id):
            reject, detail = images.ambiguous(img_id)
        if bad := _implausible(row.values):
            logger.warning(
                "%s: %s out of range; left out of the text and metadata", table.ref(row.line), ", ".join(bad)
            )
        context, meta = _context(row.values, words)
        text = (
            None
            if reject
            else synthesize_text(
                labels, modality="dermatology", record_id=img_id, seed=cfg.seed, context=context
            )
        )
        yield RawRecord(
            native_id=img_id or f"line{row.line}",
            image=str(path) if path else img_id,
            text=text,
            labels=labels,
            text_source="from_labels",
            modality="dermatology",
            patient_id=patient or None,
            study_id=f"{patient}/{lesion}" if patient and lesion else None,
            meta=meta,
            source_ref=table.ref(row.line),
            reject=reject,
            reject_detail=detail,
        )
    images.warn_unlisted(listed, table.path)
