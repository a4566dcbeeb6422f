"""Time of each report-generation metric per 1,000 reports, on this machine's CPU.

The published weights cannot be downloaded here (no internet beyond package registries), so the
benchmark scores with random weights of the published architectures, which cost the same compute:
BERT-base (CheXbert, SembScore, the BERT of RadGraph), distilroberta-base (BERTScore, 6 layers), and
RadGraph's DyGIE heads on a BERT-base, DeBERTa-v3-base with a token-classification head (RaTE-NER) and a
BERT-base for BioLORD (an MPNet-base: the same size). They are the tests' stand-ins at full size, served under their real
names by the tests' stand-in hub, fetched by ``prefetch_metrics`` and scored with the hub offline, as the
``score_reports`` job does. Random weights find a different number of RadGraph entities than trained ones,
so its relation step may cost more or less on real reports; the same holds for the entities RaTEScore
embeds.

The reports are the 110 clinical texts of ``../shared/realdata`` (each paired with the next as the
"generated" report), repeated to the sizes asked for. Each metric is timed alone on two sizes (default 50
and 250 reports), in a fresh process: the difference gives the time per report, the rest the start-up
(imports and loading the model); per 1,000 reports is 1,000 x the time per report + the start-up.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_report_metrics.py [--sizes 50 250]``; results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' stand-ins of the published weights, at full size
REALDATA = REPO.parent / "shared" / "realdata" / "manifest.csv"
METRICS = ["bertscore", "chexbert", "sembscore", "radgraph", "radcliq", "ratescore"]

SCORE = """
import json, sys, time
t0 = time.perf_counter()
from medlens.evaluate.report_metrics import score_reports
refs, hyps = json.loads(open(sys.argv[1]).read())
results, _ = score_reports(refs, hyps, [sys.argv[2]], n_resamples=10, device="cpu")
assert "not_computed" not in results[sys.argv[2]], results
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def stand_ins(root: Path) -> dict[str, Path]:
    """Full-size random stand-ins of every artefact the metrics load, by Hub repository. Their tokenizers
    know every word of the benchmark's reports (a word is one token, as most report words are in the real
    vocabularies; a rarer medical word is two or three there, so the times are a little low)."""
    import re

    from helpers.metric_stand_ins import (
        BASE,
        save_chexbert_checkpoint,
        save_radgraph_archive,
        save_tiny_bert,
        save_tiny_rate_ner,
        save_tiny_roberta,
    )

    texts = reports(110)[0]
    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower())})
    bert = save_tiny_bert(root / "bert", words, **BASE, num_hidden_layers=12, vocab_size=30522)
    roberta = save_tiny_roberta(root / "roberta", corpus=texts, bpe_size=20000, **BASE, vocab_size=50265)
    scorers = root / "RRG_scorers"
    save_chexbert_checkpoint(scorers / "chexbert.pth", bert)
    for model_type in ("radgraph-xl", "radgraph"):
        save_radgraph_archive(
            scorers / f"{model_type}.tar.gz", "bench/biomedbert-base", model_type, bert_folder=bert
        )
    deberta_v3_base = {  # microsoft/deberta-v3-base, which RaTE-NER fine-tunes (its own vocabulary: 128,100)
        "model_type": "deberta-v2",
        **BASE,
        "num_hidden_layers": 12,
        "vocab_size": 128100,
        "relative_attention": True,
        "position_buckets": 256,
        "max_relative_positions": -1,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "type_vocab_size": 0,
    }
    rate_ner = save_tiny_rate_ner(root / "rate_ner", bert, label=None, config=deberta_v3_base)
    return {
        "Angelakeke/RaTE-NER-Deberta": rate_ner,
        "FremyCompany/BioLORD-2023-C": bert,
        "bert-base-uncased": bert,
        "distilroberta-base": roberta,
        "StanfordAIMI/RRG_scorers": scorers,
        "bench/biomedbert-base": bert,
    }


def reports(n: int) -> tuple[list[str], list[str]]:
    with open(REALDATA, newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    refs = [texts[i % len(texts)] for i in range(n)]
    return refs, [texts[(i + 1) % len(texts)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50, 250])
    parser.add_argument("--metrics", nargs="+", default=METRICS)
    args = parser.parse_args()
    from helpers.stand_in_hub import StandInHub

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        caches = {"HF_HOME": str(root / "hf"), "XDG_CACHE_HOME": str(root / "xdg")}
        repos = stand_ins(root / "repos")
        fetch = "import sys, json; from medlens.evaluate.metric_weights import prefetch_metrics; prefetch_metrics(json.loads(sys.argv[1]), sys.argv[2])"
        with StandInHub(repos) as hub:
            env = {**os.environ, **caches, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
            subprocess.run(
                [sys.executable, "-c", fetch, json.dumps(args.metrics), str(root / "p.json")],
                env=env,
                check=True,
            )
        env = {**os.environ, **caches, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU; "
            f"{time.strftime('%Y-%m-%d')}"
        )
        print(
            f"| metric | {args.sizes[0]} reports s | {args.sizes[1]} reports s | start-up s | per 1,000 reports s |"
        )
        print("|---|---:|---:|---:|---:|")
        for name in args.metrics:
            seconds = []
            for n in args.sizes:
                data = root / f"reports_{n}.json"
                data.write_text(json.dumps(reports(n)))
                out = subprocess.run(
                    [sys.executable, "-c", SCORE, str(data), name], env=env, capture_output=True, text=True
                )
                if out.returncode:
                    raise SystemExit(f"{name}: {out.stderr[-3000:]}")
                seconds.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            per_report = (seconds[1] - seconds[0]) / (args.sizes[1] - args.sizes[0])
            startup = seconds[0] - per_report * args.sizes[0]
            print(
                f"| {name} | {seconds[0]:.1f} | {seconds[1]:.1f} | {startup:.1f} | {startup + 1000 * per_report:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
