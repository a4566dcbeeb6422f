"""evaluate_decoder's decoding: the decoder folder's generation_config.json unless evaluate.generation replaces it."""

from __future__ import annotations

import logging

from medlens.config import EvalConfig, GenerationConfig
from medlens.evaluate.decoder import _decoding
from medlens.models.generation import save_generation_config


def test_the_evaluation_decodes_with_the_folders_settings(tmp_path):
    save_generation_config(tmp_path, GenerationConfig(max_new_tokens=160, num_beams=3), eos_token_id=2)
    assert _decoding(EvalConfig(), tmp_path) == (
        GenerationConfig(max_new_tokens=160, num_beams=3),
        "the decoder folder's generation_config.json",
    )


def test_evaluate_generation_replaces_them_and_says_how_they_differ(tmp_path):
    save_generation_config(tmp_path, GenerationConfig(max_new_tokens=160), eos_token_id=2)
    tried = GenerationConfig(max_new_tokens=160, num_beams=3)
    settings, source = _decoding(EvalConfig(generation=tried), tmp_path)
    assert settings == tried and source.startswith("evaluate.generation (the folder's: ")
    assert "'num_beams': 1" in source


def test_a_folder_without_the_file_decodes_with_the_defaults_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        settings, source = _decoding(EvalConfig(), tmp_path)
    assert settings == GenerationConfig() and "no generation_config.json" in source
    assert "has no generation_config.json" in caplog.text
