"""MIMIC-CXR-JPG 2.x with the MIMIC-CXR reports (PhysioNet, credentialed: a ``path`` source only).

Layout (datasets.md section 4): images at ``files/p10/p10000032/s50414267/<dicom_id>.jpg``; the
per-image ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (view, study date/time) and ``-split.csv(.gz)``
(``train``/``validate``/``test``, read as train/val/test); the per-study ``-chexpert.csv(.gz)``
(14 labels in alphabetical order, ``1.0``/``0.0``/``-1.0``/blank, decoded by name with the dataset's
``uncertain_policy``). Reports come from ``mimic-cxr-reports.zip`` as
``files/p10/p10000032/s50414267.txt``, next to the study folder; they are looked up under the data
folder itself and under any ``*report*`` folder within two levels of it, so the two downloads can
be unpacked side by side.

The text is the report's FINDINGS then IMPRESSION section, split as MIT-LCP's
``txt/section_parser.py`` does (uppercase headers after a newline and a space; ``CONCLUSION``,
``FINDINGS AND IMPRESSION`` and misspellings normalised; the last non-empty section of each kind
wins, as ``create_section_files.py`` does). A report with neither falls back to its last paragraph,
as MIT-LCP's does, and says so in ``meta["report_sections"]``. ``___`` PHI placeholders are kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.readers import (
    CsvTable,
    chexpert_columns,
    chexpert_values,
    find_file,
    frontal_filter,
    is_junk,
    load_label_map,
    normalise_split,
    normalise_view,
)

__all__ = ["split_sections", "section_texts", "report_text", "parse_study_time"]

logger = logging.getLogger(__name__)

_VERSIONS = ("2.0.0", "2.1.0")
_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
# section names as MIT-LCP normalises them (only the ones that decide findings/impression)
_NAMES = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "impresson": "impression",
    "impession": "impression",
    "impresion": "impression",
    "findngs": "findings",
    "finidngs": "findings",
    "findins": "findings",
}
_FINDINGS_LIKE = re.compile(
    r"(chest|portable|pa and lat|ap and lateral|two views|frontal|one view|lateral view)"
)


def _normalise(name: str) -> str:
    name = " ".join(name.lower().split())
    if name in _NAMES:
        return _NAMES[name]
    for main in ("impression", "findings", "history", "comparison", "addendum"):
        if main in name:
            return main
    return "findings" if _FINDINGS_LIKE.search(name) else name


def split_sections(report: str) -> list[tuple[str, str]]:
    """(normalised section name, text) pairs in report order; the text before the first header is ``preamble``."""
    headers = list(_HEADER.finditer(report))
    if not headers:
        return [("full report", report)]
    sections = [("preamble", report[: headers[0].start(1)])]
    for i, m in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(report)
        sections.append((_normalise(m.group(1)), report[m.end() : end]))
    return sections


def section_texts(report: str) -> dict[str, str]:
    """``{"findings": ..., "impression": ...}`` of a MIMIC-CXR report, whitespace collapsed, the non-empty ones
    in that order (ReXrank's ``section_findings`` and ``section_impression``)."""
    found: dict[str, str] = {}
    for name, text in split_sections(report):
        if name in ("findings", "impression") and text.strip():
            found[name] = " ".join(text.split())  # a later section of the same kind wins
    return {n: found[n] for n in ("findings", "impression") if n in found}


def report_text(report: str) -> tuple[str, list[str]]:
    """FINDINGS then IMPRESSION of a MIMIC-CXR report; the last paragraph when it has neither.

    Returns:
        (text with whitespace collapsed, names of the sections used).
    """
    found = section_texts(report)
    if found:
        return " ".join(found.values()), list(found)
    sections = split_sections(report)
    paragraphs = [p for p in re.split(r"\n\s*\n", sections[-1][1]) if p.strip()]
    if len(paragraphs) > 1:
        return " ".join(paragraphs[-1].split()), ["last_paragraph"]
    return "", []


def parse_study_time(raw: str) -> str | None:
    """``HH:MM:SS`` from MIMIC's ``StudyTime`` float, whose leading zero is lost (``80556.875`` is 08:05:56)."""
    try:
        whole = int(float(raw))
    except (ValueError, OverflowError):  # OverflowError: `inf` or `1e400` from a re-saved table
        return None
    digits = f"{whole:06d}"
    if len(digits) != 6 or int(digits[:2]) > 23 or int(digits[2:4]) > 59 or int(digits[4:]) > 59:
        return None
    return f"{digits[:2]}:{digits[2:4]}:{digits[4:]}"


def _table(root: Path, kind: str, required: tuple) -> CsvTable:
    names = tuple(f"mimic-cxr-{v}-{kind}.csv{gz}" for v in _VERSIONS for gz in (".gz", ""))
    return CsvTable(find_file(root, names, max_depth=2, what=f"MIMIC-CXR {kind} table"), required=required)


def _report_roots(root: Path) -> list[Path]:
    roots = [root]
    for depth_one in sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p.name)):
        candidates = [
            depth_one,
            *sorted(p for p in depth_one.iterdir() if p.is_dir() and not is_junk(p.name)),
        ]
        roots.extend(p for p in candidates if "report" in p.name.lower() and (p / "files").is_dir())
    return roots


def _study_path(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


@register_adapter("mimic_cxr")
def mimic_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """MIMIC-CXR-JPG: FINDINGS/IMPRESSION of the reports, CheXpert labels, official split (validate -> val)."""
    # long: one pass joining MIMIC's four tables per image; each reject reason sits beside its check
    root = Path(root)
    columns = load_label_map("chexpert_columns")
    metadata = _table(root, "metadata", ("dicom_id", "subject_id", "study_id"))
    split_table = _table(root, "split", ("dicom_id", "split"))
    chexpert = _table(root, "chexpert", ("subject_id", "study_id"))
    label_cols = chexpert_columns(chexpert, columns)
    splits, split_problems = _by_key(
        split_table, "dicom_id", lambda r: normalise_split(r.get("split")), "split"
    )
    labels_of, label_problems = _by_key(
        chexpert, "study_id", lambda r: (r.values, chexpert.ref(r.line)), "label", _id
    )
    report_roots = _report_roots(root)
    logger.info(
        "MIMIC-CXR: %s, %d studies labelled, %d images in the split table, reports searched in %s",
        metadata.path.name,
        len(labels_of),
        len(splits),
        [str(p) for p in report_roots],
    )
    reports: dict[str, tuple | None] = {}  # study -> _read_report(...)
    seen_studies: set[str] = set()
    seen_images: set[str] = set()
    for row in metadata:
        dicom, subject, study = row.get("dicom_id"), _id(row.get("subject_id")), _id(row.get("study_id"))
        seen_studies.add(study)
        seen_images.add(dicom)
        view = normalise_view(row.get(metadata.column("ViewPosition")))
        image = _study_path(root, subject, study) / f"{dicom}.jpg"
        reject, detail = row.problem, row.detail
        if reject is None and not (dicom and subject.isdigit() and study.isdigit()):
            reject, detail = "malformed row", "dicom_id, subject_id and study_id must be set (ids are digits)"
        if reject is None and study not in reports:
            reports[study] = _read_report(report_roots, subject, study)
        report = reports.get(study)
        if reject is None and report is None:
            reject, detail = "missing report file", f"s{study}.txt not found next to the study folder"
        elif reject is None and report[4]:
            reject, detail = report[4][0], f"{report[2]}: {report[4][1]}"
        elif reject is None and not report[0]:
            reject, detail = "empty report text", f"{report[2]} has no FINDINGS, IMPRESSION or last paragraph"
        elif reject is None and not image.is_file():
            reject, detail = "missing image file", str(image)
        if reject is None and dicom in split_problems:
            reject, detail = split_problems[dicom]
        elif reject is None and study in label_problems:
            reject, detail = label_problems[study]
        reject = reject or frontal_filter(cfg.frontal_only, view)
        text, sections, report_path, section_text, _ = report or ("", [], "", {}, None)
        values, label_ref = labels_of.get(study, ({}, ""))
        decoded = chexpert_values(values, label_cols, cfg.uncertain_policy)
        if reject is None and decoded.invalid:
            reject, detail = (
                "invalid label value",
                f"{label_ref}: {decoded.invalid[0][0]}={decoded.invalid[0][1]!r}",
            )
        meta = {
            "subject_id": subject,
            "study_id": study,
            "report": report_path,
            "report_sections": sections,
            "sections": section_text or None,  # the sections apart, for ReXrank's export
            "view_position": row.get(metadata.column("ViewPosition")) or None,
            "procedure": row.get(metadata.column("PerformedProcedureStepDescription")) or None,
            "study_date": row.get(metadata.column("StudyDate")) or None,
            "study_time": parse_study_time(row.get(metadata.column("StudyTime"))),
            "orientation": row.get(metadata.column("PatientOrientationCodeSequence_CodeMeaning")) or None,
            "negative": decoded.negative,
            "uncertain": decoded.uncertain,
            "uncertain_policy": cfg.uncertain_policy,
            "labelled": study in labels_of,
        }
        yield RawRecord(
            native_id=dicom or f"line{row.line}",
            image=str(image),
            text=text,
            labels=decoded.labels,
            text_source="report",
            modality="chest_xray",
            view=view,
            patient_id=subject or None,
            study_id=study or None,
            official_split=splits.get(dicom),
            meta={k: v for k, v in meta.items() if v is not None},
            source_ref=metadata.ref(row.line),
            reject=reject,
            reject_detail=detail,
        )
    # rows of the other tables that no metadata row reads: a metadata table cut short, or ids written otherwise
    for table, keys, seen, what in (
        (chexpert, labels_of, seen_studies, "study_id"),
        (split_table, splits, seen_images, "dicom_id"),
    ):
        if unmatched := sorted(set(keys) - seen):
            logger.warning(
                "%s: %d rows name a %s that is in no row of %s (%s); they are not used",
                table.path,
                len(unmatched),
                what,
                metadata.path.name,
                ", ".join(unmatched[:3]),
            )


_NUMERIC_ID = re.compile(r"[ps]?(\d+)(?:\.0*)?")


def _id(raw: str) -> str:
    """A subject or study id as its digits: ``50414267.0`` (a table re-saved through pandas as floats) and
    ``s50414267`` (the path's prefix) -> ``50414267``; anything else unchanged, for the row checks to refuse.
    Left as written, such ids matched no label row, and the study's images were silently unlabelled."""
    m = _NUMERIC_ID.fullmatch(raw.strip())
    return m.group(1) if m else raw


def _by_key(
    table: CsvTable, key: str, value, what: str, normalise=lambda k: k
) -> tuple[dict, dict[str, tuple[str, str]]]:
    """``({row[key]: value(row)}, {key: (reason, detail)})``: the usable rows, and the keys no value can be trusted for.

    A key on several rows with the same values is one row read twice (collapsed, logged). A key on
    rows that differ has no trustworthy value (``conflicting <what> rows``, naming the lines), and neither has
    a key whose row the CSV reader flagged (``<what> row unusable``: a non-UTF-8 byte, a wrong field count),
    so the images it describes are rejected instead of the last row silently winning or the images silently
    going without labels or split. A refused record whose key cannot be read is counted in the log.
    """
    # a fingerprint and line per key, not the rows: the split table has a row per MIMIC image (377,000)
    out, first, lines, differing, broken, bad = {}, {}, {}, set(), {}, []
    for row in table:
        if row.problem is not None:
            if k := normalise(row.get(key)):
                broken.setdefault(k, f"{table.ref(row.line)}: {row.problem} ({row.detail})")
            else:
                bad.append(f"line {row.line}: {row.problem}")
            continue
        k, fingerprint = normalise(row.get(key)), hash(tuple(row.values.items()))
        if k not in first:
            first[k], out[k] = (fingerprint, row.line), value(row)
            continue
        lines.setdefault(k, [first[k][1]]).append(row.line)
        if fingerprint != first[k][0]:
            differing.add(k)
    if bad:
        logger.warning(
            "%s: %d unusable rows without a readable %s ignored (%s)",
            table.path,
            len(bad),
            key,
            "; ".join(bad[:3]),
        )
    problems = {}
    for k in differing:
        del out[k]
        where = ", ".join(map(str, lines[k]))
        problems[k] = (
            f"conflicting {what} rows",
            f"{table.path}: {key} {k} is on lines {where} with different values",
        )
    for k, why in broken.items():
        out.pop(k, None)
        problems[k] = (f"{what} row unusable", why)
    repeated = sum(len(where) - 1 for k, where in lines.items() if k not in differing)
    if repeated:
        logger.info("%s: %d rows repeat an earlier row exactly; each is read once", table.path, repeated)
    return out, problems


def _read_report(
    roots: list[Path], subject: str, study: str
) -> tuple[str, list[str], str, dict[str, str], tuple[str, str] | None] | None:
    """(text, sections used, report file, the text of each section used, (reason, detail) when the file is
    unusable) of a study's report."""
    for base in roots:
        path = _study_path(base, subject, study).with_suffix(".txt")
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as e:
                # one unreadable file of 227,835 (a network disk's EIO) must not stop the rest
                why = f"cannot be read ({type(e).__name__}: {e.strerror or e})"
                return "", [], str(path), {}, ("report unreadable", why)
            try:
                raw = "\n" + data.decode("utf-8")  # headers match after a newline
            except UnicodeDecodeError as e:
                # MIMIC reports are ASCII: such bytes are damage (or UTF-16), and U+FFFD would enter the text
                why = f"byte {data[e.start : e.start + 1]!r} at offset {e.start}"
                return "", [], str(path), {}, ("report not UTF-8", why)
            text, sections = report_text(raw)
            return text, sections, str(path), section_texts(raw), None
    return None
