"""convert_to_chat_format: conversations load back, images resolve, VQA rows become VQA turns."""

from __future__ import annotations

import json

import pytest

from helpers.prepared import png
from medlens.config import ChatConfig, SplitConfig
from medlens.data.chat_format import IMAGE_TOKEN, convert_to_chat, read_chat
from medlens.data.split import split_pairs
from medlens.errors import DataError


@pytest.fixture
def pairs(make_prepared, tmp_path):
    rows = [
        {"id": f"r{i}", "patient": f"p{i}", "labels": ["No Finding"], "text": f"Report number {i}."}
        for i in range(30)
    ]
    shared = png(200)
    rows += [
        {
            "id": f"q{i}",
            "patient": "slake1",
            "image": shared,
            "text_source": "vqa",
            "text": f"Q{i}? A{i}",
            "meta": {"question": f"What is shown {i}?", "answer": f"Answer {i}"},
        }
        for i in range(3)
    ]
    path = make_prepared("a", rows)
    out = tmp_path / "pairs.parquet"
    split_pairs([path], SplitConfig(), out, tmp_path / "d.csv", tmp_path / "s.json")
    return out


def test_every_row_becomes_one_conversation_that_loads_back(pairs, tmp_path):
    counts = convert_to_chat(pairs, ChatConfig(prompt="Describe this medical image:"), tmp_path / "chat")
    loaded = {s: read_chat(tmp_path / "chat" / f"{s}.jsonl") for s in counts}
    assert {s: len(v) for s, v in loaded.items()} == counts and sum(counts.values()) == 33
    report = next(r for v in loaded.values() for r in v if r["id"] == "a/r3")
    assert report["messages"] == [
        {"role": "user", "content": IMAGE_TOKEN + "Describe this medical image:"},
        {"role": "assistant", "content": "Report number 3."},
    ]
    assert report["images"][0].endswith(".png")
    with open(report["images"][0], "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_vqa_rows_ask_their_question_and_share_one_image_file(pairs, tmp_path):
    convert_to_chat(pairs, ChatConfig(), tmp_path / "chat")
    vqa = [
        r
        for s in ("train", "val", "test")
        for r in read_chat(tmp_path / "chat" / f"{s}.jsonl")
        if r["id"].startswith("a/q")
    ]
    assert len(vqa) == 3
    assert {r["messages"][0]["content"] for r in vqa} == {
        IMAGE_TOKEN + f"What is shown {i}?" for i in range(3)
    }
    assert len({r["images"][0] for r in vqa}) == 1


def test_image_paths_are_relative_to_the_file_and_system_turn_is_optional(pairs, tmp_path):
    convert_to_chat(pairs, ChatConfig(system="You are a radiologist."), tmp_path / "chat")
    line = json.loads((tmp_path / "chat" / "train.jsonl").read_text().splitlines()[0])
    assert line["images"][0].startswith("images/")
    assert line["messages"][0] == {"role": "system", "content": "You are a radiologist."}
    info = json.loads((tmp_path / "chat" / "dataset_info.json").read_text())
    assert info["medlens_train"]["formatting"] == "sharegpt"


def test_a_missing_image_is_reported_with_file_and_line(pairs, tmp_path):
    convert_to_chat(pairs, ChatConfig(), tmp_path / "chat")
    path = tmp_path / "chat" / "train.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    (path.parent / first["images"][0]).unlink()
    with pytest.raises(DataError, match=r"train\.jsonl: row 1 column 'images': image .* not found"):
        read_chat(path)
