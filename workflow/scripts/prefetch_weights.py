"""prefetch_weights: fetch every Hub artefact an experiment loads into the Hugging Face cache."""

import os

# this job goes online (the GPU jobs do not), unless the user ran the whole workflow offline
os.environ["HF_HUB_OFFLINE"] = "1" if snakemake.params.offline else "0"

from medlens.log import setup_logging  # noqa: E402
from medlens.models.prefetch import prefetch_experiment  # noqa: E402

setup_logging(snakemake.log[0])
prefetch_experiment(snakemake.params.artefacts, snakemake.output.record, offline=snakemake.params.offline)
