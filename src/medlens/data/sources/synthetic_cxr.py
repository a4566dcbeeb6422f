"""``synthetic_cxr``: chest-radiograph phantoms whose reports say only what the pixels show.

The offline default of medlens (DESIGN.md, "The embedded default"): nothing is downloaded; each
record carries a picklable renderer (:class:`~medlens.data.phantom.PhantomImage`) that ``prepare``
calls in its worker processes, the report, the CheXpert labels, the patient and study ids (patients
have several studies, so splits must be patient-level) and, in ``meta``, what was drawn: the
cardiothoracic ratio, effusion sides and sizes, lesion sizes in mm and lobes, devices. Everything
follows from ``synthetic.seed``: the same seed gives byte-identical prepared parquet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medlens.config import DatasetConfig
from medlens.data.phantom import PhantomImage, Study, check_synthetic_config, sample_studies, write_report
from medlens.data.phantom.vocabulary import MM_PER_UNIT
from medlens.data.sources import RawRecord, register_adapter

__all__ = ["records", "study_meta"]


@register_adapter("synthetic_cxr", description="Chest-radiograph phantoms with reports true to the pixels")
def records(cfg: DatasetConfig, root: Path) -> Iterator[RawRecord]:
    """One record per phantom study of ``cfg.synthetic``, in patient order.

    Args:
        cfg: the dataset definition; only its ``synthetic`` section is read.
        root: the dataset's download folder ``results/raw/{dataset}`` (nothing is read from it).

    Raises:
        ConfigError: naming ``datasets.<name>.synthetic.<key>`` when a setting is out of range.
    """
    # adapters are not told the dataset's name; the download folder is named after it
    name = Path(root).name
    check_synthetic_config(cfg.synthetic, key=f"datasets.{name}.synthetic", file="config/config.yaml")
    source = f"synthetic_cxr(seed={cfg.synthetic.seed})"
    for study in sample_studies(cfg.synthetic):
        yield RawRecord(
            native_id=study.study_id,
            image=PhantomImage(study, cfg.synthetic.image_size),
            text=write_report(study).text,
            labels=study.labels,
            text_source="report",
            modality="chest_xray",
            view=study.acquisition.view,
            patient_id=study.patient_id,
            study_id=study.study_id,
            meta=study_meta(study),
            source_ref=f"{source} {study.study_id}",
        )


def study_meta(study: Study) -> dict[str, Any]:
    """What the study shows, as JSON-ready values for the prepared parquet's ``meta`` column."""
    f, r4 = study.findings, (lambda x: round(float(x), 4))
    meta: dict[str, Any] = {
        "view": study.acquisition.view,
        "cardiothoracic_ratio": r4(f.ctr),
        "cardiomegaly": f.cardiomegaly,
        "effusions": [{"side": e.side, "size": e.size, "height": r4(e.height)} for e in f.effusions],
        "lesions": [
            {
                "side": les.side,
                "lobe": les.lobe,
                "size_mm": les.size_mm,
                "kind": les.kind,
                "lobulated": les.lobulated,
            }
            for les in f.lesions
        ],
        "devices": [{k: v for k, v in asdict(d).items() if v is not None} for d in f.devices],
    }
    if f.consolidation is not None:
        c = f.consolidation
        meta["consolidation"] = {
            "side": c.side,
            "lobe": c.lobe,
            "pneumonia": c.pneumonia,
            "radius_mm": int(round(c.radius * MM_PER_UNIT)),
        }
    if f.pneumothorax is not None:
        p = f.pneumothorax
        meta["pneumothorax"] = {"side": p.side, "size": p.size, "rim_mm": p.rim_mm}
    if f.edema is not None:
        meta["edema"] = {"severity": f.edema.severity, "septal_lines": f.edema.septal_lines}
    if f.atelectasis is not None:
        a = f.atelectasis
        meta["atelectasis"] = {
            "sides": list(a.sides),
            "zone": a.zone,
            "kind": a.kind,
            "elevation_mm": int(round(a.elevation * MM_PER_UNIT)),
        }
    return meta
