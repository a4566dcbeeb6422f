"""NIH ChestX-ray14: the full set (Kaggle ``nih-chest-xrays/data`` or the NIH Box copy) and the 5% sample.

Layouts (datasets.md section 2): images under ``images_0XX/images/*.png`` (Kaggle), a flat
``images/`` (Box) or ``sample/images/`` (sample), found through a basename index. Labels come from
``Data_Entry_2017*.csv`` (header split across brackets, often a trailing comma, ``Patient Gender``
or ``Patient Sex``) or ``sample_labels.csv`` (``060Y`` ages, plain width/height names). The official
patient-level split is ``train_val_list.txt``/``test_list.txt`` when present. Findings map to
CheXpert-14 names through ``resources/label_maps/nih14.yaml``; the NIH names stay in
``meta["native_labels"]``. ``BBox_List_2017.csv``, when present, gives boxes and so the side of a
finding (the patient's right is on the image's left), which the synthesised text then states.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.readers import (
    CsvTable,
    conflicting_rows,
    find_file,
    index_files,
    load_label_map,
    normalise_view,
)
from medlens.data.text_from_labels import synthesize_text
from medlens.errors import DataError

logger = logging.getLogger(__name__)

_FULL_CSV = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
_SAMPLE_CSV = ("sample_labels.csv",)
_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
_AGE = re.compile(r"^(\d+)(?:\.0*)?\s*([YMD]?)$", re.IGNORECASE)  # 57, 57.0 (a pandas re-save), 060Y
_AGE_UNIT = {"": 1.0, "Y": 1.0, "M": 1 / 12, "D": 1 / 365.25}
# (bracketed name in Data_Entry_2017*.csv, plain name in sample_labels.csv) of the size/spacing columns
_SIZE_COLUMNS = {
    "original_width": ("OriginalImage[Width", "OriginalImageWidth"),
    "original_height": ("Height]", "OriginalImageHeight"),
    "pixel_spacing_x": ("OriginalImagePixelSpacing[x", "OriginalImagePixelSpacing_x"),
    "pixel_spacing_y": ("y]", "OriginalImagePixelSpacing_y"),
}
_NIH_SIZE = 1024.0  # BBox_List_2017 coordinates are in the 1024 x 1024 image space


def parse_age(raw: str) -> float | None:
    """Age in years from ``57`` (full file) or ``060Y``/``011M``/``020D`` (sample file); None when blank or odd."""
    m = _AGE.match(raw.strip())
    if not m:
        return None
    return round(int(m.group(1)) * _AGE_UNIT[m.group(2).upper()], 2)


def _read_list(path: Path | None) -> set[str]:
    """The image names of an official split list. A list that is not UTF-8 (saved as UTF-16 by an editor) is an
    error: read with replacement characters it matched no image, and every image silently lost its split."""
    if path is None:
        return set()
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"byte {data[e.start : e.start + 1]!r} at offset {e.start} is not UTF-8",
            file=str(path),
            row=data.count(b"\n", 0, e.start) + 1,
            expected="a UTF-8 text file with one image name per line",
        ) from e
    # a path (images_001/images/x.png) names the same image as its basename
    return {line.strip().replace("\\", "/").rsplit("/", 1)[-1] for line in text.splitlines() if line.strip()}


def _optional(root: Path, name: str) -> Path | None:
    try:
        return find_file(root, (name,))
    except DataError:
        return None


def _read_boxes(path: Path | None) -> dict[str, list[dict]]:
    """Image Index -> boxes ``{label, x, y, w, h}`` from BBox_List_2017.csv (``Bbox [x``, ``y``, ``w``, ``h]``)."""
    boxes: dict[str, list[dict]] = defaultdict(list)
    if path is None:
        return boxes
    table = CsvTable(path, required=("Image Index", "Finding Label", ("Bbox [x", "x"), "y", "w", ("h]", "h")))
    cols = [table.column(c) for c in (("Bbox [x", "x"), "y", "w", ("h]", "h"))]
    for row in table:
        if row.problem:  # boxes only add a side to the text; the image's own row still decides the record
            logger.warning("%s: %s (%s); box ignored", table.ref(row.line), row.problem, row.detail)
            continue
        try:
            x, y, w, h = (float(row.get(c)) for c in cols)
        except ValueError:
            logger.warning("%s: unreadable box coordinates; box ignored", table.ref(row.line))
            continue
        boxes[row.get("Image Index")].append(
            {"label": row.get("Finding Label"), "x": x, "y": y, "w": w, "h": h}
        )
    return boxes


def _sides(boxes: list[dict]) -> dict[str, str]:
    """Finding (NIH name) -> left/right/bilateral, from where its boxes' centres lie."""
    found: dict[str, set[str]] = defaultdict(set)
    for b in boxes:
        centre = (b["x"] + b["w"] / 2) / _NIH_SIZE
        # the patient's right is on the image's left in PA and AP radiographs; the middle fifth is not called
        side = "right" if centre < 0.4 else "left" if centre > 0.6 else None
        if side:
            name = "Infiltration" if b["label"] == "Infiltrate" else b["label"]
            found[name].add(side)
    return {k: ("bilateral" if len(v) == 2 else next(iter(v))) for k, v in found.items()}


def _nih_records(cfg: DatasetConfig, root: Path, csv_names: tuple[str, ...]) -> Iterator[RawRecord]:
    # long: one pass over the label CSV; each reject reason sits beside the check that finds it
    root = Path(root)
    label_map = load_label_map("nih14")
    table = CsvTable(find_file(root, csv_names, what="NIH label file"), required=_REQUIRED)
    images = index_files(root, (".png",))
    if not images:
        raise DataError(
            "no .png images found",
            file=str(root),
            expected="images under images_0XX/images/, images/ or sample/images/",
        )
    test = _read_list(_optional(root, "test_list.txt"))
    train_val = _read_list(_optional(root, "train_val_list.txt"))
    boxes = _read_boxes(_optional(root, "BBox_List_2017.csv"))
    repeated = conflicting_rows(table, "Image Index")  # which row's labels are right is unknown
    sex_col = table.column(("Patient Gender", "Patient Sex"))
    size_cols = {k: table.column(v) for k, v in _SIZE_COLUMNS.items()}
    logger.info(
        "NIH: %s, %d images indexed, official split lists: %s",
        table.path.name,
        len(images),
        "yes" if test or train_val else "no",
    )
    listed = set()
    for row in table:
        name = row.get("Image Index")
        listed.add(name)
        natives = [x.strip() for x in row.get("Finding Labels").split("|") if x.strip()]
        labels, unknown = label_map.map(natives)
        path = images.get(name)
        reject, detail = row.problem, row.detail
        if reject is None and not name:
            reject, detail = "missing id", "empty Image Index"
        elif reject is None and not natives:
            reject, detail = "missing labels", "empty Finding Labels"
        elif reject is None and unknown:
            reject, detail = f"unknown label '{unknown[0]}'", row.get("Finding Labels")
        elif reject is None and "No Finding" in natives and len(natives) > 1:
            # NIH never lists "No Finding" beside a finding: which of the two is true is unknown
            reject, detail = "contradictory labels", f"{row.get('Finding Labels')}: No Finding with a finding"
        elif reject is None and name in repeated:
            reject, detail = "repeated id with different rows", repeated[name]
        elif reject is None and path is None:
            reject, detail = "missing image file", f"{name} is in no images folder under {root}"
        elif reject is None and images.ambiguous(name):
            reject, detail = images.ambiguous(name)
        elif reject is None and name in test and name in train_val:
            # which list is wrong is unknown; test would silently win (and could leak into training)
            reject, detail = (
                "in both official split lists",
                f"{name} is in test_list.txt and train_val_list.txt",
            )
        meta: dict = {"native_labels": natives}
        if (age := parse_age(row.get(table.column("Patient Age")))) is not None:
            meta["age"] = age
        if sex := row.get(sex_col):
            meta["sex"] = sex
        if (follow := row.get(table.column("Follow-up #"))).isdigit():
            meta["follow_up"] = int(follow)
        for key, col in size_cols.items():
            try:
                meta[key] = float(row.get(col)) if row.get(col) else None
            except ValueError:
                meta[key] = row.get(col)
        meta = {k: v for k, v in meta.items() if v is not None}
        sides = {}
        if name in boxes:
            meta["bboxes"] = boxes[name]
            sides = _sides(boxes[name])
        official = "test" if name in test else "train" if name in train_val else None
        if official == "train":
            meta["official_split_name"] = "train_val"  # NIH's list has no separate validation part
        text = (
            None
            if reject
            else synthesize_text(
                natives,
                modality="chest_xray",
                record_id=name,
                seed=cfg.seed,
                # only the image's own findings: a box for another (or a misspelt) label has no phrasing
                label_context={k: {"side": v} for k, v in sides.items() if k in natives},
                context={"view": normalise_view(row.get(table.column("View Position")))},
            )
        )
        yield RawRecord(
            native_id=name,
            image=str(path) if path else name,
            text=text,
            labels=labels,
            text_source="from_labels",
            modality="chest_xray",
            view=normalise_view(row.get(table.column("View Position"))),
            patient_id=str(int(row.get("Patient ID")))
            if row.get("Patient ID").isdigit()
            else row.get("Patient ID") or None,
            study_id=name.rsplit(".", 1)[0] or None,
            official_split=official,
            meta=meta,
            source_ref=table.ref(row.line),
            reject=reject,
            reject_detail=detail,
        )
    images.warn_unlisted(listed, table.path)


@register_adapter("nih_chest_xray", kaggle_slug="nih-chest-xrays/data")
def nih_full_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """NIH ChestX-ray14 full set: Data_Entry_2017*.csv, Kaggle images_0XX/images or Box images/, official split."""
    yield from _nih_records(cfg, root, _FULL_CSV)


@register_adapter("nih_chest_xray_sample", kaggle_slug="nih-chest-xrays/sample")
def nih_sample_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """NIH ChestX-ray14 5% sample: sample_labels.csv with NNNY ages, sample/images/."""
    yield from _nih_records(cfg, root, _SAMPLE_CSV)
