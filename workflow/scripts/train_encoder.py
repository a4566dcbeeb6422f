"""train_encoder: train the contrastive image-text encoder into results/{experiment}/encoder/."""

from medlens.config import EncoderConfig, ZeroShotConfig, from_dict
from medlens.log import setup_logging
from medlens.train.encoder import train_encoder

setup_logging(snakemake.log[0])
cfg = from_dict(EncoderConfig, snakemake.params.encoder, prefix="encoder")
zero_shot = from_dict(ZeroShotConfig, snakemake.params.zero_shot, prefix="evaluate.zero_shot")
train_encoder(cfg, snakemake.input.pairs, snakemake.output.encoder, zero_shot=zero_shot)
