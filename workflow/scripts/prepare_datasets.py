"""prepare_datasets: decode, validate and store one dataset as prepared/{dataset}.parquet + rejected.csv."""

from pathlib import Path

from medlens.config import DatasetConfig, from_dict
from medlens.data.prepare import prepare_dataset
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
cfg = from_dict(
    DatasetConfig,
    snakemake.params.dataset,
    source="config/config.yaml",
    prefix=f"datasets.{snakemake.wildcards.dataset}",
)
prepare_dataset(
    cfg,
    snakemake.wildcards.dataset,
    raw_dir=Path(snakemake.input.marker).parent,
    out_parquet=snakemake.output.parquet,
    out_rejected=snakemake.output.rejected,
    workers=snakemake.threads,
)
