"""Seed claims: the shipped file, its checks, and measured values read from a collected experiment."""

from __future__ import annotations

import pytest
import yaml

from medlens.errors import ConfigError
from medlens.report.claims import compare_claims, list_seed_claims, load_seed_claims, measured_value


def test_the_shipped_claims_load_and_name_their_seed_files(repo):
    names = list_seed_claims()
    assert {"lapvqa_captioner", "siglip_base", "llama32_vision"} <= set(names)
    seeds = repo.parent / "shared" / "seeds"
    for name in names:
        entry = load_seed_claims(name)
        for claim in entry["claims"]:
            assert claim["seed"] in entry["seeds"]
            if seeds.is_dir():  # the quote is the seed's own words
                text = (seeds / claim["seed"]).read_text(encoding="utf-8", errors="replace")
                assert claim["quote"] in text, (name, claim["quote"])
    lapvqa = {
        c["figure"].split(",")[1].strip(): c["claimed"]
        for c in load_seed_claims("lapvqa_captioner")["claims"]
    }
    assert lapvqa == {"NIH ChestX-ray14 (14 labels)": 0.686, "CheXpert-5": 0.808}


def test_a_probe_claim_points_at_a_probe_its_experiment_can_run(repo):
    # a probe on a probe dataset (external_probes.<dataset>) needs that dataset in evaluate.probe_datasets;
    # the nih14 label set needs NIH's own labels: an NIH source among the data the probe reads
    datasets = yaml.safe_load((repo / "config" / "config.yaml").read_text())["datasets"]
    checked = 0
    for path in sorted((repo / "config" / "experiments").glob("*.yaml")):
        exp = yaml.safe_load(path.read_text())
        name = (exp.get("report") or {}).get("seed_claims")
        if name is None:
            continue
        probed = (exp.get("evaluate") or {}).get("probe_datasets") or []
        for claim in load_seed_claims(name)["claims"]:
            keys = (claim["measured"] or "").split(":")[-1].split(".")
            if "external_probes" in keys[0]:
                assert keys[1] in probed, (path.name, claim["figure"])
                read = [keys[1]]
            else:
                read = exp["datasets"]
            if "nih14" in keys:
                checked += 1
                assert any((datasets[d].get("adapter") or "").startswith("nih_") for d in read), path.name
    assert checked  # seed 004's NIH-14 claim is measured


def test_lapvqa_claims_are_measured_on_the_seeds_probe_datasets():
    nih, chexpert = load_seed_claims("lapvqa_captioner")["claims"]
    assert nih["measured"] == "decoder_eval:encoder_final_external_probes.nih14.nih14.mean.auc"
    assert chexpert["measured"] == "decoder_eval:encoder_final_external_probes.chexpert.chexpert5.mean.auc"
    # the card states no probe protocol, so medlens's cannot be "the seed's"
    assert all("seed's protocol" not in c["note"] for c in (nih, chexpert))


@pytest.mark.parametrize(
    "body, key",
    [
        ("x: {system: s, claims: [{figure: f, claimed: high, seed: a.txt}]}", "x.claims[0].claimed"),
        (
            "x: {system: s, claims: [{figure: f, claimed: 1, seed: a.txt, measured: nowhere}]}",
            "x.claims[0].measured",
        ),
        (
            "x: {system: s, claims: [{figure: f, claimed: 1, seed: a.txt, measured: 'encoder_curves:train/loss'}]}",
            "x.claims[0].measured",
        ),
        ("x: {system: s, claims: [{figure: f, claimed: 1}]}", "x.claims[0]"),
        ("x: {system: s, colour: red}", "x"),
    ],
)
def test_malformed_claims_name_the_key(tmp_path, body, key):
    path = tmp_path / "claims.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_seed_claims("x", path)
    assert err.value.key == key and err.value.file == str(path)


def test_an_unknown_name_lists_the_known_ones(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text("a: {system: s}\nb: {system: t}\n")
    with pytest.raises(ConfigError, match="unknown seed system 'c'; expected one of a, b"):
        load_seed_claims("c", path)


def test_measured_values_come_from_the_named_source():
    exp = {
        "encoder_eval": {"linear_probe": {"nih14": {"mean": {"auc": 0.7}}}, "flag": True},
        "encoder_curves": [{"step": 1, "train/loss": 9.0}, {"step": 2}, {"step": 3, "train/loss": 4.5}],
        "decoder_curves": [],
    }
    assert measured_value(exp, "encoder_eval:linear_probe.nih14.mean.auc") == 0.7
    assert measured_value(exp, "encoder_curves:train/loss@first") == 9.0
    assert measured_value(exp, "encoder_curves:train/loss@last") == 4.5
    assert measured_value(exp, "decoder_curves:train/loss@first") is None
    assert measured_value(exp, "encoder_eval:linear_probe.chexpert5.mean.auc") is None
    assert measured_value(exp, "encoder_eval:flag") is None  # a bool is not a figure
    assert measured_value(exp, None) is None


def test_compare_gives_the_difference_only_when_both_exist():
    claims = {
        "claims": [
            {"figure": "a", "claimed": 1.0, "measured": "encoder_eval:x"},
            {"figure": "b", "claimed": 2.0, "measured": None},
        ]
    }
    rows = compare_claims(claims, {"encoder_eval": {"x": 1.25}})
    assert [(r["measured"], r["difference"]) for r in rows] == [(1.25, 0.25), (None, None)]
    assert rows[0]["measured_ref"] == "encoder_eval:x"


def test_each_seed_experiment_sets_its_claims_beside_its_own_numbers(repo):
    """A seed preset's report shows the seed's figures next to medlens's (report.seed_claims)."""
    from medlens.config import load_experiment

    schema = repo / "workflow" / "schemas" / "experiment.schema.yaml"
    for name in list_seed_claims():
        exp = load_experiment(repo / "config" / "experiments" / f"{name}.yaml", schema_path=schema)
        assert exp.report.seed_claims == name
        load_seed_claims(exp.report.seed_claims)
    demo = load_experiment(repo / "config" / "experiments" / "demo.yaml", schema_path=schema)
    assert demo.report.seed_claims is None  # the demo reproduces no seed
