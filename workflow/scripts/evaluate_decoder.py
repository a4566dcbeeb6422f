"""evaluate_decoder: generate reports for the test split and score them (BLEU, ROUGE-L, CIDEr-D, clinical F1)."""

from medlens.config import EvalConfig, from_dict
from medlens.devices import claim_gpus
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
claim_gpus(snakemake.resources.gpu)  # this job's GPU only
# imported once the job's GPUs are chosen: importing bitsandbytes starts CUDA
from medlens.evaluate.decoder import evaluate_decoder  # noqa: E402

cfg = from_dict(EvalConfig, snakemake.params.evaluate, prefix="evaluate")
evaluate_decoder(
    cfg,
    snakemake.input.chat,
    snakemake.input.decoder,
    pairs=snakemake.input.pairs,
    probes=list(snakemake.input.probes),
    out_json=snakemake.output.metrics,
    out_generations=snakemake.output.generations,
    out_per_label=snakemake.output.per_label,
    out_probe_scores=snakemake.output.probe_scores,
)
