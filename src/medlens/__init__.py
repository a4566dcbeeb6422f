"""medlens: a Snakemake pipeline for medical vision-language models.

Importing the package is cheap on purpose: the Snakefile imports ``medlens.config`` while the
DAG is built, so nothing heavy (torch, transformers) may be imported here.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
