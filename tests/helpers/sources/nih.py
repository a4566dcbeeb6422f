"""NIH ChestX-ray14 in miniature: the Kaggle full set, the NIH Box copy and the Kaggle 5% sample (datasets.md §2).

Reproduces: the ``Data_Entry_2017*.csv`` header split across brackets, with the trailing comma
(Kaggle) or without it and with ``Patient Sex`` (Box v2020); ``|``-joined labels, ``No Finding``,
``Pleural_Thickening`` and a label without a CheXpert-14 name (``Hernia``); two follow-ups of one
patient; ``sample_labels.csv`` with ``060Y`` ages and plain width/height names, both at the top and
under ``sample/``; ``BBox_List_2017.csv`` with three empty trailing columns, float 1024-space boxes and
``Infiltrate``; patient-disjoint ``train_val_list.txt``/``test_list.txt``; images under
``images_00N/images/`` (Kaggle), a flat ``images/`` (Box) or ``sample/images/`` (sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_png

FULL_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,{sex},View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
FULL_ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.14300000000000002,0.14300000000000002",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.14300000000000002,0.14300000000000002",
    "00000002_000.png,No Finding,0,2,80,M,PA,2500,2048,0.171,0.171",
    "00000003_000.png,Effusion|Infiltration|Pleural_Thickening,0,3,74,F,AP,2500,2048,0.168,0.168",
    "00000003_001.png,Hernia,1,3,75,F,PA,2048,2500,0.168,0.168",
    "00013118_008.png,Atelectasis|Infiltration,8,13118,42,F,PA,2992,2991,0.143,0.143",
]
# native id -> (CheXpert-14 labels, native NIH labels, patient, official split)
FULL_EXPECTED = {
    "00000001_000.png": (["Cardiomegaly"], ["Cardiomegaly"], "1", "train"),
    "00000001_001.png": (["Cardiomegaly"], ["Cardiomegaly", "Emphysema"], "1", "train"),
    "00000002_000.png": (["No Finding"], ["No Finding"], "2", "train"),
    "00000003_000.png": (
        ["Lung Opacity", "Pleural Effusion", "Pleural Other"],
        ["Effusion", "Infiltration", "Pleural_Thickening"],
        "3",
        "test",
    ),
    "00000003_001.png": ([], ["Hernia"], "3", "test"),
    "00013118_008.png": (["Atelectasis", "Lung Opacity"], ["Atelectasis", "Infiltration"], "13118", "test"),
}
BBOX = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,
00013118_008.png,Infiltrate,686.101694915254,131.543498411017,185.491525423729,313.491525423729,,,
"""
SAMPLE_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,OriginalImagePixelSpacing_y"
)
SAMPLE_ROWS = [
    "00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,060Y,M,AP,3056,2544,0.139,0.139",
    "00000013_026.png,Cardiomegaly|Emphysema,26,13,057Y,M,AP,2500,2048,0.168,0.168",
    "00000017_001.png,No Finding,1,17,077Y,M,AP,2500,2048,0.168,0.168",
    "00000030_001.png,Atelectasis,1,30,079Y,M,PA,2992,2991,0.143,0.143",
]
SAMPLE_EXPECTED = {
    "00000013_005.png": (["Lung Opacity", "Pleural Other", "Pneumothorax"], "13", 60.0),
    "00000013_026.png": (["Cardiomegaly"], "13", 57.0),
    "00000017_001.png": (["No Finding"], "17", 77.0),
    "00000030_001.png": (["Atelectasis"], "30", 79.0),
}


@dataclass
class NihFixture:
    root: Path
    csv: Path


def _png(path: Path, name: str) -> None:
    write_png(path / name, seed=int(name[:8]) * 1000 + int(name[9:12]), size=(40, 40))


def build_full(root: Path, *, layout: str = "kaggle") -> NihFixture:
    """``layout="kaggle"``: Data_Entry_2017.csv with trailing commas, images_00N/images/, lists and boxes.
    ``layout="box"``: Data_Entry_2017_v2020.csv with ``Patient Sex``, no trailing comma, flat images/."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "kaggle":
        csv = root / "Data_Entry_2017.csv"
        lines = [FULL_HEADER.format(sex="Patient Gender") + ","] + [r + "," for r in FULL_ROWS]
        for i, row in enumerate(FULL_ROWS):
            _png(root / f"images_00{1 + i % 2}" / "images", row.split(",")[0])
        (root / "BBox_List_2017.csv").write_text(BBOX)
        (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
        (root / "test_list.txt").write_text("00000003_000.png\n00000003_001.png\n00013118_008.png\n")
        (root / "README_CHESTXRAY.pdf").write_bytes(b"%PDF-1.4\n")
    else:
        csv = root / "Data_Entry_2017_v2020.csv"
        lines = [FULL_HEADER.format(sex="Patient Sex")] + FULL_ROWS
        for row in FULL_ROWS:
            _png(root / "images", row.split(",")[0])
    csv.write_text("\n".join(lines) + "\n")
    return NihFixture(root, csv)


def build_sample(root: Path) -> NihFixture:
    root = Path(root)
    text = "\n".join([SAMPLE_HEADER, *SAMPLE_ROWS]) + "\n"
    (root / "sample" / "images").mkdir(parents=True)
    (root / "sample_labels.csv").write_text(text)
    (root / "sample" / "sample_labels.csv").write_text(text)
    for row in SAMPLE_ROWS:
        _png(root / "sample" / "images", row.split(",")[0])
    return NihFixture(root, root / "sample_labels.csv")
