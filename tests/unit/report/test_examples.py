"""Examples: retrieval indices resolved to the evaluated rows, generations with thumbnails, the image strip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlens.errors import DataError
from medlens.report.examples import generation_examples, image_strip, retrieval_examples


def test_retrieval_examples_resolve_to_the_test_rows(make_experiment):
    files, _ = make_experiment("r")
    enc = json.loads(Path(files["encoder_eval"]).read_text())
    got = retrieval_examples(enc, files["pairs"])
    i2t, t2i = got["image_to_text"][0], got["text_to_image"][0]
    # query 1 of the test split is the pairs' row 2 (row 0 is train); its match at rank 2 is itself
    assert i2t["id"] == "r/2" and i2t["thumbnail"].startswith("data:image/png") and i2t["rank"] == 2
    assert [m["id"] for m in i2t["matches"]] == ["r/1", "r/2", "r/3"]
    assert [m["correct"] for m in i2t["matches"]] == [False, True, False]
    assert all(m["thumbnail"] is None for m in i2t["matches"])  # image -> text lists texts
    assert t2i["thumbnail"] is None and all(m["thumbnail"] for m in t2i["matches"])


def test_retrieval_examples_that_do_not_fit_the_rows_raise(make_experiment):
    files, _ = make_experiment("r")
    enc = json.loads(Path(files["encoder_eval"]).read_text())
    enc["retrieval"]["examples"]["image_to_text"][0]["positives"] = [0]  # a row with another text
    with pytest.raises(DataError, match="do not fit"):
        retrieval_examples(enc, files["pairs"])
    enc["n"] = 99
    with pytest.raises(DataError, match="the evaluation had 99"):
        retrieval_examples(enc, files["pairs"])


def test_generations_and_strip_carry_inline_thumbnails(make_experiment):
    files, _ = make_experiment("g")
    gens = generation_examples(files["generations"], files["chat"], 2)
    assert len(gens) == 2 and all(g["thumbnail"].startswith("data:image/png;base64,") for g in gens)
    assert gens[0]["reference"] == "No pleural effusion."
    strip = image_strip(files["pairs"])
    assert [s["id"] for s in strip] == ["g/0"]  # training rows only
    assert generation_examples(Path(files["generations"]).with_name("absent.jsonl"), files["chat"], 2) == []
