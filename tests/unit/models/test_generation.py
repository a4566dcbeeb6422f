"""generation_config.json: written in transformers' format, read back as medlens's decoding settings."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig as Stock

from medlens.config import GenerationConfig
from medlens.errors import ConfigError
from medlens.models.generation import read_generation_config, save_generation_config


def test_a_vlm_file_keeps_the_base_models_defaults_and_takes_medlens_decoding(tmp_path):
    # a base that samples, as Llama 3.2 Vision's generation_config.json does
    base = Stock(max_length=20, do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=1, bos_token_id=5)
    save_generation_config(
        tmp_path, GenerationConfig(max_new_tokens=160, num_beams=2), base=base, eos_token_id=[9, 1]
    )
    stock = Stock.from_pretrained(tmp_path)
    assert (stock.max_new_tokens, stock.num_beams, stock.do_sample) == (160, 2, False)
    assert stock.eos_token_id == [9, 1] and stock.bos_token_id == 5
    assert stock.temperature is None and stock.top_p is None  # greedy: no sampling settings left over
    assert base.eos_token_id == 1  # the model's own config is not changed
    assert read_generation_config(tmp_path) == GenerationConfig(max_new_tokens=160, num_beams=2)


def test_a_file_that_is_not_json_or_has_no_length_is_named(tmp_path):
    assert read_generation_config(tmp_path) is None
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="generation_config.json: not valid JSON"):
        read_generation_config(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"max_length": 20}')
    with pytest.raises(ConfigError, match="max_new_tokens"):
        read_generation_config(tmp_path)
