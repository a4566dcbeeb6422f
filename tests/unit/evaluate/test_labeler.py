"""The rule-based CheXpert-style labeler: hand-written sentences, real clinical notes, configuration errors."""

from __future__ import annotations

import csv

import pytest
import yaml

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.evaluate.labeler import (
    RuleLabeler,
    label_report,
    label_reports,
    load_rule_labeler,
    tokenize_report,
)
from medlens.resources import resource_path

NF = "No Finding"

# (text, expected labels). The expectation is the whole dict: an observation left out is unmentioned,
# and "No Finding" is 1 exactly when nothing but support devices is positive or uncertain.
SENTENCES = [
    # plain positives and synonyms
    ("Cardiomegaly.", {"Cardiomegaly": 1}),
    ("The heart is enlarged.", {"Cardiomegaly": 1}),
    ("Enlarged cardiac silhouette.", {"Cardiomegaly": 1}),
    ("The cardiac silhouette is moderately enlarged.", {"Cardiomegaly": 1}),
    ("Mild cardiac enlargement.", {"Cardiomegaly": 1}),
    ("Moderate left pleural effusion.", {"Pleural Effusion": 1}),
    ("Small bilateral pleural effusions.", {"Pleural Effusion": 1}),
    ("Large right-sided effusion with adjacent atelectasis.", {"Pleural Effusion": 1, "Atelectasis": 1}),
    ("Right lower lobe consolidation.", {"Consolidation": 1}),
    ("Consolidative opacity in the left upper lobe.", {"Consolidation": 1, "Lung Opacity": 1}),
    ("Findings are consistent with right lower lobe pneumonia.", {"Pneumonia": 1}),
    ("A 12 mm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("Left upper lobe mass measuring 4 cm.", {"Lung Lesion": 1}),
    ("Multiple pulmonary nodules.", {"Lung Lesion": 1}),
    ("Small right apical pneumothorax.", {"Pneumothorax": 1}),
    ("Large left-sided pneumothorax with mediastinal shift.", {"Pneumothorax": 1}),
    ("Interstitial pulmonary edema.", {"Edema": 1}),
    ("Mild pulmonary vascular congestion.", {"Edema": 1}),
    ("Left basal atelectasis.", {"Atelectasis": 1}),
    ("Plate-like atelectasis at the right base.", {"Atelectasis": 1}),
    ("Bibasilar opacities.", {"Lung Opacity": 1}),
    ("Patchy ground-glass opacities in both lungs.", {"Lung Opacity": 1}),
    ("Acute fracture of the left seventh rib.", {"Fracture": 1}),
    ("Right pleural thickening.", {"Pleural Other": 1}),
    ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": 1}),
    # support devices (No Finding stays 1 when only devices are present)
    ("Endotracheal tube tip 4 cm above the carina.", {"Support Devices": 1, NF: 1}),
    ("Right internal jugular central venous catheter terminates in the SVC.", {"Support Devices": 1, NF: 1}),
    ("Nasogastric tube courses below the diaphragm.", {"Support Devices": 1, NF: 1}),
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", {"Support Devices": 1, NF: 1}),
    ("Interval removal of the endotracheal tube.", {"Support Devices": 0, NF: 1}),
    # negation
    ("No pleural effusion.", {"Pleural Effusion": 0, NF: 1}),
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0, NF: 1}),
    (
        "No focal consolidation, pleural effusion, or pneumothorax.",
        {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, NF: 1},
    ),
    ("The lungs are clear without focal consolidation.", {"Consolidation": 0, NF: 1}),
    ("Lungs are free of consolidation.", {"Consolidation": 0, NF: 1}),
    ("Negative for pneumothorax.", {"Pneumothorax": 0, NF: 1}),
    ("No evidence of pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("There is no evidence of pulmonary edema.", {"Edema": 0, NF: 1}),
    ("The previously seen left pleural effusion has resolved.", {"Pleural Effusion": 0, NF: 1}),
    ("Resolved right lower lobe pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("Pneumothorax is no longer seen.", {"Pneumothorax": 0, NF: 1}),
    ("No consolidation to suggest pneumonia.", {"Consolidation": 0, "Pneumonia": 0, NF: 1}),
    ("Heart size is normal.", {"Cardiomegaly": 0, NF: 1}),
    ("Normal heart size.", {"Cardiomegaly": 0, NF: 1}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0, NF: 1}),
    ("Heart size is within normal limits.", {"Cardiomegaly": 0, NF: 1}),
    (
        "Heart size and mediastinal contours are normal.",
        {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, NF: 1},
    ),
    ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": 0, NF: 1}),
    ("No acute osseous abnormality; no displaced fracture.", {"Fracture": 0, NF: 1}),
    # uncertainty
    ("Possible small left pleural effusion.", {"Pleural Effusion": -1}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": -1}),
    ("Cannot exclude a small right pneumothorax.", {"Pneumothorax": -1}),
    (
        "Right basilar opacity may represent atelectasis or pneumonia.",
        {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1},
    ),
    ("Findings are suspicious for early pneumonia.", {"Pneumonia": -1}),
    ("Left basilar opacity, likely atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Borderline heart size.", {"Cardiomegaly": -1}),
    ("Question of a left lower lobe nodule.", {"Lung Lesion": -1}),
    ("Atelectasis versus consolidation at the left base.", {"Atelectasis": -1, "Consolidation": -1}),
    ("Mild edema is not excluded.", {"Edema": -1}),
    ("Stable cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": -1}),
    ("?pneumothorax", {"Pneumothorax": -1}),
    # pseudo-negation: "no change" does not negate
    ("No change in the moderate left pleural effusion.", {"Pleural Effusion": 1}),
    ("No significant change in bibasilar atelectasis.", {"Atelectasis": 1}),
    # scope: a terminator ends the negation
    ("No effusion, but there is a small right pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("Small left effusion, no pneumothorax.", {"Pleural Effusion": 1, "Pneumothorax": 0}),
    (
        "No pneumothorax and the endotracheal tube is in good position.",
        {"Pneumothorax": 0, "Support Devices": 1, NF: 1},
    ),
    # laterality: negated on one side, present on the other (positive wins)
    ("No right pleural effusion. Small left pleural effusion.", {"Pleural Effusion": 1}),
    ("Right pneumothorax has resolved; new small left apical pneumothorax.", {"Pneumothorax": 1}),
    # several findings
    (
        "Cardiomegaly with pulmonary edema and bilateral pleural effusions.",
        {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1},
    ),
    (
        "Enlarged heart. Left lower lobe consolidation consistent with pneumonia. No pneumothorax.",
        {"Cardiomegaly": 1, "Consolidation": 1, "Pneumonia": 1, "Pneumothorax": 0},
    ),
    ("Normal heart size, enlarged mediastinum.", {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 1}),
    # CheXpert's aggregation: heart failure adds an uncertain cardiomegaly
    ("Findings of congestive heart failure.", {"Edema": 1, "Cardiomegaly": -1}),
    # unmentions: not the finding
    ("Small pericardial effusion.", {NF: 1}),
    ("Kerley B lines.", {"Edema": 1}),
    ("History of laryngeal carcinoma.", {NF: 1}),
    # No Finding
    ("The lungs are clear. No acute cardiopulmonary process.", {NF: 1}),
    ("Normal chest radiograph.", {NF: 1}),
    ("Hyperinflated lungs consistent with emphysema.", {}),  # another abnormality blocks No Finding
    ("No emphysema.", {NF: 1}),
    # abbreviations
    ("Right lower lobe consolidation w/o effusion.", {"Consolidation": 1, "Pleural Effusion": 0}),
    # more wording seen in reports
    (
        "There is no pneumothorax. The heart size is at the upper limits of normal.",
        {"Pneumothorax": 0, "Cardiomegaly": -1},
    ),
    ("Status post median sternotomy with intact sternal wires.", {"Support Devices": 1, NF: 1}),
    ("The right IJ line has been removed.", {"Support Devices": 0, NF: 1}),
    ("Unchanged position of the left chest tube.", {"Support Devices": 1, NF: 1}),
    ("No new consolidation.", {"Consolidation": 0, NF: 1}),
    ("Evaluate for pneumonia.", {"Pneumonia": -1}),
    ("Increased heart rate.", {NF: 1}),
    ("There is a moderate right pleural effusion, which has increased in size.", {"Pleural Effusion": 1}),
    ("Right lower lobe collapse.", {"Atelectasis": 1}),
    ("Pulmonary edema has improved but persists.", {"Edema": 1}),
    (
        "No pleural effusions are seen, but there is a left lower lobe consolidation.",
        {"Pleural Effusion": 0, "Consolidation": 1},
    ),
    ("Lungs are hyperinflated but clear.", {}),
    ("No lines or tubes.", {"Support Devices": 0, NF: 1}),
]


def test_table_is_large_and_varied():
    assert len(SENTENCES) >= 60
    values = {v for _, exp in SENTENCES for v in exp.values()}
    assert values == {-1, 0, 1}
    assert {o for _, exp in SENTENCES for o in exp} == set(FINDINGS)


@pytest.mark.parametrize("text,expected", SENTENCES, ids=[t[:50] for t, _ in SENTENCES])
def test_sentence(text, expected):
    assert label_report(text) == expected


def test_label_reports_matches_label_report_and_keeps_findings_order():
    texts = [t for t, _ in SENTENCES[:10]]
    labels = label_reports(texts)
    assert labels == [label_report(t) for t in texts]
    for d in labels:
        assert list(d) == [o for o in FINDINGS if o in d]


def test_tokenizer_normalises_case_hyphens_and_shorthand():
    assert tokenize_report("Ground-glass OPACITY w/o effusion; s/p CABG.") == [
        "ground",
        "glass",
        "opacity",
        "without",
        "effusion",
        ";",
        "status",
        "post",
        "cabg",
        ".",
    ]
    assert tokenize_report("1.5 cm nodule.") == ["1.5", "cm", "nodule", "."]


def test_plural_rule_does_not_turn_notes_into_not():
    # "Imaging Notes:" once negated the whole sentence through "not"+"es"
    assert label_report("Imaging Notes: Patchy airspace opacities.") == {"Lung Opacity": 1}


def test_non_string_report_is_a_data_error():
    with pytest.raises(DataError, match="string"):
        label_report(None)


def _lists() -> tuple[dict, dict]:
    return (
        yaml.safe_load(resource_path("labeler", "mentions.yaml").read_text()),
        yaml.safe_load(resource_path("labeler", "modifiers.yaml").read_text()),
    )


def test_unknown_observation_is_a_config_error():
    mentions, modifiers = _lists()
    mentions["observations"]["Pneumonitis"] = {"mention": ["pneumonitis"]}
    with pytest.raises(ConfigError, match="observations.Pneumonitis"):
        RuleLabeler(mentions, modifiers, source="m.yaml")


def test_unquoted_yaml_boolean_is_a_config_error():
    mentions, modifiers = _lists()
    modifiers["negation"][0]["phrases"].append(False)  # what an unquoted `no` becomes
    with pytest.raises(ConfigError, match=r"negation\[0\].phrases"):
        RuleLabeler(mentions, modifiers, source="m.yaml")


def test_missing_anatomy_window_is_a_config_error():
    mentions, modifiers = _lists()
    del mentions["anatomy_window"]
    with pytest.raises(ConfigError, match="anatomy_window"):
        RuleLabeler(mentions, modifiers, source="m.yaml")


def test_bad_cue_direction_is_a_config_error():
    mentions, modifiers = _lists()
    modifiers["uncertainty"][0]["direction"] = "sideways"
    with pytest.raises(ConfigError, match="direction"):
        RuleLabeler(mentions, modifiers, source="m.yaml")


def test_phrase_lists_can_be_loaded_from_another_folder(tmp_path):
    mentions, modifiers = _lists()
    mentions["observations"]["Pneumonia"]["mention"].append("pneumonitis")
    (tmp_path / "mentions.yaml").write_text(yaml.safe_dump(mentions))
    (tmp_path / "modifiers.yaml").write_text(yaml.safe_dump(modifiers))
    labeler = load_rule_labeler(str(tmp_path))
    assert labeler.label("Radiation pneumonitis.") == {"Pneumonia": 1}
    assert label_report("Radiation pneumonitis.") == {NF: 1}
    assert labeler.describe()["phrases_sha256"] != load_rule_labeler().describe()["phrases_sha256"]
    with pytest.raises(ConfigError, match="not found"):
        load_rule_labeler(str(tmp_path / "missing"))


# NIH-14 names in the text templates without a CheXpert-14 label of their own: what the labeler should find.
# None: another abnormality, which only rules out "No Finding".
_TEMPLATE_TARGETS = {
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Infiltration": "Lung Opacity",
    "Pleural Thickening": "Pleural Other",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
}
# CheXpert reads "suggests" as a hedge, where the template means a positive finding.
_TEMPLATE_HEDGES = {"The appearance suggests {qualifier} pneumonia."}


def _template_cases() -> list[tuple[str, str, str]]:
    spec = yaml.safe_load(resource_path("text_templates", "chest_xray.yaml").read_text())
    cases = []
    for label, entry in spec["labels"].items():
        for polarity in ("positive", "negative", "uncertain"):
            for phrase in entry.get(polarity, []):
                cases.append((label, "uncertain" if phrase in _TEMPLATE_HEDGES else polarity, phrase))
    cases += [(NF, "positive", phrase) for phrase in spec["normal"] + spec["impression"]["normal"]]
    return cases


@pytest.mark.parametrize("label,polarity,phrase", _template_cases())
def test_text_synthesised_from_labels_reads_back(label, polarity, phrase):
    """The reports medlens writes from labels (resources/text_templates) are labelled as they were written."""
    text = phrase.replace("{side}", "Left").replace("{qualifier}", "viral")
    labels = label_report(text[0].upper() + text[1:])
    target = _TEMPLATE_TARGETS.get(label, label)
    if target is None:
        assert (NF in labels) == (polarity == "negative"), labels
    else:
        assert labels.get(target) == {"positive": 1, "negative": 0, "uncertain": -1}[polarity], labels


# A sample of the real clinical notes in ../shared/realdata (every 9th distinct text in manifest order),
# each read by hand and labelled the way the CheXpert rules label a report: an unmentioned observation
# is left out, a hedged one is -1, and "No Finding" is 1 when nothing abnormal is said.
HAND_CHECKED = {
    # "worsening of the parenchymal attenuation" is increasing opacity; PCP is pneumocystis pneumonia
    "cxr-dev-0001": {"Lung Opacity": 1, "Pneumonia": 1},
    # "ill-defined ground glass opacities"
    "cxr-dev-0013": {"Lung Opacity": 1},
    # patchy opacities and interstitial markings; pneumonia only "suggestive of" / "may also create"
    "cxr-dev-0024": {"Lung Opacity": 1, "Pneumonia": -1},
    # "given nodules on CXR"; lobulated opacities; infection only in the differential
    "cxr-dev-0034": {"Lung Lesion": 1, "Lung Opacity": 1, "Pneumonia": -1},
    # symptoms only: nothing abnormal is said about the image
    "cxr-dev-0047": {NF: 1},
    # "areas of consolidation and new areas of interstitial thickening"
    "cxr-dev-0059": {"Lung Opacity": 1, "Consolidation": 1},
    # "Normal appearances."
    "cxr-dev-0068": {NF: 1},
    # ground-glass opacities; the "?" are encoding debris next to lab values, not hedges
    "cxr-dev-0077": {"Lung Opacity": 1},
    # admitted with pneumonia; COPD is another abnormality; after extubation there is no tube to label
    "cxr-dev-0086": {"Pneumonia": 1},
    # "only a small opacity in the right upper perihilar region"
    "cxr-dev-0100": {"Lung Opacity": 1},
}


def _manifest(folder) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_real_note_is_labelled(realdata):
    rows = _manifest(realdata)
    assert len(rows) == 110
    labels = label_reports([r["text"] for r in rows])
    for row, lab in zip(rows, labels, strict=True):
        assert set(lab) <= set(FINDINGS), row["id"]
        assert set(lab.values()) <= {-1, 0, 1}, row["id"]
        assert lab.get(NF) in (None, 1), row["id"]
    # the notes describe pneumonia cases: most say something abnormal
    abnormal = sum(
        1 for lab in labels if any(v != 0 for o, v in lab.items() if o not in (NF, "Support Devices"))
    )
    assert abnormal >= 0.8 * len(rows)


@pytest.mark.parametrize("row_id", sorted(HAND_CHECKED))
def test_hand_checked_real_notes(realdata, row_id):
    texts = {r["id"]: r["text"] for r in _manifest(realdata)}
    assert label_report(texts[row_id]) == HAND_CHECKED[row_id]


def test_labeler_reads_the_phantom_reports_back_to_their_true_labels():
    """Issue #7: >= 0.95 micro-F1 against the synthetic_cxr reports' true labels (scored on the phantom's labels)."""
    from medlens.data.phantom import LABELS, sample_reports

    pairs = sample_reports(400, seed=11)
    predicted = label_reports([text for text, _ in pairs])
    tp = fp = fn = 0
    for found, (_, truth) in zip(predicted, pairs, strict=True):
        positive = {label for label, value in found.items() if value in (1, -1)}
        tp += len(positive & set(truth))
        fp += len((positive - set(truth)) & set(LABELS))
        fn += len(set(truth) - positive)
    assert 2 * tp / (2 * tp + fp + fn) >= 0.95
