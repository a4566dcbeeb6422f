"""Tests of medlens.evaluate.zero_shot: prompt sets, the No Finding fix, softmax over the pair, ensembling."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.evaluate.zero_shot import (
    build_prompts,
    encode_prompts,
    evaluate_zero_shot,
    load_prompt_templates,
    zero_shot_logits,
    zero_shot_probabilities,
)

DIM = 16


class FakeTextEncoder:
    """A deterministic random vector per distinct string, recording every call."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.table: dict[str, np.ndarray] = {}
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        for t in texts:
            self.table.setdefault(t, self.rng.normal(size=DIM))
        return np.stack([self.table[t] for t in texts])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", ["chexzero", "report"])
def test_shipped_sets_cover_all_14_labels(name):
    prompts = build_prompts(list(FINDINGS), name)
    assert list(prompts) == list(FINDINGS)
    for pos, neg in prompts.values():
        assert pos and neg and not set(pos) & set(neg)


@pytest.mark.parametrize("name", ["chexzero", "report"])
def test_no_finding_is_not_a_double_negative(name):
    pos, neg = build_prompts(["No Finding"], name)["No Finding"]
    for prompt in neg:
        assert "no no finding" not in prompt.lower()
        assert not prompt.lower().startswith("no ")
    assert any("no" in p.lower().split() or "normal" in p.lower() for p in pos)


def test_chexzero_set_is_the_chexzero_pair_for_other_labels():
    assert build_prompts(["Atelectasis"], "chexzero")["Atelectasis"] == (["Atelectasis"], ["no Atelectasis"])


def test_report_set_is_sentences_whose_ensembles_favour_neither_side():
    for pos, neg in build_prompts(list(FINDINGS), "report").values():
        for side in (pos, neg):
            words = [set(p.lower().rstrip(".").split()) for p in side]
            assert all(p.endswith(".") for p in side)
            assert sum("left" in w for w in words) == sum("right" in w for w in words), side


def test_default_template_refuses_a_negated_label():
    templates = {"name": "bare", "default": {"positive": ["{}"], "negative": ["no {}"]}}
    with pytest.raises(ConfigError, match="double negative 'no No Finding'"):
        build_prompts(["No Finding"], templates)


def test_label_without_prompts_raises():
    templates = {"labels": {"Edema": {"positive": ["Edema."], "negative": ["No edema."]}}}
    with pytest.raises(ConfigError, match="no prompts for label 'Fracture'"):
        build_prompts(["Fracture"], templates)


def test_malformed_template_files_raise(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("default:\n  positive: ['{}']\n")
    with pytest.raises(ConfigError, match="default"):
        load_prompt_templates(bad)
    bad.write_text("default:\n  positive: ['finding']\n  negative: ['no {}']\n")
    with pytest.raises(ConfigError, match=r"default\.positive.*placeholder"):
        load_prompt_templates(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_prompt_templates("no_such_set")


def test_load_from_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndefault: {positive: ['{} present'], negative: ['{} absent']}\n")
    t = load_prompt_templates(path)
    assert t["name"] == "mine" and t["file"] == str(path)
    assert build_prompts(["Edema"], t) == {"Edema": (["Edema present"], ["Edema absent"])}


def test_probability_is_softmax_over_the_pair_closed_form():
    enc = FakeTextEncoder()
    img = np.random.default_rng(1).normal(size=(5, DIM))
    labels = ["Atelectasis", "Edema"]
    scale = 7.0
    probs = zero_shot_probabilities(img, enc, labels, "chexzero", logit_scale=scale)
    for j, label in enumerate(labels):
        pos = scale * _unit(img) @ _unit(enc.table[label])
        neg = scale * _unit(img) @ _unit(enc.table[f"no {label}"])
        np.testing.assert_allclose(probs[:, j], np.exp(pos) / (np.exp(pos) + np.exp(neg)), rtol=1e-12)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == len(set(enc.calls[0])) == 4


def test_ensembling_averages_normalised_embeddings_then_renormalises():
    enc = FakeTextEncoder()
    prompts = {"X": (["a", "b"], ["c"])}
    pos, neg = encode_prompts(prompts, enc)
    expected = _unit(_unit(enc.table["a"]) + _unit(enc.table["b"]))
    np.testing.assert_allclose(pos[0], expected, rtol=1e-12)
    np.testing.assert_allclose(neg[0], _unit(enc.table["c"]), rtol=1e-12)


def test_scale_changes_calibration_not_ranking():
    enc = FakeTextEncoder()
    img = np.random.default_rng(2).normal(size=(50, DIM))
    p1 = zero_shot_probabilities(img, enc, ["Edema"], logit_scale=1.0)[:, 0]
    p5 = zero_shot_probabilities(img, enc, ["Edema"], logit_scale=5.0)[:, 0]
    np.testing.assert_array_equal(np.argsort(p1), np.argsort(p5))
    assert np.ptp(p5) > np.ptp(p1)
    logits = zero_shot_logits(img, enc, ["Edema"], logit_scale=100.0)
    np.testing.assert_array_equal(np.argsort(logits[:, 0, 0] - logits[:, 0, 1]), np.argsort(p1))


def test_auc_is_immune_to_probability_saturation():
    # At scale 100 well-separated images get probability exactly 1.0 in float64; ranking them by
    # probability would tie them. evaluate_zero_shot ranks by the log-odds, so the scale cannot matter.
    enc = FakeTextEncoder()
    img = np.random.default_rng(4).normal(size=(60, DIM))
    y = (np.random.default_rng(5).random((60, 1)) < 0.5).astype(int)
    probs = zero_shot_probabilities(img, enc, ["Edema"], logit_scale=100.0)
    assert len(np.unique(probs)) < 60  # saturated ties exist
    aucs = [
        evaluate_zero_shot(img, enc, y, ["Edema"], logit_scale=s, n_resamples=20)["per_label"]["Edema"]["auc"]
        for s in (1.0, 100.0)
    ]
    assert aucs[0] == pytest.approx(aucs[1], abs=1e-12)


def test_evaluate_zero_shot_on_aligned_features_gives_auc_1_and_states_protocol():
    enc = FakeTextEncoder()
    labels = ["Cardiomegaly", "Edema"]
    rng = np.random.default_rng(3)
    y = (rng.random((40, 2)) < 0.5).astype(int)
    y[0], y[1] = 0, 1
    pos, neg = encode_prompts(build_prompts(labels, "chexzero"), enc)
    # Each image points to the positive or the negative prompt of each label, by its target.
    img = sum(np.where(y[:, [j]] == 1, pos[j], neg[j]) for j in range(2)) + 0.01 * rng.normal(size=(40, DIM))
    res = evaluate_zero_shot(img, enc, y, labels, n_resamples=100)
    assert res["mean"]["auc"] == 1.0
    proto = res["protocol"]
    assert proto["prompt_set"] == "chexzero" and proto["logit_scale"] == 100.0
    assert proto["prompts"]["Edema"] == {"positive": ["Edema"], "negative": ["no Edema"]}
    assert proto["n_resamples"] == 100 and proto["seed"] == 0 and proto["n"] == 40
    json.dumps(res, allow_nan=False)


def test_bad_features_raise():
    enc = FakeTextEncoder()
    with pytest.raises(DataError, match="zero or non-finite"):
        zero_shot_probabilities(np.zeros((2, DIM)), enc, ["Edema"])
    with pytest.raises(DataError, match="dims"):
        zero_shot_probabilities(np.ones((2, DIM + 1)), enc, ["Edema"])
    with pytest.raises(DataError, match="encode_text returned"):
        zero_shot_probabilities(np.ones((2, DIM)), lambda texts: np.ones((1, DIM)), ["Edema"])
    with pytest.raises(ConfigError, match="logit_scale"):
        zero_shot_probabilities(np.ones((2, DIM)), enc, ["Edema"], logit_scale=0.0)


def test_a_prompt_file_path_that_is_a_folder_or_not_yaml_is_named_as_a_path(tmp_path):
    # was: "'<path>.yaml' is not the name of a shipped resource", for a folder the user gave with --prompts
    from medlens.evaluate.zero_shot import load_prompt_templates

    (tmp_path / "prompts.txt").write_text("Cardiomegaly: []\n")
    for given, what in (
        (tmp_path, "a folder"),
        (tmp_path / "prompts.txt", "not a .yaml file"),
        (tmp_path / "gone" / "p.yaml", "not found"),
    ):
        with pytest.raises(ConfigError, match=rf"prompt template file '{re.escape(str(given))}': {what}"):
            load_prompt_templates(str(given))
