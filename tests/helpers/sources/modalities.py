"""Larger knee, skin-lesion and SLAKE sources in their real layouts, for running the pipeline end to end.

The per-adapter fixtures (knee.py, pad_ufes.py, slake.py) hold a handful of rows to reproduce each
format's quirks; a pipeline needs every class in every split, which these build: Kaggle OAI folders
with every KL grade in train/val/test, a PAD-UFES-20 ``metadata.csv`` with all six diagnoses, and
SLAKE JSON files with closed and open English questions of several categories (and Chinese ones,
which the adapter filters out).
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.sources.images import write_jpeg, write_png
from helpers.sources.pad_ufes import HEADER

PAD_CODES = ("BCC", "SCC", "ACK", "SEK", "MEL", "NEV")


def build_knee(root: Path, per_grade: dict[str, int] | None = None) -> Path:
    """``KneeXrayData/{train,val,test}/{0..4}/<id><L|R>.png``, one patient per knee pair."""
    per_grade = per_grade or {"train": 4, "val": 2, "test": 2}
    tree = Path(root) / "KneeXrayData"
    n = 0
    for split, count in per_grade.items():
        for grade in range(5):
            for _ in range(count):
                patient = 9100000 + n // 2
                write_png(
                    tree / split / str(grade) / f"{patient}{'LR'[n % 2]}.png", seed=5000 + n, size=(40, 40)
                )
                n += 1
    return Path(root)


def build_pad_ufes(root: Path, per_class: int = 8) -> Path:
    """``metadata.csv`` (the real 26 columns) and ``images/imgs_part_1``, ``per_class`` lesions per diagnosis."""
    root = Path(root)
    rows = []
    for c, code in enumerate(PAD_CODES):
        for k in range(per_class):
            patient, lesion, img = (
                f"PAT_{100 + c * per_class + k}",
                2000 + c * per_class + k,
                3000 + c * per_class + k,
            )
            name = f"{patient}_{lesion}_{img}.png"
            rows.append(
                f"{patient},{lesion},False,False,BRAZIL,BRAZIL,60,False,FEMALE,False,False,True,True,2.0,ARM,"
                f"5.0,4.0,{code},False,False,False,False,False,False,{name},True"
            )
            write_png(
                root / "images" / "imgs_part_1" / name, seed=6000 + len(rows), size=(48, 40), mode="RGB"
            )
    (root / "metadata.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


_QUESTIONS = [  # (question, answer, answer_type, content_type)
    ("Is this a CT image?", "Yes", "CLOSED", "Modality"),
    ("Does the picture contain the liver?", "No", "CLOSED", "Organ"),
    ("Is the lung healthy?", "Yes", "CLOSED", "Abnormality"),
    ("Which organ is abnormal?", "Left Lung", "OPEN", "Abnormality"),
    ("Where is the heart?", "Center", "OPEN", "Position"),
    ("What modality is used?", "CT", "OPEN", "Modality"),
]


def build_slake(root: Path, images: dict[str, int] | None = None) -> Path:
    """``Slake1.0/{train,validate,test}.json`` and ``imgs/xmlabN/source.jpg``: six English questions (three
    closed, three open, four categories) and one Chinese question per image."""
    images = images or {"train": 8, "val": 3, "test": 3}
    base = Path(root) / "Slake1.0"
    qid, img_id = 0, 0
    for split, count in images.items():
        entries = []
        for _ in range(count):
            img_id += 1
            write_jpeg(base / "imgs" / f"xmlab{img_id}" / "source.jpg", seed=7000 + img_id, size=(48, 48))
            for question, answer, answer_type, content in [
                *_QUESTIONS,
                ("肺健康吗?", "是", "CLOSED", "Abnormality"),
            ]:
                qid += 1
                entries.append(
                    {
                        "img_id": img_id,
                        "img_name": f"xmlab{img_id}/source.jpg",
                        "question": question,
                        "answer": answer,
                        "q_lang": "zh" if answer == "是" else "en",
                        "location": "Lung",
                        "modality": "CT",
                        "answer_type": answer_type,
                        "base_type": "vqa",
                        "content_type": content,
                        "triple": ["vhead", "_", "_"],
                        "qid": qid,
                    }
                )
        name = {"train": "train.json", "val": "validate.json", "test": "test.json"}[split]
        (base / name).write_text(json.dumps(entries, ensure_ascii=False, indent=1))
    return Path(root)
