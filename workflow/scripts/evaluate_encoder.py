"""evaluate_encoder: zero-shot AUC, retrieval recall@K and linear probes of the trained encoder."""

from medlens.config import EvalConfig, from_dict
from medlens.devices import claim_gpus
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
claim_gpus(snakemake.resources.gpu)  # this job's GPU only
# imported once the job's GPUs are chosen: importing bitsandbytes starts CUDA
from medlens.evaluate.encoder import evaluate_encoder  # noqa: E402

cfg = from_dict(EvalConfig, snakemake.params.evaluate, prefix="evaluate")
evaluate_encoder(
    cfg,
    snakemake.input.pairs,
    snakemake.input.encoder,
    external=list(snakemake.input.external),
    probes=list(snakemake.input.probes),
    out_json=snakemake.output.metrics,
    out_per_label=snakemake.output.per_label,
    out_roc=snakemake.output.roc,
    out_scores=snakemake.output.scores,
    out_classes=snakemake.output.classes,
    out_probe_scores=snakemake.output.probe_scores,
)
