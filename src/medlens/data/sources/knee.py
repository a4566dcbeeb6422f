"""Knee radiographs with Kellgren-Lawrence grades: the Kaggle OAI set and Mendeley's expert-graded set.

Two layouts (datasets.md section 7), one label vocabulary (``KL0``..``KL4``, from grade folders named
``0``..``4``, ``0Normal``..``4Severe``, ``KL0``.. or ``Normal``..; ``resources/label_maps/knee_kl.yaml``):

* ``knee_kl_oai``: Kaggle ``shashwatwork/knee-osteoarthritis-dataset-with-severity``,
  ``{train,val,test}/{0..4}/9001695L.png``. The split folder is the official, patient-level split;
  ``auto_test/`` repeats ``test/`` and is not read: each of its files is a rejected record saying whether
  it repeats its ``test/`` counterpart byte for byte (a second copy of the tree likewise). The file name gives the
  OAI patient (7 digits) and the knee (``L``/``R``), which the text states. The same bytes under two
  grade folders are rejected as a whole (one knee has one grade; either copy alone would be a wrong label).
* ``knee_kl_mendeley``: Mendeley "Digital Knee X-ray Images", ``MedicalExpert-I/`` and
  ``MedicalExpert-II/``, each with ``0Normal``..``4Severe`` folders of ``NormalG0 (1).png`` files.
  The same image appears under both experts, sometimes with different grades, and some images
  repeat within one expert. Images are therefore grouped by their bytes: a group whose copies all
  carry one grade becomes one record (the other copies are rejected as duplicates, naming the
  kept one); a group the experts grade differently is rejected as a whole, naming every grade,
  because no grade can be trusted over the other. An image outside the expert folders (one renamed
  ``Medical Expert 1``) is a rejected record, not skipped. There are no patient ids and no official split.

Texts are synthesised from the grade with ``resources/text_templates/knee_xray.yaml``.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.folders import class_folder_images, copy_not_read, labels_disagree, sha1
from medlens.data.sources.folders import unread as unread_file
from medlens.data.sources.readers import (
    files_under,
    is_junk,
    load_label_map,
    normalise_split,
    unsupported_image,
)
from medlens.data.text_from_labels import synthesize_text
from medlens.errors import DataError

__all__ = ["parse_oai_name"]

logger = logging.getLogger(__name__)

_OAI_NAME = re.compile(r"^(\d{7})([LR])\b", re.IGNORECASE)
_EXPERT = re.compile(r"^MedicalExpert[-_ ]?(I{1,3}|\d)$", re.IGNORECASE)
_SIDE = {"L": "left", "R": "right"}


def parse_oai_name(name: str) -> tuple[str | None, str | None]:
    """(OAI patient id, knee side) from ``9001695L.png``; (None, None) for other names."""
    m = _OAI_NAME.match(name)
    return (m.group(1), _SIDE[m.group(2).upper()]) if m else (None, None)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_junk(p.name))


def _is_oai_tree(folder: Path) -> bool:
    """A folder holding train/ and val/ or test/ (``valid``/``validation`` count as val)."""
    splits = {normalise_split(d.name) for d in _subdirs(folder)}
    return "train" in splits and bool(splits & {"val", "test"})


def _find_dirs(root: Path, match, *, max_depth: int = 4) -> list[Path]:
    """Folders under ``root`` (itself included) for which ``match(folder)`` holds; not searched below a match."""
    found, stack = [], [(Path(root), 0)]
    while stack:
        here, depth = stack.pop()
        if match(here):
            found.append(here)
        elif depth < max_depth:
            stack.extend((c, depth + 1) for c in _subdirs(here))
    return sorted(found)


def _knee_text(grade: list[str], cfg: DatasetConfig, record_id: str, side: str | None) -> str:
    return synthesize_text(
        grade,
        modality="knee_xray",
        record_id=record_id,
        seed=cfg.seed,
        context={"side": side} if side else None,
    )


@register_adapter("knee_kl_oai", kaggle_slug="shashwatwork/knee-osteoarthritis-dataset-with-severity")
def oai_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """Kaggle OAI knee KL grades: {train,val,test}/{0..4}/<patient><L|R>.png, official split = folder."""
    label_map = load_label_map("knee_kl")
    trees = _find_dirs(Path(root), _is_oai_tree)
    if not trees:
        raise DataError(
            "no knee KL image tree found",
            file=str(root),
            expected="folders train/, val/ and test/ each holding grade folders 0..4",
        )
    tree = trees[0]
    for other in trees[1:]:
        logger.info("ignoring %s: a second copy of the tree in %s", other, tree)
        yield from copy_not_read(other, tree, Path(root), "knee_xray")
    if (tree / "auto_test").is_dir():
        logger.info("knee OAI: auto_test/ repeats test/ and is not read")
        yield from copy_not_read(tree / "auto_test", tree / "test", tree, "knee_xray")
    unparsed = 0
    images = []
    for found in class_folder_images(
        tree, kind="grade", classes="grade 0..4", modality="knee_xray", ignore=lambda c: c.name == "auto_test"
    ):
        if isinstance(found, RawRecord):
            yield found
        else:
            images.append(found)
    disagree = labels_disagree([path for _, path in images], tree, label_map)
    for split, path in images:
        grade_dir = path.parent
        grade, unknown = label_map.map([grade_dir.name])
        native_id = path.relative_to(tree).as_posix()
        patient, side = parse_oai_name(path.name)
        unparsed += patient is None
        reject, detail = None, ""
        if unknown:
            reject = f"unknown label '{unknown[0]}'"
            detail = f"grade folder {grade_dir.name!r}; expected 0..4, 0Normal..4Severe or KL0..KL4"
        elif path in disagree:
            reject, detail = "grade folders disagree", disagree[path]
        yield RawRecord(
            native_id=native_id,
            image=str(path),
            text=None if reject else _knee_text(grade, cfg, native_id, side),
            labels=grade,
            text_source="from_labels",
            modality="knee_xray",
            patient_id=patient,
            study_id=path.stem[:8].upper() if patient else None,  # patient + knee
            official_split=split,
            meta={k: v for k, v in {"side": side, "grade_folder": grade_dir.name}.items() if v},
            source_ref=str(path),
            reject=reject,
            reject_detail=detail,
        )
    if unparsed:
        logger.warning(
            "knee OAI: %d file names are not <7-digit patient><L|R>; they have no patient id", unparsed
        )


def _outside_experts(root: Path, experts: list[Path]) -> Iterator[RawRecord]:
    """A rejected record for each image in no expert folder (one renamed "Medical Expert 1" was never read)."""
    for path in files_under(root):
        if not any(e in path.parents for e in experts) and not unsupported_image(path):
            yield unread_file(
                path,
                root,
                "not in a MedicalExpert folder",
                "expected MedicalExpert-I/<grade>/<image> or MedicalExpert-II/<grade>/<image>",
                "knee_xray",
            )


@register_adapter("knee_kl_mendeley")
def mendeley_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """Mendeley knee KL grades: MedicalExpert-I/II grade folders; one record per distinct image, consensus grade."""
    root = Path(root)
    label_map = load_label_map("knee_kl")
    experts = _find_dirs(root, lambda d: bool(_EXPERT.match(d.name)))
    if not experts:
        raise DataError(
            "no MedicalExpert folders found",
            file=str(root),
            expected="folders MedicalExpert-I/ and/or MedicalExpert-II/ holding 0Normal..4Severe",
        )
    # (path, expert, grade folder, mapped grade, unknown names) per file, grouped by content
    groups: dict[str, list[tuple[Path, str, str, list[str], list[str]]]] = defaultdict(list)
    unread: list[RawRecord] = []  # files that are no image of a grade folder, rejected so they are counted
    for expert in experts:
        for path in files_under(expert):
            if path.parent.parent != expert:
                unread.append(
                    unread_file(
                        path,
                        root,
                        "not in a grade folder",
                        f"expected {expert.name}/<grade>/<image>",
                        "knee_xray",
                    )
                )
                continue
            if bad := unsupported_image(path):
                unread.append(unread_file(path, root, *bad, "knee_xray"))
                continue
            grade, unknown = label_map.map([path.parent.name])
            # empty and unreadable files are not grouped (empty ones would all match); prepare rejects each
            key = (sha1(path) or f"unreadable:{path}") if path.stat().st_size else f"empty:{path}"
            groups[key].append((path, expert.name, path.parent.name, grade, unknown))
    yield from unread
    yield from _outside_experts(root, experts)
    logger.info(
        "knee Mendeley: %d files, %d distinct images, experts %s",
        sum(map(len, groups.values())),
        len(groups),
        [e.name for e in experts],
    )
    for digest, copies in groups.items():
        usable = [c for c in copies if not c[4]]
        grades = {tuple(c[3]) for c in usable}
        keeper = usable[0][0].relative_to(root).as_posix() if usable else None
        by_expert = sorted({f"{c[1]}: {c[2]}" for c in copies})
        for path, expert, folder, grade, bad in copies:
            native_id = path.relative_to(root).as_posix()
            if bad:
                reject, detail = (
                    f"unknown label '{bad[0]}'",
                    f"grade folder {folder!r}; expected 0Normal..4Severe",
                )
            elif len(grades) > 1:
                reject, detail = "experts disagree on the grade", "; ".join(by_expert)
            elif native_id != keeper:
                reject, detail = "duplicate image", f"same bytes as {keeper} ({'; '.join(by_expert)})"
            else:
                reject, detail = None, ""
            yield RawRecord(
                native_id=native_id,
                image=str(path),
                text=None if reject else _knee_text(grade, cfg, native_id, None),
                labels=grade,
                text_source="from_labels",
                modality="knee_xray",
                meta={"expert": expert, "grade_folder": folder, "graded_by": by_expert, "sha1": digest},
                source_ref=str(path),
                reject=reject,
                reject_detail=detail,
            )
