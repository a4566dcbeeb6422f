"""Contact sheet of the synthetic_cxr phantoms: ``docs/img/phantoms.png``, 16 phantoms with their labels.

Run: ``.venv/bin/python docs/make_phantom_sheet.py [--out docs/img/phantoms.png]``. The phantoms come
from the default ``synthetic_cxr`` dataset of ``config/config.yaml`` (3,000 studies of 1,200 patients,
seed 0); the sheet shows two normal studies and then the first study showing each finding (and a few
combinations), with the labels and what the report says about side, size, lobe and devices below.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from medlens.config import SyntheticConfig
from medlens.data.phantom import render_study, sample_studies
from medlens.data.phantom.sampling import Study

TILE, CAPTION, COLUMNS = 256, 44, 4
SHORT = {"Cardiomegaly": "Cardiomegaly", "Lung Lesion": "Lung Lesion", "Pleural Effusion": "Effusion",
         "Support Devices": "Devices", "No Finding": "No Finding", "Consolidation": "Consolidation",
         "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Edema": "Edema", "Atelectasis": "Atelectasis"}
# what each tile should show: a test on the study, in sheet order
WANTED = [
    ("normal PA", lambda s: s.labels == ["No Finding"] and s.acquisition.view == "PA"),
    ("normal AP", lambda s: s.labels == ["No Finding"] and s.acquisition.view == "AP"),
    ("cardiomegaly", lambda s: s.labels == ["Cardiomegaly"]),
    ("one effusion", lambda s: s.labels == ["Pleural Effusion"] and len(s.findings.effusions) == 1),
    ("two effusions", lambda s: s.labels == ["Pleural Effusion"] and len(s.findings.effusions) == 2),
    ("pneumonia", lambda s: s.labels == ["Consolidation", "Pneumonia"]),
    ("consolidation", lambda s: s.labels == ["Consolidation"]),
    ("one lesion", lambda s: s.labels == ["Lung Lesion"] and len(s.findings.lesions) == 1),
    ("several lesions", lambda s: s.labels == ["Lung Lesion"] and len(s.findings.lesions) > 2),
    ("pneumothorax", lambda s: s.labels == ["Pneumothorax"] and s.findings.pneumothorax.size != "small"),
    ("edema", lambda s: s.labels == ["Edema"]),
    ("heart failure picture", lambda s: {"Cardiomegaly", "Edema", "Pleural Effusion"} <= set(s.labels)),
    ("basal atelectasis", lambda s: s.labels == ["Atelectasis"] and s.findings.atelectasis.zone == "lower"),
    ("atelectasis and effusion", lambda s: set(s.labels) == {"Atelectasis", "Pleural Effusion"}),
    ("tubes", lambda s: s.labels == ["No Finding", "Support Devices"] and len(s.findings.devices) >= 2),
    ("devices and more", lambda s: "Support Devices" in s.labels and len(s.labels) >= 3),
]


def details(s: Study) -> str:
    """A short line of what the report says: sides, sizes, lobes, millimetres, devices."""
    f, parts = s.findings, [s.acquisition.view]
    if f.cardiomegaly:
        parts.append(f"CTR {f.ctr:.2f}")
    parts += [f"{e.side[0].upper()} {e.size} eff." for e in f.effusions]
    if f.consolidation:
        parts.append(f.consolidation.lobe.replace("right ", "R").replace("left ", "L").replace(" lobe", "L")
                     .replace("upper", "U").replace("middle", "M").replace("lower", "L"))
    if f.lesions:
        parts.append(", ".join(f"{les.size_mm} mm" for les in f.lesions[:3]))
    if f.pneumothorax:
        parts.append(f"{f.pneumothorax.side[0].upper()} {f.pneumothorax.size} PTX")
    if f.atelectasis:
        parts.append(f"{'+'.join(x[0].upper() for x in f.atelectasis.sides)} {f.atelectasis.zone}")
    parts += [{"endotracheal tube": "ETT", "central venous catheter": "CVC", "enteric tube": "NGT"}[d.kind]
              for d in f.devices]
    return " | ".join(parts)


def make_sheet(out: Path) -> None:
    studies = sample_studies(SyntheticConfig(n_images=3000, n_patients=1200, seed=0))
    chosen = []
    for name, test in WANTED:
        match = next((s for s in studies if test(s) and s not in chosen), None)
        if match is None:
            raise RuntimeError(f"no phantom shows '{name}' in the default population")
        chosen.append(match)
    rows = -(-len(chosen) // COLUMNS)
    sheet = Image.new("L", (COLUMNS * TILE, rows * (TILE + CAPTION)), 255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, s in enumerate(chosen):
        x, y = (i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + CAPTION)
        sheet.paste(render_study(s, TILE), (x, y))
        draw.text((x + 4, y + TILE + 4), ", ".join(SHORT[label] for label in s.labels), fill=0, font=font)
        draw.text((x + 4, y + TILE + 23), details(s), fill=90, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img" / "phantoms.png")
    make_sheet(parser.parse_args().out)


if __name__ == "__main__":
    main()
