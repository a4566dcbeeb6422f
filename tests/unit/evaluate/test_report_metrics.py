"""The field's report-generation metrics: hand-checked pieces, the chest-only scope and the not-computed path."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from helpers.generations import prefetch_from_stand_in_hub, run_python, write_generations
from medlens.evaluate import metric_weights as mw
from medlens.evaluate import radcliq
from medlens.evaluate import report_metrics as rm


def test_radcliq_v1_is_the_published_linear_model_of_its_standardised_features():
    means = dict(zip(radcliq.RADCLIQ_COLUMNS, radcliq._RADCLIQ_MEAN, strict=True))
    at_mean = radcliq.radcliq_v1({k: np.array([v]) for k, v in means.items()})
    assert at_mean[0] == pytest.approx(0.0, abs=1e-9)  # the intercept is ~0
    # one standard deviation more RadGraph agreement lowers (improves) RadCliQ-v1 by its weight, 0.377
    better = dict(means, radgraph=means["radgraph"] + radcliq._RADCLIQ_SCALE[0])
    assert radcliq.radcliq_v1({k: np.array([v]) for k, v in better.items()})[0] == pytest.approx(-0.37708368)
    # BLEU-2 has (almost) no weight in v1
    more_bleu = dict(means, bleu2=1.0)
    assert abs(radcliq.radcliq_v1({k: np.array([v]) for k, v in more_bleu.items()})[0]) < 1e-9


def _annotation(entities):
    return {"entities": {str(i): e for i, e in enumerate(entities, 1)}}


def test_radgraph_feature_of_radcliq_is_the_mean_of_entity_and_relation_f1():
    effusion = {"tokens": "effusion", "label": "OBS-DP", "relations": [["located_at", "2"]]}
    pleural = {"tokens": "pleural", "label": "ANAT-DP", "relations": []}
    reference = _annotation([effusion, pleural])
    same = radcliq.radgraph_combined([reference], [reference])
    # the same entities without the relation: entity F1 1, relation F1 0
    unrelated = _annotation([dict(effusion, relations=[]), pleural])
    half = radcliq.radgraph_combined([unrelated], [reference])
    # one of the two entities, no relation: entity F1 2/3
    one = radcliq.radgraph_combined([_annotation([pleural])], [reference])
    assert same[0] == 1.0 and half[0] == 0.5 and one[0] == pytest.approx((2 / 3 + 0) / 2)
    assert radcliq.radgraph_combined([{}], [{}])[0] == 0.0  # two empty reports: nothing to agree on


def test_each_metric_names_the_weights_it_loads_and_a_radgraph_archive_names_its_bert(tmp_path):
    import io
    import tarfile

    assert mw.metric_weights(["chexbert", "sembscore"]) == [mw.CHEXBERT, mw._BERT]  # each once
    assert {w.describe() for w in mw.metric_weights(["radcliq"])} == {
        "StanfordAIMI/RRG_scorers/radgraph.tar.gz",
        "distilroberta-base",
        "StanfordAIMI/RRG_scorers/chexbert.pth",
        "bert-base-uncased",
    }
    config = {
        "dataset_reader": {"token_indexers": {"bert": {"model_name": "org/bert-a"}}},
        "model": {"embedder": {"token_embedders": {"bert": {"model_name": "org/bert-a"}}}},
    }
    archive = tmp_path / "radgraph.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = json.dumps(config).encode()
        info = tarfile.TarInfo("model/config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert [a.repo_id for a in mw.radgraph_encoders(archive)] == ["org/bert-a"]


def test_a_radgraph_archive_is_unpacked_only_inside_its_folder(tmp_path, monkeypatch):
    import io
    import tarfile

    from medlens.errors import MetricNotComputed
    from medlens.evaluate.radeval_compat import vendored_radgraph

    cache = tmp_path / "radgraph-cache"
    monkeypatch.setattr(vendored_radgraph(), "CACHE_DIR", str(cache))
    archives = {}
    for name, entries in {
        "good": {"config.json": b"{}", "vocabulary/labels.txt": b"O"},
        "escaping": {"config.json": b"{}", "../../escaped.txt": b"written outside"},
    }.items():
        archives[name] = tmp_path / f"{name}.tar.gz"
        with tarfile.open(archives[name], "w:gz") as tar:
            for entry, data in entries.items():
                info = tarfile.TarInfo(entry)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    fetched = []
    monkeypatch.setattr(mw, "fetch_artefact", lambda a, offline: fetched.append(a.filename) or archives[kind])

    kind = "escaping"
    with pytest.raises(MetricNotComputed, match=r"escaping\.tar\.gz: the RadGraph archive holds an entry"):
        mw.unpack_radgraph("radgraph")
    assert not (tmp_path / "escaped.txt").exists() and not any(cache.iterdir())  # nothing, not even a half

    archives["damaged"] = tmp_path / "damaged.tar.gz"
    archives["damaged"].write_bytes(archives["good"].read_bytes()[:40])
    kind = "damaged"
    with pytest.raises(MetricNotComputed, match=r"damaged\.tar\.gz: the RadGraph archive is damaged"):
        mw.unpack_radgraph("radgraph")
    assert not any(cache.iterdir())

    kind = "good"
    mw.unpack_radgraph("radgraph-xl")
    assert (cache / "radgraph-xl" / "vocabulary" / "labels.txt").read_text() == "O"
    mw.unpack_radgraph("radgraph-xl")  # there already: RadGraph's folder is left as it is
    assert fetched == ["radgraph.tar.gz", "radgraph.tar.gz", "radgraph-xl.tar.gz"]
    assert sorted(os.listdir(cache)) == ["radgraph-xl"]


PARAMS = {"report_metrics": list(rm.REPORT_METRICS), "bootstrap_samples": 50, "seed": 0}


def test_without_weights_every_metric_is_reported_not_computed_with_the_command_that_fetches_them(
    empty_caches,
):
    rows = [
        ("a", "chest_xray", "report", "Small left pleural effusion.", "No effusion."),
        ("k", "knee_xray", "from_labels", "Kellgren-Lawrence grade 2.", "Grade 2."),
    ]
    generations, pairs = write_generations(empty_caches, rows)
    out, scores = empty_caches / "report_metrics.json", empty_caches / "scores.csv"
    result = rm.score_generations_file(generations, pairs, PARAMS, out, scores, experiment="mimic")
    assert json.loads(out.read_text())["metrics"] == result["metrics"]
    assert result["n"] == 1 and result["scope"] == "the 1 chest radiograph reports of 2 generations"
    assert list(result["metrics"]) == list(rm.REPORT_METRICS)  # none left out
    chexbert = result["metrics"]["chexbert"]
    assert "StanfordAIMI/RRG_scorers/chexbert.pth" in chexbert["not_computed"]
    assert "bert-base-uncased" in chexbert["not_computed"]
    # the target before --forcerun, which takes any number of rule names
    assert (
        "snakemake results/mimic/prefetched_metrics.json --forcerun prefetch_metric_weights"
        in chexbert["fetch"]
    )
    assert "radgraph-xl.tar.gz" in result["metrics"]["radgraph"]["not_computed"]
    rows_shown = rm.headline_rows(result)
    assert [r["metric"] for r in rows_shown] == list(rm.REPORT_METRICS)
    assert all(r["not_computed"] and r["fetch"] for r in rows_shown)
    assert scores.read_text().splitlines() == ["id", "a"]  # the chest report, no scores


def test_a_set_without_chest_reports_gets_the_reason_instead_of_chest_metrics(empty_caches):
    rows = [("q", "chest_xray", "vqa", "yes", "no"), ("s", "dermatology", "from_labels", "nevus", "nevus")]
    generations, pairs = write_generations(empty_caches, rows)
    result = rm.score_generations_file(
        generations, pairs, PARAMS, empty_caches / "m.json", empty_caches / "s.csv"
    )
    assert result["n"] == 0
    for metric in result["metrics"].values():
        assert "no chest radiograph reports" in metric["not_computed"]


def test_a_package_that_cannot_run_here_is_reported_with_its_import_error(monkeypatch):
    """A metric whose package fails to import (as RaTEScore's did on Python 3.11 before the lock overrode
    medspacy's spacy < 3.8, built for numpy 1) says so, rather than failing the job or vanishing."""
    real_module = rm.radeval_module

    def failing(name):
        if name.startswith("radeval.metrics.RaTEScore"):
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")
        return real_module(name)

    monkeypatch.setattr(rm, "missing_weights", lambda name: [])
    monkeypatch.setattr(rm, "radeval_module", failing)
    results, scores = rm.score_reports(["a report"], ["b report"], ["ratescore"], n_resamples=10)
    reason = results["ratescore"]["not_computed"]
    assert "cannot be imported" in reason and "numpy.dtype size changed" in reason
    assert reason.startswith("its package cannot be imported here") and scores == {}


def test_bertscore_collapses_runs_of_spaces_as_cxr_report_metric_does(monkeypatch):
    """CXR-Report-Metric's add_bertscore_col scores re.sub(r' +', ' ', report) on both sides (newlines kept)."""
    import torch

    seen = {}

    class Scorer:
        def __init__(self, **kwargs):
            pass

        def score(self, cands, refs, **kwargs):
            seen.update(cands=cands, refs=refs)
            return None, None, torch.zeros(len(cands))

    monkeypatch.setattr(rm, "radeval_module", lambda name: type("M", (), {"BERTScorer": Scorer}))
    rm._bertscore(["No  effusion.\nClear   lungs."], ["Mild   edema.  "], "cpu")
    assert seen == {"cands": ["Mild edema. "], "refs": ["No effusion.\nClear lungs."]}


# ------------------------------------------------------------------ fetched, then scored offline
REFERENCES = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Heart size is normal. The lungs are clear.",
    "Stable mild cardiomegaly.",
]
GENERATED = [
    "No acute cardiopulmonary process.",  # the same report
    "Moderate right pleural effusion.",
    "Mild cardiomegaly with pulmonary edema.",
    "",  # a decoder that ended at once
]


def test_the_metrics_score_with_weights_fetched_from_a_hub_and_loaded_offline(tmp_path):
    """Tiny random stand-ins of the published weights, served by a stand-in hub under their real names: the
    prefetch fetches each (and the BERT a RadGraph archive names), then the scoring job runs with the hub
    offline and gone, through each package's own loading and scoring code."""
    from helpers.metric_stand_ins import (
        save_chexbert_checkpoint,
        save_radgraph_archive,
        save_tiny_bert,
        save_tiny_roberta,
    )

    bert = save_tiny_bert(tmp_path / "repos" / "bert")
    roberta = save_tiny_roberta(tmp_path / "repos" / "roberta")
    scorers = tmp_path / "repos" / "RRG_scorers"
    save_chexbert_checkpoint(scorers / "chexbert.pth", bert, head_bias=10.0)  # every finding positive
    for model_type in ("radgraph-xl", "radgraph"):
        save_radgraph_archive(
            scorers / f"{model_type}.tar.gz",
            "medlens-test/tiny-biomedbert",
            model_type,
            bert_folder=bert,
            ner_bias=10.0,  # every candidate span an entity: identical reports agree exactly
        )
    repos = {
        "bert-base-uncased": bert,
        "distilroberta-base": roberta,
        "StanfordAIMI/RRG_scorers": scorers,
        "medlens-test/tiny-biomedbert": bert,
    }
    names = ["bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore"]
    caches, fetched = prefetch_from_stand_in_hub(tmp_path, repos, names)
    records = {(r["repo_id"], r["key"]): r for r in fetched}
    assert "missing" not in records[("medlens-test/tiny-biomedbert", "evaluate.report_metrics")]
    assert "missing" in records[("Angelakeke/RaTE-NER-Deberta", "evaluate.report_metrics")]  # not served

    rows = [
        (f"r{i}", "chest_xray", "report", r, g)
        for i, (r, g) in enumerate(zip(REFERENCES, GENERATED, strict=True))
    ]
    generations, pairs = write_generations(tmp_path, rows)
    score = (
        "import sys, json; from medlens.evaluate.report_metrics import score_generations_file;"
        "score_generations_file(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5],"
        " experiment='tiny')"
    )
    params = {"report_metrics": names, "bootstrap_samples": 50, "seed": 0}
    out, scores = tmp_path / "report_metrics.json", tmp_path / "scores.csv"
    run_python(
        score,
        {**caches, "HF_HUB_OFFLINE": "1"},
        str(generations),
        str(pairs),
        json.dumps(params),
        str(out),
        str(scores),
    )
    metrics = json.loads(out.read_text())["metrics"]
    assert [n for n, m in metrics.items() if "not_computed" in m] == ["ratescore"]
    assert "Angelakeke/RaTE-NER-Deberta" in metrics["ratescore"]["not_computed"]
    per_report = {r["id"]: r for r in csv.DictReader(scores.open())}
    same = per_report["r0"]
    # the same report: BERTScore (baseline-rescaled), SembScore and every RadGraph reward are exactly 1
    for column in ("bertscore", "sembscore", "radgraph_simple", "radgraph_partial", "radgraph_complete"):
        assert float(same[column]) == pytest.approx(1.0, abs=1e-5), column
        assert all(float(per_report[i][column]) <= float(same[column]) + 1e-6 for i in per_report)
    bertscore = metrics["bertscore"]["f1"]
    assert bertscore["ci_low"] <= bertscore["mean"] <= bertscore["ci_high"] and bertscore["n"] == 4
    # every finding positive in every report: CheXbert F1 through the clinical-efficacy path is 1
    assert metrics["chexbert"]["chexpert14"]["micro"]["f1"] == pytest.approx(1.0)
    assert "chexbert.pth" in metrics["chexbert"]["labeler_info"]["checkpoint"]
    radcliq = metrics["radcliq"]
    assert set(radcliq["features"]) == {"radgraph", "bertscore", "sembscore", "bleu2"}
    assert radcliq["protocol"]["lower_is_better"] and float(same["radcliq_v1"]) == min(
        float(r["radcliq_v1"]) for r in per_report.values()
    )
    empty = per_report["r3"]  # an empty generation is scored (RadGraph 0), neither dropped nor a crash
    assert float(empty["radgraph_partial"]) == 0.0 and np.isfinite(float(empty["radcliq_v1"]))
    assert metrics["radcliq"]["v1"]["n"] == metrics["radgraph"]["partial"]["n"] == len(REFERENCES)
    shown = {r["metric"]: r for r in rm.headline_rows({"metrics": metrics})}
    assert (
        shown["CheXbert F1, 5, macro (observations present)"]["value"] is not None
        and "RaTEScore" not in shown
    )
    assert shown["CheXbert F1, 5, macro (all 5, as radeval)"]["value"] is not None


def test_ratescore_scores_with_weights_fetched_from_a_hub_and_keeps_each_score_with_its_report(tmp_path):
    """RaTE's NER model and BioLORD stand-ins fetched under their real names, then RaTEScore's own scorer
    offline. The NER tags every token an entity: the same report scores exactly 1, and an empty generation
    (which the package drops from its sentence list) scores 0.5, without moving the scores after it. Runs
    on every Python the lock installs (overrides.txt: spacy 3.8 on 3.11 too)."""
    from helpers.metric_stand_ins import save_tiny_bert, save_tiny_rate_ner

    bert = save_tiny_bert(tmp_path / "repos" / "bert")
    repos = {
        "Angelakeke/RaTE-NER-Deberta": save_tiny_rate_ner(tmp_path / "repos" / "rate", bert),
        "FremyCompany/BioLORD-2023-C": bert,
    }
    caches, _ = prefetch_from_stand_in_hub(tmp_path, repos, ["ratescore"])
    # the empty generation first: a misaligned list would shift every later score
    refs, hyps = REFERENCES[::-1], GENERATED[::-1]
    score = (
        "import sys, json; from medlens.evaluate.report_metrics import score_reports;"
        "results, per_report = score_reports(json.loads(sys.argv[1]), json.loads(sys.argv[2]), ['ratescore'],"
        " n_resamples=50, device='cpu');"
        "print(json.dumps({'results': results, 'scores': per_report['ratescore'].tolist()}))"
    )
    out = run_python(score, {**caches, "HF_HUB_OFFLINE": "1"}, json.dumps(refs), json.dumps(hyps))
    got = json.loads(out.stdout.splitlines()[-1])
    scores = got["scores"]
    assert len(scores) == 4 and scores[0] == rm.RATESCORE_NO_ENTITIES
    assert scores[3] == pytest.approx(1.0)  # the same report
    # cosine similarities in float32: 1 + 7e-8 on one CPU, 1 - 2e-8 on another
    assert all(0.0 <= s <= 1.0 + 1e-6 for s in scores), scores
    result = got["results"]["ratescore"]["score"]
    assert result["mean"] == pytest.approx(np.mean(scores)) and result["n"] == 4
    assert result["ci_low"] <= result["mean"] <= result["ci_high"]


def test_a_report_ratescore_splits_into_no_sentence_scores_without_entities(monkeypatch):
    """Without the package's models: a report without sentences, which RaTEScore's scorer
    would leave out of its list and so pair later reports with the wrong scores, scores 0.5 without
    reaching the scorer."""

    class DroppingScorer:
        def __init__(self, use_gpu):
            assert use_gpu is False

        def compute_score(self, candidate_list, reference_list):
            assert all(candidate_list) and all(reference_list)
            pairs = zip(candidate_list, reference_list, strict=True)
            return [1.0 if c == r else 0.25 for c, r in pairs], [], []

    class Module:
        RaTEScore = DroppingScorer

        @staticmethod
        def sentence_split(texts):  # the package's: sentences, and where each report starts
            return [t for t in texts if t], [1 for t in texts if t]

    monkeypatch.setattr(rm, "radeval_module", lambda name: Module)
    scores = rm._ratescore(["a b c", "d e f", "g h i"], ["", "d e f", "x y z"], "cpu")
    assert scores.tolist() == [rm.RATESCORE_NO_ENTITIES, 1.0, 0.25]


def test_radeval_is_imported_without_its_nltk_download():
    """``import radeval`` asks nltk to download punkt_tab, which reaches GitHub even when the data is there:
    a compute node without internet must not wait on it. A fresh interpreter records every call."""
    record = (
        "import nltk, sys; calls = []; nltk.download = lambda *a, **k: calls.append(a);"
        "exec(sys.argv[1]); print(len(calls))"
    )
    plain = run_python(record, {}, "import radeval.metrics.bleu.bleu")
    assert plain.stdout.split()[-1] == "1"  # radeval's own import downloads
    ours = run_python(
        record,
        {},
        "from medlens.evaluate.radeval_compat import radeval_module, vendored_radgraph;"
        "radeval_module('radeval.metrics.bleu.bleu'); vendored_radgraph()",
    )
    assert ours.stdout.split()[-1] == "0"
