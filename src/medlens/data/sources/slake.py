"""SLAKE 1.0 bilingual medical VQA (``Slake1.0`` zip or the ``BoKelvin/SLAKE`` mirror; a ``path`` source).

Layout (datasets.md section 8): ``train.json``, ``validate.json`` (``validation.json`` in the mirror)
and ``test.json``, each a list of question records with 12 fields, and ``imgs/xmlabN/source.jpg``.
One record per question, ``text_source=vqa``: the question and answer go to ``meta`` and the chat
conversion turns them into a user/assistant turn; ``text`` holds ``Question: ... Answer: ...`` so the
row also reads as a caption. Only the languages in ``languages`` are kept (default ``["en"]``, as
most papers report English-only accuracy; compared without case or spaces); the others are rejected as
``filtered`` and counted.

The split is the file (``validate`` is read as val) and it is by question: an image is asked about in
several splits. SLAKE has no patient ids, so the image (``img_id``) is the group; with
``split.official: true`` the split stage moves the questions of a shared image into one split and
reports how many moved, which keeps images out of two splits at the cost of the published counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.sources import RawRecord, register_adapter
from medlens.data.sources.manifest import _inside
from medlens.data.sources.readers import find_file, normalise_split, read_json_file
from medlens.errors import DataError

logger = logging.getLogger(__name__)

_FILES = (("train", ("train.json",)), ("val", ("validate.json", "validation.json")), ("test", ("test.json",)))
_REQUIRED = {"img_id": int, "img_name": str, "question": str, "answer": str, "q_lang": str, "qid": int}
_XMLAB = re.compile(r"xmlab(\d+)/")
_META = ("answer_type", "base_type", "content_type", "location", "modality", "triple")


def _modality(slake_modality: object, location: object) -> str | None:
    """medlens modality: ``ct``, ``mri``, ``chest_xray`` (SLAKE's X-rays of the chest) or ``xray``; None for a
    value outside SLAKE's three (the image would be decoded and grouped as a modality medlens does not know)."""
    m = str(slake_modality).strip().lower().replace("-", "") if isinstance(slake_modality, str) else ""
    if m == "xray":
        return "chest_xray" if str(location).lower().startswith(("chest", "lung")) else "xray"
    return {"ct": "ct", "mri": "mri"}.get(m)


def _problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not an object"
    for key, tp in _REQUIRED.items():
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, tp):
            return f"field '{key}' is {value!r}; expected {tp.__name__}"
    return None


@register_adapter("slake")
def slake_records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """SLAKE 1.0: one VQA record per question, `languages` kept, official split = file, imgs/xmlabN/source.jpg."""
    # long: every check of a question record (fields, language, image inside imgs/) keeps or rejects it here
    root = Path(root)
    found = []
    for split, names in _FILES:
        try:
            found.append((split, find_file(root, names, max_depth=2, what="SLAKE question file")))
        except DataError:
            continue
    if not any(s == "train" for s, _ in found) or not any(s == "test" for s, _ in found):
        raise DataError(
            "SLAKE question files not found",
            file=str(root),
            expected="train.json, validate.json (or validation.json) and test.json within 2 levels",
        )
    for split, path in found:
        twins = [path.with_name(n) for n in dict(_FILES)[split] if path.with_name(n) != path]
        if twins := [t for t in twins if t.is_file() and t.read_bytes() != path.read_bytes()]:
            # the zip's validate.json beside the mirror's validation.json: reading one would drop the other unseen
            raise DataError(
                f"{path.name} and {twins[0].name} both hold the {split} questions, and they differ",
                file=str(path.parent),
                expected="one of them (delete or move the other)",
            )
    # case and spaces folded on both sides: a re-saved file's "EN" or "en " is still English
    languages = {lang.strip().lower() for lang in cfg.languages}
    for split, path in found:
        data = read_json_file(path)
        if not isinstance(data, list):
            raise DataError(
                f"the top level is a {type(data).__name__}",
                file=str(path),
                expected="a JSON list of question records (SLAKE 1.0 format)",
            )
        image_dir = path.parent / "imgs"
        inside = image_dir.resolve()
        logger.info(
            "SLAKE: %s (%s), %d questions, languages kept %s", path.name, split, len(data), sorted(languages)
        )
        for i, entry in enumerate(data):
            ref = f"{path}:[{i}]"
            problem = _problem(entry)
            if problem:
                qid = entry.get("qid") if isinstance(entry, dict) else None
                yield RawRecord(
                    native_id=str(qid) if isinstance(qid, int) else f"{split}[{i}]",
                    image="",
                    text=None,
                    source_ref=ref,
                    reject="malformed entry",
                    reject_detail=problem,
                    text_source="vqa",
                    official_split=normalise_split(split),
                )
                continue
            image = image_dir / entry["img_name"]
            question, answer = " ".join(entry["question"].split()), " ".join(str(entry["answer"]).split())
            modality = _modality(entry.get("modality"), entry.get("location", ""))
            reject, detail = None, ""
            if entry["q_lang"].strip().lower() not in languages:
                reject = f"filtered: language {entry['q_lang']} not in languages"
                detail = f"languages {sorted(languages)}"
            elif not cfg.allow_outside_paths and not _inside(image, inside):
                # the guard manifests have, on SLAKE's images folder: every img_name is xmlabN/<file>,
                # so "../../x.jpg" or a link out of imgs/ must not read some other file
                reject = "image outside the dataset folder"
                detail = f"{entry['img_name']} leaves {image_dir} (allow_outside_paths: true reads it)"
            elif (m := _XMLAB.match(entry["img_name"])) and int(m.group(1)) != entry["img_id"]:
                # img_id groups the splits: a wrong one could put this image in train and test at once
                reject = "malformed entry"
                detail = f"img_id {entry['img_id']} but img_name {entry['img_name']!r}; expected the same N"
            elif not question or not answer:
                reject, detail = "empty text", "empty question" if not question else "empty answer"
            elif modality is None:
                reject, detail = "unknown modality", f"{entry.get('modality')!r}; expected CT, MRI or X-Ray"
            elif not image.is_file():
                reject, detail = "missing image file", str(image)
            meta = {
                "question": question,
                "answer": answer,
                "q_lang": entry["q_lang"],
                "qid": entry["qid"],
                "img_id": entry["img_id"],
                "img_name": entry["img_name"],
                **{k: entry[k] for k in _META if k in entry},
            }
            yield RawRecord(
                native_id=str(entry["qid"]),
                image=str(image),
                text=f"Question: {question} Answer: {answer}",
                text_source="vqa",
                modality=modality or "xray",
                patient_id=f"img{entry['img_id']}",
                study_id=f"img{entry['img_id']}",
                official_split=normalise_split(split),
                meta=meta,
                source_ref=ref,
                reject=reject,
                reject_detail=detail,
            )
