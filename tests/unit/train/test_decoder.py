"""train_decoder helpers: the tokenizer fallback of seed 004 (GPT-2 when reachable, else BPE on the reports)."""

from __future__ import annotations

import logging

import pytest

from medlens.config import DecoderConfig
from medlens.errors import ConfigError
from medlens.train.decoder import load_tokenizer

REPORTS = ["The heart is enlarged.", "No pleural effusion.", "Lungs are clear."] * 4


def test_an_unreachable_hub_tokenizer_falls_back_to_bpe_on_the_reports_with_a_warning(caplog):
    cfg = DecoderConfig(tokenizer="medlens-tests/no-such-tokenizer", vocab_size=300)  # offline in tests
    with caplog.at_level(logging.WARNING, logger="medlens.train.decoder"):
        tok = load_tokenizer(cfg, REPORTS)
    assert "cannot be loaded" in caplog.text and "training a 300-token BPE" in caplog.text
    assert tok.decode(tok("Lungs are clear.", add_special_tokens=False)["input_ids"]).strip() == "Lungs are clear."


def test_a_local_tokenizer_folder_that_does_not_load_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"decoder\.tokenizer: tokenizer '.*' cannot be loaded"):
        load_tokenizer(DecoderConfig(tokenizer=str(tmp_path)), REPORTS)
