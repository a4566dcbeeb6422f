"""CheXpert-v1.0-small in miniature (datasets.md section 5).

Reproduces: the exact ``train.csv``/``valid.csv`` header (Lung Opacity before Lung Lesion); cells
blank, ``-1.0``, ``0.0`` and ``1.0``; a lateral row with blank ``AP/PA``; an ``AP/PA=LL`` row; a
``view1_lateral`` and a ``view2_frontal`` file; ``Sex=Unknown``; ``Age=0``; a row with every label
blank; ``valid.csv`` with 0/1 only; ``Path`` values carrying ``CheXpert-v1.0-small/`` while the files
live under a root without it (a mirror unzipped without the top folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_jpeg

HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
PREFIX = "CheXpert-v1.0-small/"
# relative path -> (Sex, Age, Frontal/Lateral, AP/PA, {label: value})
TRAIN = {
    "train/patient00001/study1/view1_frontal.jpg": (
        "Female",
        "68",
        "Frontal",
        "AP",
        {"No Finding": "1.0", "Pneumothorax": "0.0", "Support Devices": "1.0"},
    ),
    "train/patient00002/study2/view1_frontal.jpg": (
        "Female",
        "87",
        "Frontal",
        "AP",
        {
            "Cardiomegaly": "-1.0",
            "Lung Opacity": "1.0",
            "Edema": "-1.0",
            "Consolidation": "-1.0",
            "Atelectasis": "-1.0",
            "Pleural Effusion": "-1.0",
            "Fracture": "1.0",
        },
    ),
    "train/patient00002/study1/view2_lateral.jpg": (
        "Female",
        "83",
        "Lateral",
        "",
        {"Lung Opacity": "1.0", "Pneumonia": "-1.0", "Fracture": "1.0"},
    ),
    "train/patient00003/study1/view1_lateral.jpg": ("Male", "0", "Frontal", "LL", {"Edema": "1.0"}),
    "train/patient00004/study1/view2_frontal.jpg": (
        "Unknown",
        "45",
        "Frontal",
        "PA",
        {"Pleural Effusion": "1.0"},
    ),
    "train/patient00005/study1/view1_frontal.jpg": ("Male", "50", "Frontal", "AP", {}),
}
ALL_BLANK = "train/patient00005/study1/view1_frontal.jpg"
_ZEROS = dict.fromkeys(HEADER[5:], "0.0")
VALID = {
    "valid/patient64541/study1/view1_frontal.jpg": (
        "Male",
        "73",
        "Frontal",
        "AP",
        {
            **_ZEROS,
            "Enlarged Cardiomediastinum": "1.0",
            "Cardiomegaly": "1.0",
            "Lung Opacity": "1.0",
            "Edema": "1.0",
            "Support Devices": "1.0",
        },
    ),
    "valid/patient64542/study1/view1_frontal.jpg": (
        "Male",
        "70",
        "Frontal",
        "PA",
        {**_ZEROS, "No Finding": "1.0"},
    ),
}
# relative path -> (labels under zeros, labels under ones)
EXPECTED = {
    "train/patient00001/study1/view1_frontal.jpg": (["No Finding", "Support Devices"],) * 2,
    "train/patient00002/study2/view1_frontal.jpg": (
        ["Fracture", "Lung Opacity"],
        [
            "Atelectasis",
            "Cardiomegaly",
            "Consolidation",
            "Edema",
            "Fracture",
            "Lung Opacity",
            "Pleural Effusion",
        ],
    ),
    "train/patient00002/study1/view2_lateral.jpg": (
        ["Fracture", "Lung Opacity"],
        ["Fracture", "Lung Opacity", "Pneumonia"],
    ),
    "train/patient00003/study1/view1_lateral.jpg": (["Edema"],) * 2,
    "train/patient00004/study1/view2_frontal.jpg": (["Pleural Effusion"],) * 2,
    "valid/patient64541/study1/view1_frontal.jpg": (
        ["Cardiomegaly", "Edema", "Enlarged Cardiomediastinum", "Lung Opacity", "Support Devices"],
    )
    * 2,
    "valid/patient64542/study1/view1_frontal.jpg": (["No Finding"],) * 2,
}


@dataclass
class ChexpertFixture:
    root: Path


def _write(path: Path, rows: dict) -> None:
    lines = [",".join(HEADER)]
    for rel, (sex, age, fl, appa, cells) in rows.items():
        lines.append(",".join([PREFIX + rel, sex, age, fl, appa] + [cells.get(c, "") for c in HEADER[5:]]))
    path.write_text("\n".join(lines) + "\n")


def build(root: Path) -> ChexpertFixture:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "train.csv", TRAIN)
    _write(root / "valid.csv", VALID)
    for i, rel in enumerate([*TRAIN, *VALID]):
        write_jpeg(root / rel, seed=600 + i, size=(40, 48))
    return ChexpertFixture(root)
