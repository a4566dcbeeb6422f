"""Tiny random PaliGemma and Mllama (Llama 3.2 Vision) models with locally trained tokenizers, saved to disk.

Shapes follow environment.md section 3, which found these configs to build, train, generate and reload
offline. The tokenizer is a byte-level BPE trained on the corpus given; the Mllama processor carries a
Llama-3-style chat template (the real one adds a date line to system turns, nothing the tests need).
"""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.bpe import byte_level_bpe

# At the default 0.02 a 64-wide model's logits stay within about +-1.3 whatever LoRA does (normed hidden state
# of norm 8 times embedding rows of norm 0.16), so the loss cannot fall far below log(vocab); 0.2 lets it.
INIT_STD = 0.2

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
    "{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|image|>' }}{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# PaliGemma checkpoints ship no chat template; this one writes what its processor and big_vision expect when
# given typed messages: every image mark first, the prefix (turns joined by newlines), then the answer and
# <eos> (the processor itself inserts <bos> after the last mark and a newline after the prefix).
PALIGEMMA_CHAT_TEMPLATE = (
    "{% for m in messages if m['role'] != 'assistant' %}{% for c in m['content'] if c['type'] == 'image' %}"
    "{{ '<image>' }}{% endfor %}{% endfor %}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] | trim }}"
    "{% endfor %}{{ eos_token }}{% else %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] | trim }}{% endfor %}{% endif %}{% endfor %}"
)


def _tokenizer(specials: list[str], corpus: list[str], bos: str, eos: str, pad: str, vocab_size: int = 400):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, specials, vocab_size),
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>",
    )


def save_tiny_paligemma(path: str | Path, corpus: list[str], seed: int = 0) -> Path:
    """A ~0.2 M-parameter PaliGemma (32 px images, 16 image tokens) and its processor, in ``path``."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], corpus, "<bos>", "<eos>", "<pad>")
    ip = SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ip.image_seq_length = (32 // 8) ** 2  # PaliGemmaProcessor requires it
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    vocab = len(proc.tokenizer)
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    text = GemmaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        initializer_range=INIT_STD,
        **ids,
    )
    cfg = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=proc.image_token_id,
        projection_dim=64,
        hidden_size=64,
        vocab_size=vocab,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(cfg)
    model.generation_config.update(**ids)
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def save_tiny_mllama(path: str | Path, corpus: list[str], seed: int = 0) -> Path:
    """A ~0.2 M-parameter Mllama (two 32 px tiles, cross-attention in layer 1) with a chat template, in ``path``."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    specials = [
        "<|finetune_right_pad_id|>",
        "<|eot_id|>",
        "<|begin_of_text|>",
        "<unk>",
        "<|image|>",
        "<|python_tag|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
    ]
    tok = _tokenizer(specials, corpus, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>")
    proc = MllamaProcessor(
        image_processor=MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=2),
        tokenizer=tok,
        chat_template=LLAMA_CHAT_TEMPLATE,
    )
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = MllamaVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=4,
        intermediate_size=64,
        intermediate_layers_indices=[0],
        vision_output_dim=64,
        image_size=32,
        patch_size=8,
        max_num_tiles=2,
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    )
    text = MllamaTextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        cross_attention_layers=[1],
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=INIT_STD,
        **ids,
    )
    cfg = MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>")
    )
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(cfg)
    model.generation_config.update(**ids)
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path
