"""convert_to_chat_format: write chat/{train,val,test}.jsonl conversations and the images they reference."""

from medlens.config import ChatConfig, from_dict
from medlens.data.chat_format import convert_to_chat
from medlens.log import setup_logging

setup_logging(snakemake.log[0])
cfg = from_dict(ChatConfig, snakemake.params.chat, prefix="chat")
convert_to_chat(snakemake.input.pairs, cfg, out_dir=snakemake.output.chat)
