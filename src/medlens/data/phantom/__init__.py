"""Chest-radiograph phantoms: sampled patients and studies, rendered pixels, and reports true to them.

The ``synthetic_cxr`` dataset source (:mod:`medlens.data.sources.synthetic_cxr`) is built from
these pieces: :func:`sample_studies` draws the population from a :class:`~medlens.config.SyntheticConfig`,
:func:`render_study` draws one study's radiograph, :func:`write_report` phrases its report, and
:func:`sample_reports` gives (report, labels) pairs without rendering, for code that only needs text.
"""

from medlens.data.phantom.render import PhantomImage, render_study, render_with_masks
from medlens.data.phantom.report import Report, Statement, load_report_templates, sample_reports, write_report
from medlens.data.phantom.sampling import Findings, Study, sample_studies, study_labels
from medlens.data.phantom.vocabulary import LABELS, SAMPLED_FINDINGS, check_synthetic_config

__all__ = [
    "sample_studies",
    "render_study",
    "render_with_masks",
    "write_report",
    "sample_reports",
    "study_labels",
    "check_synthetic_config",
    "load_report_templates",
    "PhantomImage",
    "Study",
    "Findings",
    "Report",
    "Statement",
    "LABELS",
    "SAMPLED_FINDINGS",
]
