"""Kaggle ``paultimothymooney/chest-xray-pneumonia`` (Kermany 2018 paediatric chest X-rays).

Layout (datasets.md section 1): ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; the label
is the folder and the official split is the split folder. Zips from Kaggle often also hold a nested
duplicate ``chest_xray/chest_xray/`` tree, ``__MACOSX/`` and ``.DS_Store``: the tree with the most
images is read; each file of the others is a rejected record saying whether it repeats its counterpart
in the tree read. Three file-name schemes carry the patient
(``IM-0115-0001``, ``NORMAL2-IM-0262-0001``, ``person23_bacteria_76``) and the Mendeley v3+
re-release uses ``NORMAL-1049278-0001``/``BACTERIA-…``/``VIRUS-…``. Numbering in ``test/`` is
independent of ``train/``, so patient ids are scoped by split. The same bytes under ``NORMAL`` and
``PNEUMONIA`` are rejected as a whole (class folders disagree). The reports are synthesised from the
labels, as ExplainMyXray does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.folders import class_folder_images, copy_not_read, labels_disagree, split_of
from medlens.data.sources.readers import (
    IMAGE_SUFFIXES,
    is_junk,
    load_label_map,
)
from medlens.data.text_from_labels import synthesize_text
from medlens.errors import DataError

logger = logging.getLogger(__name__)

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)
_V3 = re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-\d+", re.IGNORECASE)
_SUBTYPE = {"bacteria": "bacterial", "virus": "viral"}


def parse_filename(name: str) -> tuple[str | None, str | None]:
    """(patient, pneumonia sub-type) from a Kermany file name; (None, None) when it follows no known scheme.

    >>> parse_filename("person23_bacteria_76.jpeg")
    ('person23', 'bacterial')
    >>> parse_filename("NORMAL2-IM-0262-0001.jpeg")
    ('NORMAL2-IM-0262', None)
    """
    if m := _PERSON.match(name):
        return m.group(1).lower(), _SUBTYPE[m.group(2).lower()]
    if m := _V3.match(name):
        return m.group(2), _SUBTYPE.get(m.group(1).lower())
    if m := _IM.match(name):
        return m.group(1).upper(), None
    return None, None


def _count_images(tree: Path) -> int:
    n = 0
    for split in tree.iterdir():
        if split_of(split):
            for cls in split.iterdir():
                if cls.is_dir() and not is_junk(cls.name):
                    n += sum(
                        1 for f in cls.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not is_junk(f.name)
                    )
    return n


def find_tree(root: Path, *, max_depth: int = 5) -> Path:
    """The folder holding ``train``/``val``/``test`` with the most images (the nested copy is a duplicate).

    Raises:
        DataError: when no such folder exists under ``root``.
    """
    return _trees(root, max_depth=max_depth)[0]


def _trees(root: Path, *, max_depth: int = 5) -> list[Path]:
    """Every image tree under ``root``, the one read first; the others are copies, not read."""
    candidates: list[tuple[int, int, Path]] = []
    stack = [(Path(root), 0)]
    while stack:
        here, depth = stack.pop()
        children = sorted(p for p in here.iterdir() if p.is_dir() and not is_junk(p.name))
        if any(split_of(c) for c in children):
            n = _count_images(here)
            if n:
                candidates.append((-n, depth, here))
        if depth < max_depth:
            stack.extend((c, depth + 1) for c in children if not split_of(c))
    if not candidates:
        raise DataError(
            "no chest-xray-pneumonia image tree found",
            file=str(root),
            expected="folders {train,val,test}/{NORMAL,PNEUMONIA}/ holding .jpeg images",
        )
    candidates.sort()
    for n, _, other in candidates[1:]:
        logger.info(
            "ignoring %s (%d images): a duplicate copy of the tree in %s", other, -n, candidates[0][2]
        )
    return [tree for _, _, tree in candidates]


@register_adapter("chest_xray_pneumonia", kaggle_slug="paultimothymooney/chest-xray-pneumonia")
def pneumonia_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """Kaggle chest-xray-pneumonia: NORMAL/PNEUMONIA folders, official split = folder, text from labels."""
    label_map = load_label_map("chest_xray_pneumonia")
    tree, *copies = _trees(Path(root))
    logger.info("reading chest-xray-pneumonia tree %s", tree)
    unparsed = 0
    for copy in copies:  # each file rejected, saying whether it repeats the one read
        others = [tree, *(c for c in copies if c != copy)]
        yield from copy_not_read(copy, tree, Path(root), "chest_xray", elsewhere=others)
    images = []
    for found in class_folder_images(
        tree,
        kind="class",
        classes="NORMAL|PNEUMONIA",
        modality="chest_xray",
        ignore=lambda child: any(c == child or child in c.parents for c in copies),  # rejected above
    ):
        if isinstance(found, RawRecord):
            yield found
        else:
            images.append(found)
    disagree = labels_disagree([path for _, path in images], tree, label_map)
    for split, path in images:
        cls_dir = path.parent
        labels, unknown = label_map.map([cls_dir.name])
        native_id = path.relative_to(tree).as_posix()
        patient, subtype = parse_filename(path.name)
        unparsed += patient is None
        pneumonia = "Pneumonia" in labels
        meta = {"native_labels": [cls_dir.name]}
        if pneumonia and subtype:
            meta["pneumonia_type"] = subtype
        reject, detail = None, ""
        if unknown:
            reject, detail = f"unknown label '{unknown[0]}'", f"class folder {cls_dir.name}"
        elif path in disagree:
            reject, detail = "class folders disagree", disagree[path]
        text = (
            None
            if reject
            else synthesize_text(
                labels,
                modality="chest_xray",
                record_id=native_id,
                seed=cfg.seed,
                label_context={"Pneumonia": {"qualifier": subtype}} if pneumonia and subtype else None,
            )
        )
        yield RawRecord(
            native_id=native_id,
            image=str(path),
            text=text,
            labels=labels,
            text_source="from_labels",
            modality="chest_xray",
            # test/ numbers its children independently of train/ and val/ (datasets.md)
            patient_id=f"{'test' if split == 'test' else 'train'}/{patient}" if patient else None,
            official_split=split,
            meta=meta,
            source_ref=str(path),
            reject=reject,
            reject_detail=detail,
        )
    if unparsed:
        logger.warning("%d file names follow no known naming scheme; they have no patient id", unparsed)
