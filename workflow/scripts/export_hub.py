"""export_hub: a trained model folder's shareable copy, its evaluation's headline metrics in its model card."""

from medlens.inference.export import export_hub
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
export_hub(snakemake.input.model, snakemake.output[0], metrics=snakemake.input.metrics)
