"""MIMIC-CXR-JPG 2.x with its reports, in miniature (datasets.md section 4). All text is made up.

Reproduces: ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom>.jpg`` with a two-image study (PA + lateral) and
one-image studies; gzipped ``metadata``/``split`` tables and a plain ``chexpert`` table with the exact
headers (labels in alphabetical order); ``validate`` in the split table; ``StudyTime`` under 100000
(lost leading zero); CheXpert cells blank, ``-1.0``, ``0.0`` and ``1.0``, one study with every label
blank and one study without a label row; reports unpacked into a separate ``mimic-cxr-reports/``
folder plus one next to its study folder; an indented header, ``___`` PHI, an addendum before the
report, ``FINDINGS AND IMPRESSION``, a report with only IMPRESSION and one with neither section.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from helpers.sources.images import write_jpeg

LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
META_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
    "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
    "PatientOrientationCodeSequence_CodeMeaning"
)
D1 = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
D2 = "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"
D3 = "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"
D4 = "1a2b3c4d-5e6f7081-92a3b4c5-d6e7f809-1a2b3c4d"
D5 = "9f8e7d6c-5b4a3928-17f6e5d4-c3b2a190-8f7e6d5c"
D6 = "0badcafe-12345678-9abcdef0-0fedcba9-87654321"
# dicom -> (subject, study, view, rows of the metadata table after the view)
IMAGES = {
    D1: (
        "10000032",
        "50414267",
        "PA",
        "CHEST (PA AND LAT)",
        "3056,2544,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect",
    ),
    D2: (
        "10000032",
        "50414267",
        "LATERAL",
        "CHEST (PA AND LAT)",
        "3056,2544,21800506,213014.531,CHEST (PA AND LAT),lateral,Erect",
    ),
    D3: (
        "10000032",
        "53911762",
        "AP",
        "CHEST (PORTABLE AP)",
        "2705,2539,21800723,80556.875,CHEST (PORTABLE AP),antero-posterior,",
    ),
    D4: (
        "10000764",
        "57375967",
        "AP",
        "CHEST (PORTABLE AP)",
        "2544,3056,21321109,1234.5,CHEST (PORTABLE AP),antero-posterior,Recumbent",
    ),
    D5: (
        "11000011",
        "51029426",
        "PA",
        "CHEST (PA AND LAT)",
        "3056,2544,21530101,95012.0,CHEST (PA AND LAT),postero-anterior,Erect",
    ),
    D6: (
        "12000018",
        "56111111",
        "PA",
        "CHEST (PA AND LAT)",
        "3056,2544,21620202,143000.25,CHEST (PA AND LAT),postero-anterior,Erect",
    ),
}
SPLITS = {D1: "train", D2: "train", D3: "train", D4: "validate", D5: "test", D6: "train"}
# study -> {label column: value}; 51029426 has every label blank, 56111111 has no row
CHEXPERT = {
    "50414267": {"Pleural Effusion": "1.0", "Atelectasis": "-1.0", "Cardiomegaly": "0.0"},
    "53911762": {"No Finding": "1.0"},
    "57375967": {"Edema": "1.0", "Support Devices": "1.0", "Pneumothorax": "0.0"},
    "51029426": {},
}
REPORTS = {
    "50414267": """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old man with cough  // eval pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 Small left pleural effusion.  Possible left basilar atelectasis.  Heart size is
 normal.

 IMPRESSION:

 Small left pleural effusion.
""",
    "53911762": """                                 FINAL ADDENDUM
 ADDENDUM:  Findings were discussed with Dr. ___ by telephone at 9:00 on ___.

 ______________________________________________________________________________
                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ with fever.

 FINDINGS:

 Lungs are clear.  No pleural effusion or pneumothorax.  Heart size is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
""",
    "57375967": """                                 FINAL REPORT
 INDICATION:  Intubated patient.

 FINDINGS AND IMPRESSION:  Moderate pulmonary edema.  Endotracheal tube terminates
 4 cm above the carina.
""",
    "51029426": """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 IMPRESSION:  No acute intrathoracic process.
""",
    "56111111": """                                 FINAL REPORT
 PA AND LATERAL CHEST ___

 HISTORY:  Shortness of breath.

 Heart size is normal.  The lungs are clear.  No effusion.
""",
}
EXPECTED_TEXT = {
    "50414267": (
        "Small left pleural effusion. Possible left basilar atelectasis. Heart size is normal. "
        "Small left pleural effusion.",
        ["findings", "impression"],
    ),
    "53911762": (
        "Lungs are clear. No pleural effusion or pneumothorax. Heart size is normal. "
        "No acute cardiopulmonary process.",
        ["findings", "impression"],
    ),
    "57375967": (
        "Moderate pulmonary edema. Endotracheal tube terminates 4 cm above the carina.",
        ["impression"],
    ),
    "51029426": ("No acute intrathoracic process.", ["impression"]),
    "56111111": ("Heart size is normal. The lungs are clear. No effusion.", ["last_paragraph"]),
}


def mimic_layout(text: str) -> str:
    """MIMIC's report layout from plain text: blank lines hold one space and a header alone on its line
    keeps a space after its colon (written here without trailing blanks, which linters strip)."""
    out = []
    for line in text.split("\n"):
        if not line:
            out.append(" ")
        elif line.strip().isupper() and line.rstrip().endswith(":"):
            out.append(line.rstrip() + " ")
        else:
            out.append(line)
    return "\n".join(out[:-1]) + "\n" if out and out[-1] == " " else "\n".join(out)


@dataclass
class MimicFixture:
    root: Path


def study_dir(root: Path, subject: str, study: str) -> Path:
    return Path(root) / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def build(root: Path, *, gzipped: bool = True) -> MimicFixture:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = [META_HEADER] + [
        f"{d},{s},{st},{proc},{view},{rest}" for d, (s, st, view, proc, rest) in IMAGES.items()
    ]
    split = ["dicom_id,study_id,subject_id,split"] + [
        f"{d},{IMAGES[d][1]},{IMAGES[d][0]},{sp}" for d, sp in SPLITS.items()
    ]
    subjects = {st: s for s, st, *_ in IMAGES.values()}
    chexpert = ["subject_id,study_id," + ",".join(LABELS)] + [
        f"{subjects[st]},{st}," + ",".join(cells.get(c, "") for c in LABELS) for st, cells in CHEXPERT.items()
    ]
    for name, lines in (("metadata", meta), ("split", split)):
        data = ("\n".join(lines) + "\n").encode()
        if gzipped:
            (root / f"mimic-cxr-2.0.0-{name}.csv.gz").write_bytes(gzip.compress(data))
        else:
            (root / f"mimic-cxr-2.0.0-{name}.csv").write_bytes(data)
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join(chexpert) + "\n")
    (root / "IMAGE_FILENAMES").write_text(
        "".join(f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg\n" for d, (s, st, *_) in IMAGES.items())
    )
    for i, (dicom, (subject, study, *_)) in enumerate(IMAGES.items()):
        write_jpeg(study_dir(root, subject, study) / f"{dicom}.jpg", seed=500 + i, size=(60, 50))
    for study, text in REPORTS.items():
        subject = subjects[study]
        base = root if study == "56111111" else root / "mimic-cxr-reports"
        path = study_dir(base, subject, study).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mimic_layout(text))
    return MimicFixture(root)
