"""report: render results/report.html, one page per experiment, and the paper tables under results/paper/."""

from medlens.log import setup_logging
from medlens.report.render import build_report

setup_logging(snakemake.log[0])
build_report(
    snakemake.params.experiments,
    out_html=snakemake.output.html,
    out_pages=list(snakemake.output.pages),
    out_csv=snakemake.output.summary_csv,
    out_tex=snakemake.output.summary_tex,
    out_differences=snakemake.output.differences,
)
