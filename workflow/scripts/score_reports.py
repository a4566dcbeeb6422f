"""score_reports: the field's report-generation metrics of the generated chest radiograph reports."""

from medlens.devices import claim_gpus
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
claim_gpus(snakemake.resources.gpu)  # this job's GPU only
# imported once the job's GPU is chosen: the metrics' models start CUDA
from medlens.evaluate.report_metrics import score_generations_file  # noqa: E402

score_generations_file(
    snakemake.input.generations,
    snakemake.input.pairs,
    snakemake.params.evaluate,
    snakemake.output.metrics,
    snakemake.output.scores,
    experiment=snakemake.wildcards.experiment,
)
