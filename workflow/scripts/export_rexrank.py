"""export_rexrank: the chest reports of generations.jsonl in ReXrank's submission format."""

from medlens.evaluate.rexrank import export_rexrank
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
export_rexrank(snakemake.input.generations, snakemake.input.pairs, snakemake.output[0])
