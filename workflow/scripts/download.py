"""download: make a dataset's raw files available under results/raw/{dataset}/ and mark them complete."""

from pathlib import Path

from medlens.config import DatasetConfig, from_dict
from medlens.data.download import download_dataset
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
cfg = from_dict(
    DatasetConfig,
    snakemake.params.dataset,
    source="config/config.yaml",
    prefix=f"datasets.{snakemake.wildcards.dataset}",
)
marker = Path(snakemake.output.marker)
download_dataset(cfg, snakemake.wildcards.dataset, raw_dir=marker.parent, marker=marker)
