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
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.data.phantom import (
    PhantomImage,
    check_synthetic_config,
    sample_studies,
    study_meta,
    write_report,
)
from medlens.data.sources import RawRecord, register_adapter

__all__ = ["records"]


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
