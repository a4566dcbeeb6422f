"""train_decoder: train the report generator into results/{experiment}/decoder/."""

from medlens.config import DecoderConfig, from_dict
from medlens.launch import launch
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
launch(snakemake.resources.gpu)  # N > 1 GPUs: this script again as N processes (torchrun)
# imported once the job's GPUs are chosen: importing bitsandbytes starts CUDA
from medlens.train.decoder import train_decoder  # noqa: E402

cfg = from_dict(DecoderConfig, snakemake.params.decoder, prefix="decoder")
train_decoder(cfg, snakemake.input.chat, snakemake.output.decoder, encoder_dir=snakemake.input.get("encoder"))
