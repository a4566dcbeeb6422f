"""train_encoder: train the contrastive image-text encoder into results/{experiment}/encoder/."""

from medlens.config import EncoderConfig, ZeroShotConfig, from_dict
from medlens.launch import launch
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
launch(snakemake.resources.gpu)  # N > 1 GPUs: this script again as N processes (torchrun)
# imported once the job's GPUs are chosen: importing bitsandbytes starts CUDA
from medlens.train.encoder import train_encoder  # noqa: E402

cfg = from_dict(EncoderConfig, snakemake.params.encoder, prefix="encoder")
zero_shot = from_dict(ZeroShotConfig, snakemake.params.zero_shot, prefix="evaluate.zero_shot")
train_encoder(cfg, snakemake.input.pairs, snakemake.output.encoder, zero_shot=zero_shot)
