"""prefetch_metric_weights: fetch the weights of the report-generation metrics into their caches."""

import os

# this job goes online (the scoring job does not), unless the user ran the whole workflow offline
os.environ["HF_HUB_OFFLINE"] = "1" if snakemake.params.offline else "0"

from medlens.evaluate.metric_weights import prefetch_metrics  # noqa: E402
from medlens.log import setup_logging  # noqa: E402

setup_logging(snakemake.log[0])
prefetch_metrics(snakemake.params.metrics, snakemake.output.record, offline=snakemake.params.offline)
