"""GREEN, the opt-in metric: hand-checked scores of written analyses, the not-computed path, a stand-in model
fetched from a stand-in hub and scored offline, and a model that needs its own code refused unrun."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.generations import prefetch_from_stand_in_hub, run_python, write_generations
from medlens.config import EvalConfig
from medlens.errors import MetricNotComputed
from medlens.evaluate import report_metrics as rm
from medlens.evaluate.green import GREEN_MODEL, green_score_of_analysis, green_scores

# GREEN's answer format (its paper's Figure 1 and the package's prompt): the parser reads the counts of
# clinically significant errors (a)-(f) and the number of matched findings; insignificant errors do not count
ANALYSIS = """[Explanation]:
The candidate reports the cardiomegaly but misses the left pleural effusion and calls the edema severe.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 1. Left pleural effusion.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 1. Severe instead of mild pulmonary edema.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 2. Old rib fracture; calcified granuloma.

[Matched Findings]:
2. Cardiomegaly; pulmonary edema.
"""


def test_an_analysis_scores_matched_findings_over_matched_plus_significant_errors():
    assert green_score_of_analysis(ANALYSIS) == pytest.approx(2 / (2 + 2))  # insignificant errors ignored
    clean = ANALYSIS.split("[Clinically Significant Errors]")[0] + (
        "[Clinically Significant Errors]:\nNo clinically significant errors.\n\n[Matched Findings]:\n3. All.\n"
    )
    assert green_score_of_analysis(clean) == 1.0
    assert green_score_of_analysis(ANALYSIS.replace("2. Cardiomegaly", "0. None")) == 0.0  # nothing matched
    assert green_score_of_analysis("not an analysis at all") == 0.0


def test_green_is_opt_in_and_without_its_model_is_reported_not_computed(empty_caches):
    assert "green" not in EvalConfig().report_metrics and "green" not in rm.REPORT_METRICS
    generations, pairs = write_generations(
        empty_caches, [("a", "chest_xray", "report", "Small left pleural effusion.", "No effusion.")]
    )
    params = {"report_metrics": ["green"], "bootstrap_samples": 50, "seed": 0}
    result = rm.score_generations_file(
        generations, pairs, params, empty_caches / "m.json", empty_caches / "s.csv", experiment="mimic"
    )
    green = result["metrics"]["green"]
    assert GREEN_MODEL in green["not_computed"] and "prefetch_metric_weights" in green["fetch"]
    assert [r["metric"] for r in rm.headline_rows(result)] == ["green"]


def test_green_scores_with_its_model_fetched_from_a_hub_and_loaded_offline(tmp_path):
    from helpers.metric_stand_ins import save_tiny_llama

    # the stand-in ends every answer at once: no finding matched, each report scores 0
    model = save_tiny_llama(tmp_path / "repos" / "green")
    caches, records = prefetch_from_stand_in_hub(tmp_path, {GREEN_MODEL: model}, ["green"])
    assert not any("missing" in r for r in records)

    rows = [
        ("r0", "chest_xray", "report", "Small left pleural effusion.", "Small left pleural effusion."),
        ("r1", "chest_xray", "report", "Mild cardiomegaly.", "No acute cardiopulmonary process."),
    ]
    generations, pairs = write_generations(tmp_path, rows)
    score = (
        "import sys, json; from medlens.evaluate.report_metrics import score_generations_file;"
        "score_generations_file(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5])"
    )
    params = {"report_metrics": ["green"], "bootstrap_samples": 50, "seed": 0}
    out, scores = tmp_path / "report_metrics.json", tmp_path / "scores.csv"
    args = (str(generations), str(pairs), json.dumps(params), str(out), str(scores))
    run_python(score, {**caches, "HF_HUB_OFFLINE": "1"}, *args)
    green = json.loads(out.read_text())["metrics"]["green"]
    assert green["score"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 2}
    assert green["mean_counts"]["Matched Findings"] == 0.0 and len(green["mean_counts"]) == 7
    assert "without code from the Hub" in green["protocol"]["source"]
    assert [float(r["green"]) for r in csv.DictReader(scores.open())] == [0.0, 0.0]
    assert [r["metric"] for r in rm.headline_rows({"metrics": {"green": green}})] == ["GREEN"]


def test_a_model_that_needs_its_own_code_is_refused_and_its_code_never_runs(tmp_path):
    from helpers.metric_stand_ins import save_tiny_llama

    model = save_tiny_llama(tmp_path / "green")
    ran = tmp_path / "the repository's code ran"
    (model / "configuration_custom.py").write_text(
        f"from pathlib import Path\nPath({str(ran)!r}).touch()\n"
        "from transformers import LlamaConfig\n\n\nclass CustomConfig(LlamaConfig):\n    model_type = 'custom'\n"
    )
    config = json.loads((model / "config.json").read_text())
    config |= {
        "model_type": "custom",
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "configuration_custom.CustomConfig",
        },
    }
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(MetricNotComputed, match="without code from the Hub"):
        green_scores(["No effusion."], ["No effusion."], model, "cpu")
    assert not ran.exists()


def test_out_of_gpu_memory_halves_the_batch_then_green_is_not_computed_and_the_rest_still_scored(monkeypatch):
    import pandas as pd
    import torch

    from medlens.evaluate import green

    class OutOfMemory:
        """Runs out of GPU memory above ``fits`` reports a batch."""

        sub_categories: list[str] = []

        def __init__(self, fits):
            self.fits, self.tried = fits, []

        def __call__(self, refs, hyps):
            self.tried.append(self.batch_size)
            if self.batch_size > self.fits:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return 0.5, 0.0, [0.5] * len(refs), pd.DataFrame({"Matched Findings": [1] * len(refs)})

    scorer = OutOfMemory(fits=2)
    monkeypatch.setattr(green, "_scorer", lambda path, device: scorer)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    scores, counts = green_scores(["No effusion."], ["No effusion."], "model", "cuda")
    assert scorer.tried == [8, 4, 2] and scores.tolist() == [0.5] and counts == {"Matched Findings": 1.0}
    scorer = OutOfMemory(fits=0)
    with pytest.raises(MetricNotComputed, match="out of GPU memory at batch size 1"):
        green_scores(["No effusion."], ["No effusion."], "model", "cuda")

    def too_big(path, device):  # 13.5 GB of 16-bit weights on a smaller GPU
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 500.00 MiB")

    monkeypatch.setattr(green, "_scorer", too_big)
    with pytest.raises(
        MetricNotComputed, match="model at model could not be loaded on cuda: OutOfMemoryError"
    ):
        green_scores(["No effusion."], ["No effusion."], "model", "cuda")

    def compute(name, *args):
        if name == "green":
            raise MetricNotComputed("GREEN failed while generating (batch size 8): CUDA out of memory")
        return {"score": {"mean": 1.0}}

    monkeypatch.setattr(rm, "missing_weights", lambda name: [])
    monkeypatch.setattr(rm, "_compute", compute)
    results, _ = rm.score_reports(["a"], ["a"], ["green", "bertscore"], device="cpu")
    assert results["green"] == {
        "not_computed": "GREEN failed while generating (batch size 8): CUDA out of memory"
    }
    assert results["bertscore"] == {"score": {"mean": 1.0}}
