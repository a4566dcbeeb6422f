"""evaluate_encoder: zero-shot AUC, retrieval recall@K and linear probes of the trained encoder."""

from medlens.config import EvalConfig, from_dict
from medlens.evaluate.encoder import evaluate_encoder
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
cfg = from_dict(EvalConfig, snakemake.params.evaluate, prefix="evaluate")
evaluate_encoder(cfg, snakemake.input.pairs, snakemake.input.encoder, external=list(snakemake.input.external),
                 out_json=snakemake.output.metrics, out_per_label=snakemake.output.per_label,
                 out_roc=snakemake.output.roc)
