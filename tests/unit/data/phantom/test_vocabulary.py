"""Bad phantom settings fail with the key and the allowed range or names."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medlens.config import SyntheticConfig
from medlens.data.phantom.vocabulary import (
    SAMPLED_FINDINGS,
    check_synthetic_config,
    resolved_co_occurrence,
    resolved_prevalence,
)
from medlens.errors import ConfigError

BAD = [
    ({"n_images": 0}, "n_images", "an integer >= 1"),
    ({"n_images": -5}, "n_images", "an integer >= 1"),
    ({"n_patients": -1}, "n_patients", "an integer >= 1"),
    ({"n_images": 10, "n_patients": 11}, "n_patients", "[1, n_images=10]"),
    ({"image_size": 16}, "image_size", "[48, 4096]"),
    ({"ap_fraction": 1.5}, "ap_fraction", "[0, 1]"),
    ({"pneumonia_fraction": -0.1}, "pneumonia_fraction", "[0, 1]"),
    ({"cardiomegaly_ctr": 0.8}, "cardiomegaly_ctr", "[0.42, 0.62]"),
    ({"prevalence": {"Cardiomegaly": 1.2}}, "prevalence.Cardiomegaly", "[0, 1]"),
    ({"prevalence": {"Edema": -0.01}}, "prevalence.Edema", "[0, 1]"),
    ({"prevalence": {"Fracture": 0.1}}, "prevalence.Fracture", "one of Cardiomegaly"),
    ({"prevalence": {"Pneumonia": 0.1}}, "prevalence.Pneumonia", "one of Cardiomegaly"),
    ({"co_occurrence": {"Edema": 2.0}}, "co_occurrence.Edema", "'Child|Parent'"),
    ({"co_occurrence": {"Edema|Nodule": 2.0}}, "co_occurrence.Edema|Nodule", "'Child|Parent'"),
    (
        {"co_occurrence": {"Cardiomegaly|Edema": 2.0}},
        "co_occurrence.Cardiomegaly|Edema",
        "a parent sampled earlier",
    ),
    ({"co_occurrence": {"Edema|Cardiomegaly": 11.0}}, "co_occurrence.Edema|Cardiomegaly", "[0, 10]"),
    (
        {"co_occurrence": {"Edema|Cardiomegaly": 2.0, "Edema|Lung Lesion": 2.0}},
        "co_occurrence.Edema|Lung Lesion",
        "one parent per child",
    ),
]


@pytest.mark.parametrize(("changes", "key", "expected"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_values_name_the_key_and_the_allowed_range(changes, key, expected):
    with pytest.raises(ConfigError) as err:
        check_synthetic_config(
            replace(SyntheticConfig(), **changes), key="datasets.demo.synthetic", file="config/config.yaml"
        )
    assert err.value.key == f"datasets.demo.synthetic.{key}"
    assert err.value.file == "config/config.yaml"
    assert expected in err.value.expected
    assert str(err.value).startswith(f"config/config.yaml: datasets.demo.synthetic.{key}: ")


def test_defaults_and_edges_are_accepted():
    check_synthetic_config(SyntheticConfig())
    check_synthetic_config(
        SyntheticConfig(
            n_images=1,
            n_patients=1,
            image_size=48,
            ap_fraction=0.0,
            prevalence=dict.fromkeys(SAMPLED_FINDINGS, 1.0),
            co_occurrence={"Pneumothorax|Edema": 0.0},
        )
    )


def test_configured_values_override_the_defaults():
    cfg = SyntheticConfig(prevalence={"Edema": 0.4}, co_occurrence={"Edema|Cardiomegaly": 1.5})
    assert resolved_prevalence(cfg)["Edema"] == 0.4
    assert list(resolved_prevalence(cfg)) == list(SAMPLED_FINDINGS)
    assert resolved_co_occurrence(cfg)["Edema"] == ("Cardiomegaly", 1.5)
    assert resolved_co_occurrence(cfg)["Pleural Effusion"] == ("Cardiomegaly", 2.5)  # default kept
