"""A byte-level BPE tokenizer (GPT-2's, RoBERTa's and Gemma-like stand-ins') trained offline on a few sentences."""

from __future__ import annotations


def byte_level_bpe(corpus: list[str], specials: list[str], vocab_size: int = 400):
    """A ``tokenizers.Tokenizer`` trained on ``corpus`` with ``specials`` first in its vocabulary (ids 0, 1...)
    and ``<unk>`` as its unknown token; callers wrap it in the transformers class their model loads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok
