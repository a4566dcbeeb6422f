"""Report <-> label: every positive label is stated with its details, every mentioned absent one is negated.

The report text is read back with a small keyword labeler written here, independent of the templates,
so a phrasing that names the wrong finding, drops a side or hedges fails these tests.
"""

from __future__ import annotations

import re

import pytest
import yaml

from medlens.config import SyntheticConfig
from medlens.data.phantom import load_report_templates, sample_reports, sample_studies, write_report
from medlens.errors import ConfigError

TERMS = {
    "Cardiomegaly": r"cardiomegaly|cardiac silhouette|cardiomediastinal silhouette|heart size|\bheart is\b",
    "Pleural Effusion": r"effusion",
    "Consolidation": r"consolidation",
    "Pneumonia": r"pneumonia",
    "Lung Lesion": r"nodule|\bmass",
    "Pneumothorax": r"pneumothorax",
    "Edema": r"edema",
    "Atelectasis": r"atelectasis",
    "Support Devices": r"\btube\b|catheter|central line",
}
NEGATION = re.compile(
    r"^(no|there is no|there are no|normal)\b|\bwithout\b|\bis normal\b|\bnormal in size\b|"
    r"\bno evidence of\b"
)
HEDGES = re.compile(
    r"\b(may|might|possible|possibly|probable|likely|suggest\w*|concern\w*|cannot|could|"
    r"consistent with|compatible with|stable|unchanged|question\w*|versus|differential|"
    r"heart failure|chf|collapse\w*)\b"
)


def read_labels(text: str) -> tuple[set[str], set[str]]:
    """(positive, negated) CheXpert names mentioned in a report, sentence by sentence."""
    positive, negated = set(), set()
    body = re.sub(r"(FINDINGS|IMPRESSION):", "", text)
    for sentence in re.split(r"(?<=\.)\s+", body.strip()):
        s = sentence.lower()
        for label, pattern in TERMS.items():
            if re.search(pattern, s):
                (negated if NEGATION.search(s) else positive).add(label)
    return positive, negated


@pytest.fixture(scope="module")
def studies():
    return sample_studies(SyntheticConfig(n_images=2500, n_patients=1500, seed=21))


def test_reports_have_findings_and_impression(studies):
    for s in studies[:200]:
        text = write_report(s).text
        assert text.startswith("FINDINGS: ") and " IMPRESSION: " in text
        assert text.count("FINDINGS:") == 1 and text.count("IMPRESSION:") == 1
        assert "{" not in text and "}" not in text and "  " not in text


def test_each_positive_is_stated_and_each_mentioned_absent_label_negated(studies):
    for s in studies:
        text = write_report(s).text
        positive, negated = read_labels(text)
        labels = set(s.labels) - {"No Finding"}
        assert positive == labels, (s.study_id, text)
        assert not negated & labels, (s.study_id, text)


def test_no_hedges_anywhere(studies):
    for s in studies:
        text = write_report(s).text
        assert not HEDGES.search(text.lower()), text


def test_normal_studies_say_so(studies):
    normals = [s for s in studies if s.labels == ["No Finding"]]
    assert normals
    for s in normals:
        impression = write_report(s).text.split("IMPRESSION: ")[1].lower()
        assert "no acute" in impression or "normal chest" in impression


def _statement(report, label: str) -> str:
    return next(
        st.text for st in report.statements if label in st.labels and st.positive and st.section == "findings"
    ).lower()


def test_sides_sizes_lobes_and_measurements_are_stated(studies):
    for s in studies:
        f, report = s.findings, write_report(s)
        text = report.text.lower()
        if f.effusions:
            said = _statement(report, "Pleural Effusion")
            for e in f.effusions:
                assert e.size in said
                assert e.side in said or len(f.effusions) == 2 and ("bilateral" in said or "both" in said)
        if f.pneumothorax is not None:
            said = _statement(report, "Pneumothorax")
            assert f.pneumothorax.side in said and f.pneumothorax.size in said
        if f.consolidation is not None:
            assert f.consolidation.lobe in _statement(report, "Consolidation")
            assert ("pneumonia" in text) == f.consolidation.pneumonia
        for les in f.lesions:
            said = _statement(report, "Lung Lesion")
            assert f"{les.size_mm} mm" in said, said
            assert les.lobe in said or len(f.lesions) > 1 and les.lobe in text
        if f.atelectasis is not None:
            said = _statement(report, "Atelectasis")
            sides = f.atelectasis.sides
            assert (
                (sides[0] in said)
                if len(sides) == 1
                else any(w in said for w in ("both", "bibasilar", "bilateral"))
            )
            assert f.atelectasis.kind in said
        if f.cardiomegaly is not None:
            said = _statement(report, "Cardiomegaly")
            assert f.cardiomegaly in said or "enlarged" in said
            if "ratio" in said:
                assert f"{f.ctr:.2f}" in said
        if f.edema is not None:
            said = _statement(report, "Edema")
            assert ("kerley" in said or "septal" in said) == f.edema.septal_lines or "interstitial" in said
        for dev in f.devices:
            if dev.kind == "endotracheal tube":
                assert f"{dev.tip_cm} cm above the carina" in text
            elif dev.kind == "central venous catheter":
                assert f"{dev.side} {dev.route}" in text
            else:
                assert "stomach" in text


def test_phrasing_varies_but_is_deterministic(studies):
    texts = [write_report(s).text for s in studies]
    assert texts == [write_report(s).text for s in studies]
    normal = [t for t, s in zip(texts, studies, strict=True) if s.labels == ["No Finding"]]
    assert len(set(normal)) > len(normal) // 3  # several phrasings per statement
    enlarged = " ".join(t for t, s in zip(texts, studies, strict=True) if "Cardiomegaly" in s.labels).lower()
    for synonym in ("cardiomegaly", "enlarged cardiac silhouette", "heart is"):
        assert synonym in enlarged


def test_sample_reports_gives_the_adapters_pairs_without_pixels():
    pairs = sample_reports(300, seed=4)
    assert len(pairs) == 300
    studies = sample_studies(SyntheticConfig(n_images=300, n_patients=300, seed=4))
    assert pairs == [(write_report(s).text, s.labels) for s in studies]
    assert {label for _, labels in pairs for label in labels} > {
        "No Finding",
        "Cardiomegaly",
        "Pleural Effusion",
    }


def test_missing_phrasings_are_a_config_error(tmp_path, monkeypatch):
    import medlens.data.phantom.report as report

    bad = tmp_path / "phantom"
    bad.mkdir()
    data = yaml.safe_load(report.resource_path("phantom", "report_templates.yaml").read_text())
    del data["pneumothorax"]
    (bad / "report_templates.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr(report, "resource_path", lambda *parts: tmp_path.joinpath(*parts))
    load_report_templates.cache_clear()
    try:
        with pytest.raises(ConfigError, match="pneumothorax"):
            load_report_templates()
    finally:
        load_report_templates.cache_clear()


def test_the_project_labeler_reads_back_exactly_the_labels():
    """medlens' CheXpert-style labeler finds each report's labels and nothing else: no uncertain hedges,
    no class the phantoms never label (Lung Opacity from "opacity" or "haziness", for instance)."""
    from medlens.evaluate.labeler import label_reports

    pairs = sample_reports(600, seed=13)
    for found, (text, truth) in zip(label_reports([text for text, _ in pairs]), pairs, strict=True):
        assert {label for label, value in found.items() if value != 0} == set(truth), text
