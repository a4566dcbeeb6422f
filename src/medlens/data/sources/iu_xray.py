"""Indiana University chest X-rays (IU X-ray / OpenI) with their real reports.

Two forms (datasets.md section 3):

* ``iu_xray``: Kaggle ``raddar/chest-xrays-indiana-university``: ``indiana_reports.csv`` (one row
  per study: findings, impression, MeSH, Problems) and ``indiana_projections.csv`` (one row per
  image: uid, filename, Frontal/Lateral) with the PNGs under ``images/images_normalized/``. The
  text is findings + impression, or the impression alone when findings are empty (514 studies).
  ``Problems`` head terms map to CheXpert-14 through ``resources/label_maps/iu_xray.yaml``. There is
  no official split.
* ``iu_xray_r2gen``: R2Gen's ``annotation.json`` (keys ``train``/``val``/``test``, two images per
  study) with ``images/<id>/{0,1}.png``; its split is kept as the official one. The list an entry is
  in is its split, as R2Gen's loader reads it; an entry's ``split`` field that disagrees is logged.

``XXXX`` redactions are kept as they are, in both forms, so the two give the same text.
IU records no patient id: the report (uid) is the finest grouping available and is used as the
patient, which keeps both images of a study in one split.
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
    cell_text,
    conflicting_rows,
    find_file,
    frontal_filter,
    index_files,
    load_label_map,
    normalise_split,
    normalise_view,
    read_json_file,
)
from medlens.errors import DataError

logger = logging.getLogger(__name__)

_R2GEN_KEYS = ("train", "val", "test")


def report_text(findings: str, impression: str) -> tuple[str, list[str]]:
    """Findings then impression; either alone when the other is empty. Returns (text, sections used)."""
    # cell_text: a re-saved table writes "nan" for the 514 empty findings, which must not become report text
    parts = [
        (name, " ".join(cell_text(t).split()))
        for name, t in (("findings", findings), ("impression", impression))
    ]
    parts = [(n, t) for n, t in parts if t]
    return " ".join(t for _, t in parts), [n for n, _ in parts]


def _uid(raw: str) -> str:
    """``1`` from ``1`` or ``1.0``: a table re-saved through pandas writes the uid as a float, and then no image
    found its report (every row rejected as "no report for this image")."""
    m = re.fullmatch(r"(\d+)\.0*", raw.strip())
    return m.group(1) if m else raw.strip()


_Report = tuple[dict[str, str], str | None, str, str]  # values, problem, detail, file:line


def _reports_by_uid(reports: CsvTable) -> tuple[dict[str, _Report], dict[str, str]]:
    """uid -> its report row, and uid -> why its report is unusable for rows the parser refused.

    A uid repeated with the same values is one report read twice (kept once, logged: nothing
    differs, so nothing is chosen). A uid repeated with different values has no trustworthy report:
    it becomes a problem naming every line, so its images are rejected rather than one row silently
    replacing the other. A record the CSV parser refused (a quote never closed) has no values; its
    uid is read from the start of its first line, so its images are rejected as "report row
    malformed", pointing at that line. Refused rows whose uid cannot be read are listed under "".
    """
    rows: dict[str, list] = {}
    refused: dict[str, list[tuple[int, str]]] = {}  # uid -> (line, what the parser said)
    where = reports.columns.index(reports.column("uid"))
    for row in reports:
        ref = reports.ref(row.line)
        if row.problem and not row.values:
            fields = row.raw.split(",")
            uid = (
                _uid(fields[where])
                if where < len(fields) - 1 and '"' not in ",".join(fields[: where + 1])
                else ""
            )
            refused.setdefault(uid, []).append((row.line, f"{ref} ({row.problem}: {row.detail})"))
        else:
            rows.setdefault(_uid(row.get("uid")), []).append(row)
    by_uid: dict[str, _Report] = {}
    repeated = 0
    for uid, same in rows.items():
        first = same[0]
        by_uid[uid] = (first.values, first.problem, first.detail, reports.ref(first.line))
        distinct = {(tuple(r.values.items()), r.problem) for r in same}
        if len(distinct) > 1 or uid in refused:
            lines = sorted([r.line for r in same] + [line for line, _ in refused.pop(uid, [])])
            by_uid[uid] = (
                first.values,
                "repeated uid with different reports",
                f"uid {uid} has different rows on lines {', '.join(map(str, lines))}",
                reports.ref(first.line),
            )
        else:
            repeated += len(same) - 1
    if repeated:
        logger.info("IU: %d report rows repeat an earlier row exactly; each is read once", repeated)
    malformed = {
        uid: "its report row " + "; ".join(t for _, t in refs) for uid, refs in refused.items() if uid
    }
    if "" in refused:
        malformed[""] = ", ".join(reports.ref(line) for line, _ in refused[""])
    return by_uid, malformed


@register_adapter("iu_xray", kaggle_slug="raddar/chest-xrays-indiana-university")
def iu_kaggle_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """IU X-ray, Kaggle form: indiana_reports.csv + indiana_projections.csv + images_normalized PNGs."""
    root = Path(root)
    label_map = load_label_map("iu_xray")
    reports = CsvTable(
        find_file(root, ("indiana_reports.csv",), what="IU report table"),
        required=("uid", "findings", "impression"),
    )
    projections = CsvTable(
        find_file(root, ("indiana_projections.csv",), what="IU projection table"),
        required=("uid", "filename", "projection"),
    )
    images = index_files(root, (".png",))
    by_uid, malformed = _reports_by_uid(reports)
    repeated = conflicting_rows(projections, "filename")  # one image under two uids: whose report is unknown
    used: set[str] = set()
    listed: set[str] = set()
    for row in projections:
        uid, filename = _uid(row.get("uid")), row.get("filename")
        used.add(uid)
        listed.add(filename)
        report, problem, detail, report_ref = by_uid.get(uid, ({}, None, "", ""))
        view = normalise_view(row.get("projection"))
        path = images.get(filename)
        reject, why = row.problem, row.detail
        if reject is None and uid not in by_uid and uid in malformed:
            reject, why = "report row malformed", f"uid {uid}: {malformed[uid]}"
        elif reject is None and uid not in by_uid:
            reject, why = "no report for this image", f"uid {uid} is not in {reports.path.name}"
            if malformed:  # a refused row whose uid could not be read may be this one
                why += f" (rows the CSV parser refused, uid unreadable: {malformed.get('', 'none')})"
        elif reject is None and problem:
            reject, why = problem, f"{report_ref}: {detail}"
        elif reject is None and filename in repeated:
            reject, why = "repeated id with different rows", f"{projections.path.name}: {repeated[filename]}"
        elif reject is None and path is None:
            reject, why = "missing image file", f"{filename} not found under {root}"
        elif reject is None and images.ambiguous(filename):
            reject, why = images.ambiguous(filename)
        reject = reject or frontal_filter(cfg.frontal_only, view)
        text, sections = report_text(report.get("findings", ""), report.get("impression", ""))
        natives = [x.strip() for x in report.get("Problems", "").split(";") if x.strip()]
        labels, _ = label_map.map(natives)  # open vocabulary: unmapped terms stay native only
        meta = {
            "native_labels": natives,
            "uid": uid,
            "report_sections": sections,
            "sections": {  # the sections apart, for ReXrank's export
                n: " ".join(report.get(n, "").split()) for n in sections if n in ("findings", "impression")
            }
            or None,
            "mesh": [x.strip() for x in report.get("MeSH", "").split(";") if x.strip()],
            "indication": cell_text(report.get("indication")) or None,
            "comparison": cell_text(report.get("comparison")) or None,
            "image_caption": cell_text(report.get("image")) or None,
        }
        yield RawRecord(
            native_id=filename or f"line{row.line}",
            image=str(path) if path else filename,
            text=text,
            labels=labels,
            text_source="report",
            modality="chest_xray",
            view=view,
            patient_id=uid or None,
            study_id=uid or None,
            meta={k: v for k, v in meta.items() if v is not None},
            source_ref=projections.ref(row.line),
            reject=reject,
            reject_detail=why,
        )
    images.warn_unlisted(listed, projections.path)
    unused = len(set(by_uid) - used)
    if unused:
        logger.info("IU: %d reports have no image in %s (not records)", unused, projections.path.name)


@register_adapter("iu_xray_r2gen")
def iu_r2gen_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """IU X-ray, R2Gen form: annotation.json (train/val/test) + images/<id>/{0,1}.png; official split kept."""
    path = find_file(Path(root), ("annotation.json",), what="R2Gen annotation file")
    data = read_json_file(path)
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in _R2GEN_KEYS):
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"top-level keys are {have}",
            file=str(path),
            expected="an object with the lists 'train', 'val' and 'test' (R2Gen annotation.json)",
        )
    image_dir = path.parent / "images"
    inside = Path(root).resolve()
    # R2Gen's loader reads ann[split], so the list an entry is in is its split; an entry's own "split"
    # field that says otherwise (an edited file) is counted and named, not followed
    disagree: list[str] = []
    for key in _R2GEN_KEYS:
        for i, entry in enumerate(data[key]):
            ref = f"{path}:{key}[{i}]"
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and entry["id"]
                and isinstance(entry.get("image_path"), list)
                and entry["image_path"]
                and all(isinstance(p, str) for p in entry["image_path"])
            )
            if not ok:
                yield RawRecord(
                    native_id=f"{key}[{i}]",
                    image="",
                    text=None,
                    source_ref=ref,
                    reject="malformed entry",
                    reject_detail="expected id (string), report and image_path (list of paths)",
                )
                continue
            study = entry["id"]
            field_split = entry.get("split")
            if isinstance(field_split, str) and normalise_split(field_split) != key:
                disagree.append(f"{key}[{i}] ({study}) says split {field_split!r}")
            for position, rel in enumerate(entry["image_path"]):
                image = image_dir / rel
                reject, why = None, ""
                if not isinstance(entry.get("report"), str):
                    reject, why = "malformed entry", "report is not a string"
                elif not cfg.allow_outside_paths and not _inside(image, inside):
                    # the manifests' guard: "../../x.png" or "/data/x.png" must not read some other file
                    reject, why = (
                        "image outside the dataset folder",
                        f"{rel} (allow_outside_paths: true reads it)",
                    )
                elif not image.is_file():
                    reject, why = "missing image file", str(image)
                yield RawRecord(
                    native_id=rel,
                    image=str(image),
                    text=entry.get("report") if isinstance(entry.get("report"), str) else None,
                    text_source="report",
                    modality="chest_xray",
                    # R2Gen ids are CXR<uid>_IM-...: the uid is the report
                    patient_id=study.split("_", 1)[0],
                    study_id=study,
                    official_split=normalise_split(key),
                    meta={"r2gen_id": study, "position": position},
                    source_ref=ref,
                    reject=reject or frontal_filter(cfg.frontal_only, None),
                    reject_detail=why,
                )
    if disagree:
        logger.warning(
            "%s: %d entries have a 'split' field other than the list they are in; the list is used, as "
            "R2Gen's loader does (first: %s)",
            path,
            len(disagree),
            "; ".join(disagree[:3]),
        )
