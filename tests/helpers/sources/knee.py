"""Knee KL-grade datasets in miniature: Kaggle OAI and Mendeley MedicalExpert folders (datasets.md section 7).

Kaggle OAI: ``train/val/test/auto_test`` with grade folders ``0..4`` and ``<7 digits><L|R>.png``
names, one patient with both knees in one split, and ``auto_test`` repeating ``test``.
Mendeley: ``MedicalExpert-I``/``MedicalExpert-II`` with ``0Normal..4Severe`` and names with spaces
and parentheses (``NormalG0 (1).png``); the same bytes under both experts with the same grade and
with different grades, and one exact duplicate within one expert.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_png

# relative path -> (label, patient, side, split)
OAI = {
    "train/0/9001695L.png": ("KL0", "9001695", "left", "train"),
    "train/2/9001695R.png": ("KL2", "9001695", "right", "train"),
    "train/4/9001897L.png": ("KL4", "9001897", "left", "train"),
    "val/1/9002430R.png": ("KL1", "9002430", "right", "val"),
    "test/3/9003126L.png": ("KL3", "9003126", "left", "test"),
    "test/0/9003126R.png": ("KL0", "9003126", "right", "test"),
}

BASE = "Digital Knee X-ray Images/Knee X-ray Images"
# file -> seed; equal seeds are the same bytes
MENDELEY = {
    "MedicalExpert-I/0Normal/NormalG0 (1).png": 1,
    "MedicalExpert-II/0Normal/NormalG0 (1).png": 1,  # same image, same grade
    "MedicalExpert-I/1Doubtful/DoubtfulG1 (66).png": 2,
    "MedicalExpert-II/2Mild/MildG2 (12).png": 2,  # same image, experts disagree
    "MedicalExpert-I/3Moderate/ModerateG3 (2).png": 3,
    "MedicalExpert-I/3Moderate/ModerateG3 (5).png": 3,  # exact duplicate within one expert
    "MedicalExpert-I/4Severe/SevereG4 (1).png": 4,
    "MedicalExpert-II/2Mild/MildG2 (3).png": 5,
}
MENDELEY_KEPT = {
    f"{BASE}/MedicalExpert-I/0Normal/NormalG0 (1).png": "KL0",
    f"{BASE}/MedicalExpert-I/3Moderate/ModerateG3 (2).png": "KL3",
    f"{BASE}/MedicalExpert-I/4Severe/SevereG4 (1).png": "KL4",
    f"{BASE}/MedicalExpert-II/2Mild/MildG2 (3).png": "KL2",
}
MENDELEY_REJECTED = {
    f"{BASE}/MedicalExpert-II/0Normal/NormalG0 (1).png": "duplicate image",
    f"{BASE}/MedicalExpert-I/1Doubtful/DoubtfulG1 (66).png": "experts disagree on the grade",
    f"{BASE}/MedicalExpert-II/2Mild/MildG2 (12).png": "experts disagree on the grade",
    f"{BASE}/MedicalExpert-I/3Moderate/ModerateG3 (5).png": "duplicate image",
}


@dataclass
class KneeFixture:
    root: Path


def build_oai(root: Path) -> KneeFixture:
    tree = Path(root) / "KneeXrayData"
    for i, rel in enumerate(OAI):
        write_png(tree / rel, seed=800 + i, size=(32, 32))
    shutil.copytree(tree / "test", tree / "auto_test")
    return KneeFixture(Path(root))


def build_mendeley(root: Path) -> KneeFixture:
    for rel, seed in MENDELEY.items():
        write_png(Path(root) / BASE / rel, seed=900 + seed, size=(48, 26))
    return KneeFixture(Path(root))
