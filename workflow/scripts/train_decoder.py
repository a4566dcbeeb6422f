"""train_decoder: train the report generator into results/{experiment}/decoder/."""

from medlens.config import DecoderConfig, from_dict
from medlens.log import setup_logging
from medlens.train.decoder import train_decoder

setup_logging(snakemake.log[0])
cfg = from_dict(DecoderConfig, snakemake.params.decoder, prefix="decoder")
train_decoder(cfg, snakemake.input.chat, snakemake.output.decoder, encoder_dir=snakemake.input.get("encoder"))
