"""split: merge the experiment's prepared datasets into pairs.parquet with patient-level stratified splits."""

from medlens.config import SplitConfig, from_dict
from medlens.data.split import split_pairs
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
cfg = from_dict(SplitConfig, snakemake.params.split, prefix="split")
split_pairs(
    list(snakemake.input.prepared),
    cfg,
    out_pairs=snakemake.output.pairs,
    out_dropped=snakemake.output.dropped,
    out_stats=snakemake.output.stats,
)
