"""score_reports: the field's report-generation metrics of the generated chest radiograph reports."""

from medlens.evaluate.report_metrics import score_generations_file
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
score_generations_file(
    snakemake.input.generations,
    snakemake.input.pairs,
    snakemake.params.evaluate,
    snakemake.output.metrics,
    snakemake.output.scores,
    experiment=snakemake.wildcards.experiment,
)
