"""PAD-UFES-20 in miniature (datasets.md section 6).

Reproduces: the exact 26-column ``metadata.csv`` header (``fitspatrick``); a row with the
demographic block blank; a row with ``UNK`` symptoms; ``True/False`` and an Excel re-save's
``TRUE/FALSE`` with ``2`` instead of ``2.0``; float ``fitspatrick`` and diameters; ``BRASIL`` and
``BRAZIL``; two images of one lesion; all six diagnostic codes; PNGs (RGB and RGBA) spread over
``images/imgs_part_1..3`` with ``imgs_part_1`` doubled by unzipping in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_png

HEADER = (
    "patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
    "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
    "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed"
)
ROWS = [
    "PAT_1516,1765,,,,,8,,,,,,,,ARM,,,NEV,False,False,False,False,False,False,PAT_1516_1765_530.png,False",
    "PAT_46,881,False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,3.0,NECK,6.0,5.0,BCC,True,True,"
    "False,True,True,True,PAT_46_881_14.png,True",
    "PAT_771,1491,True,True,ITALY,ITALY,69,False,MALE,False,True,True,True,3.0,FACE,6.0,3.0,BCC,True,UNK,False,UNK,"
    "False,True,PAT_771_1491_390.png,True",
    "PAT_771,1491,True,True,ITALY,ITALY,69,False,MALE,False,True,True,True,3.0,FACE,6.0,3.0,BCC,True,UNK,False,UNK,"
    "False,True,PAT_771_1491_391.png,True",
    "PAT_9,1,TRUE,FALSE,BRASIL,BRAZIL,70,FALSE,MALE,FALSE,FALSE,TRUE,TRUE,2,CHEST,10,8,ACK,FALSE,TRUE,FALSE,FALSE,"
    "FALSE,TRUE,PAT_9_1_100.png,FALSE",
    "PAT_12,20,False,False,GERMANY,GERMANY,81,False,FEMALE,True,True,True,True,2.0,BACK,12.0,10.0,SEK,False,True,"
    "False,False,False,True,PAT_12_20_200.png,False",
    "PAT_13,21,False,False,NETHERLANDS,UNK,77,True,MALE,True,True,True,False,1.0,NOSE,7.0,7.0,SCC,True,True,True,"
    "True,True,True,PAT_13_21_201.png,True",
    "PAT_14,22,False,True,PORTUGAL,PORTUGAL,64,False,FEMALE,False,False,True,True,2.0,THIGH,9.0,6.5,MEL,False,True,"
    "False,True,False,True,PAT_14_22_202.png,True",
]
# img_id -> (label, patient, study)
EXPECTED = {
    "PAT_1516_1765_530.png": ("Nevus", "PAT_1516", "PAT_1516/1765"),
    "PAT_46_881_14.png": ("Basal Cell Carcinoma", "PAT_46", "PAT_46/881"),
    "PAT_771_1491_390.png": ("Basal Cell Carcinoma", "PAT_771", "PAT_771/1491"),
    "PAT_771_1491_391.png": ("Basal Cell Carcinoma", "PAT_771", "PAT_771/1491"),
    "PAT_9_1_100.png": ("Actinic Keratosis", "PAT_9", "PAT_9/1"),
    "PAT_12_20_200.png": ("Seborrheic Keratosis", "PAT_12", "PAT_12/20"),
    "PAT_13_21_201.png": ("Squamous Cell Carcinoma", "PAT_13", "PAT_13/21"),
    "PAT_14_22_202.png": ("Melanoma", "PAT_14", "PAT_14/22"),
}
_FOLDERS = ["imgs_part_1/imgs_part_1", "imgs_part_2", "imgs_part_3"]


@dataclass
class PadFixture:
    root: Path


def build(root: Path, rows: list[str] | None = None) -> PadFixture:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("\n".join([HEADER, *(ROWS if rows is None else rows)]) + "\n")
    for i, img_id in enumerate(EXPECTED):
        mode = "RGBA" if i == 1 else "RGB"
        write_png(root / "images" / _FOLDERS[i % 3] / img_id, seed=700 + i, size=(64, 48), mode=mode)
    return PadFixture(root)
