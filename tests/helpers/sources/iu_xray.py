"""IU X-ray in miniature: the Kaggle ``raddar`` CSV form and the R2Gen ``annotation.json`` form (datasets.md §3).

Kaggle form: ``indiana_reports.csv`` with quoted multi-sentence cells, ``;``-joined MeSH/Problems,
``No Indexing``, empty findings (impression only), an empty impression, an empty comparison and
``XXXX`` redactions; ``indiana_projections.csv`` with uids holding 1, 2 and 3 images, one 3-part
image id, and a report (uid 5) without any image; PNGs under ``images/images_normalized/``.
R2Gen form: ``annotation.json`` with ``train``/``val``/``test`` lists of two-image studies, ids in
the ``CXRn_IM-nnnn``, ``CXRn_IM-nnnn-nnnn`` and ``CXRn_n_IM-…`` patterns, ``<id>/0.png``/``1.png``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_png

REPORTS = [
    [
        "1",
        "normal",
        "normal",
        "Xray Chest PA and Lateral",
        "Positive TB test",
        "None.",
        "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
        "There is no focal consolidation. There are no XXXX of a pleural effusion.",
        "Normal chest x-XXXX.",
    ],
    [
        "2",
        "Cardiomegaly/borderline;Pulmonary Artery/enlarged",
        "Cardiomegaly;Pulmonary Artery",
        "Chest, 2 views, frontal and lateral",
        "Preop bariatric surgery.",
        "None.",
        "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries.",
        "No acute pulmonary findings.",
    ],
    [
        "3",
        "Opacity/lung/base/left",
        "Opacity",
        "Xray Chest PA and Lateral",
        "rib pain after a XXXX, XXXX XXXX steps this XXXX. Pain and tenderness.",
        "",
        "",
        "Left basilar subsegmental atelectasis versus opacity.",
    ],
    [
        "4",
        "No Indexing",
        "No Indexing",
        "PA and lateral views of the chest",
        "Chest pain",
        "",
        "Heart size normal. Lungs are clear. XXXX are normal.",
        "",
    ],
    [
        "5",
        "normal",
        "normal",
        "Xray Chest PA and Lateral",
        "Cough",
        "None.",
        "Lungs are clear.",
        "No acute disease.",
    ],
]
PROJECTIONS = [
    ("1", "1_IM-0001-4001.dcm.png", "Frontal"),
    ("1", "1_IM-0001-3001.dcm.png", "Lateral"),
    ("2", "2_IM-0652-1001.dcm.png", "Frontal"),
    ("2", "2_IM-0652-2001.dcm.png", "Lateral"),
    ("2", "2_IM-0652-3001.dcm.png", "Lateral"),
    ("3", "3_IM-1384-2001.dcm.png", "Frontal"),
    ("4", "4_IM-2050-1001-0001.dcm.png", "Frontal"),
]
# uid -> (labels, text sections used)
KAGGLE_EXPECTED = {
    "1": (["No Finding"], ["findings", "impression"]),
    "2": (["Cardiomegaly"], ["findings", "impression"]),
    "3": (["Lung Opacity"], ["impression"]),
    "4": ([], ["findings"]),
}

ANNOTATION = {
    "train": [
        {
            "id": "CXR2384_IM-0942",
            "report": "The heart size and pulmonary vascularity appear within normal limits. "
            "A large hiatal hernia is noted. The lungs are free of focal airspace disease.",
            "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"],
            "split": "train",
        },
        {
            "id": "CXR1000_IM-0003-1001",
            "report": "Heart size normal. No XXXX or pleural effusion. Normal chest.",
            "image_path": ["CXR1000_IM-0003-1001/0.png", "CXR1000_IM-0003-1001/1.png"],
            "split": "train",
        },
    ],
    "val": [
        {
            "id": "CXR3_1_IM-1384",
            "report": "Left basilar subsegmental atelectasis versus opacity.",
            "image_path": ["CXR3_1_IM-1384/0.png", "CXR3_1_IM-1384/1.png"],
            "split": "val",
        },
    ],
    "test": [
        {
            "id": "CXR1_IM-0001",
            "report": "The cardiac silhouette and mediastinum size are within normal limits. "
            "Normal chest x-XXXX.",
            "image_path": ["CXR1_IM-0001/0.png", "CXR1_IM-0001/1.png"],
            "split": "test",
        },
    ],
}


@dataclass
class IuFixture:
    root: Path


def build_kaggle(root: Path) -> IuFixture:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "indiana_reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        w.writerows(REPORTS)
    with open(root / "indiana_projections.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "filename", "projection"])
        w.writerows(PROJECTIONS)
    for i, (_, name, _) in enumerate(PROJECTIONS):
        write_png(root / "images" / "images_normalized" / name, seed=300 + i, size=(44, 40))
    return IuFixture(root)


def build_r2gen(root: Path, annotation: dict | None = None) -> IuFixture:
    base = Path(root) / "iu_xray"
    base.mkdir(parents=True, exist_ok=True)
    annotation = ANNOTATION if annotation is None else annotation
    (base / "annotation.json").write_text(json.dumps(annotation))
    seed = 400
    for entries in ANNOTATION.values():
        for entry in entries:
            for rel in entry["image_path"]:
                write_png(base / "images" / rel, seed=seed, size=(40, 44))
                seed += 1
    return IuFixture(Path(root))
