"""SLAKE 1.0 in miniature (datasets.md section 8).

Reproduces: three JSON lists with all 12 fields (int ``img_id``/``qid``, key order varying), English
and Chinese questions, a ``kvqa``/``KG`` row with a non-trivial ``triple``, OPEN and CLOSED answers, a
comma-joined answer, an image asked about from two splits, ``imgs/xmlabN/source.jpg`` with
``mask.png``/``detection.json`` stubs, ``mask.txt`` and ``KG/``; the split file named
``validate.json`` (original zip) or ``validation.json`` (HF mirror).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_jpeg, write_png


def _q(
    qid,
    img_id,
    question,
    answer,
    lang,
    location,
    modality,
    answer_type,
    content,
    base="vqa",
    triple=("vhead", "_", "_"),
):
    return {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": location,
        "modality": modality,
        "answer_type": answer_type,
        "base_type": base,
        "triple": list(triple),
        "qid": qid,
        "content_type": content,
    }


SPLITS = {
    "train": [
        _q(0, 102, "What modality is used to take this image?", "CT", "en", "Lung", "CT", "OPEN", "Modality"),
        _q(1, 102, "Does the picture contain liver?", "No", "en", "Lung", "CT", "CLOSED", "Organ"),
        _q(2, 1, "这张图片的成像方式是什么?", "MRI", "zh", "Brain", "MRI", "OPEN", "Modality"),
        # kvqa row with content_type placed before triple, as in the real files
        {
            "img_id": 299,
            "img_name": "xmlab299/source.jpg",
            "question": "What is the effect of the main organ in this picture?",
            "answer": "Breathe",
            "q_lang": "en",
            "location": "Lung",
            "modality": "X-Ray",
            "answer_type": "OPEN",
            "base_type": "kvqa",
            "content_type": "KG",
            "triple": ["vhead", "effect", "ktail"],
            "qid": 3,
        },
    ],
    "val": [
        _q(
            4,
            102,
            "Which organs are abnormal?",
            "Left Lung, Right",
            "en",
            "Lung",
            "CT",
            "OPEN",
            "Abnormality",
        )
    ],
    "test": [
        _q(5, 1, "Is this a T2 weighted image?", "Yes", "en", "Brain", "MRI", "CLOSED", "Modality"),
        _q(6, 299, "主要器官在哪里?", "胸部", "zh", "Chest_lung", "X-Ray", "OPEN", "Position"),
    ],
}
ENGLISH = {"0", "1", "3", "4", "5"}
CHINESE = {"2", "6"}
MODALITY = {"0": "ct", "1": "ct", "2": "mri", "3": "chest_xray", "4": "ct", "5": "mri", "6": "chest_xray"}


@dataclass
class SlakeFixture:
    root: Path


def build(root: Path, *, mirror: bool = False, splits: dict | None = None) -> SlakeFixture:
    """The original ``Slake1.0/`` zip layout, or with ``mirror=True`` the HF mirror's ``validation.json``."""
    base = Path(root) / "Slake1.0"
    base.mkdir(parents=True, exist_ok=True)
    splits = SPLITS if splits is None else splits
    names = {
        "train": "train.json",
        "val": "validation.json" if mirror else "validate.json",
        "test": "test.json",
    }
    for split, entries in splits.items():
        (base / names[split]).write_text(json.dumps(entries, ensure_ascii=False, indent=1))
    for img_id in (1, 102, 299):
        folder = base / "imgs" / f"xmlab{img_id}"
        write_jpeg(
            folder / "source.jpg", seed=1000 + img_id, size=(64, 64), mode="RGB" if img_id == 299 else "L"
        )
        write_png(folder / "mask.png", seed=img_id, size=(8, 8))
        (folder / "detection.json").write_text("[]")
    (base / "mask.txt").write_text("30:Left Humerus Head\n150:Kidney Cancer\n")
    (base / "KG").mkdir()
    (base / "KG" / "en_organ.csv").write_text("entity#relation#entity\nHeart#function#Promote blood flow\n")
    return SlakeFixture(Path(root))
