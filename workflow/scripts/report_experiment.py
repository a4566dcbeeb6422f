"""report_experiment: render results/{experiment}/report.html for an experiment that is not in `run`."""

from medlens.log import setup_logging
from medlens.report.render import build_report

setup_logging(snakemake.log[0])
build_report(snakemake.params.experiments, out_pages=[snakemake.output.page])
