"""convert_to_chat_format: conversations load back, images resolve from anywhere, VQA rows become VQA turns,
and both layouts pass the schema checks of the tools that read them (TRL, LLaMA-Factory)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers.chat_formats import check_llamafactory_info, check_trl_files
from helpers.prepared import png
from medlens.config import ChatConfig, SplitConfig
from medlens.data.chat_format import IMAGE_TOKEN, convert_to_chat, prompt_completion, read_chat
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


def test_the_trl_files_hold_the_same_talk_as_typed_prompt_and_completion(pairs, tmp_path):
    cfg = ChatConfig(system="You are a radiologist.")
    counts = convert_to_chat(pairs, cfg, tmp_path / "chat")
    assert check_trl_files(tmp_path / "chat") == sum(counts.values()) == 33
    rec = next(r for r in read_chat(tmp_path / "chat" / "train.trl.jsonl") if r["id"].startswith("a/q"))
    question = rec["prompt"][1]["content"][1]["text"]
    assert rec["prompt"] == [
        {"role": "system", "content": [{"type": "text", "text": "You are a radiologist."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
    ]
    assert question.startswith("What is shown ")
    assert rec["completion"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Answer " + question[-2]}]}
    ]


def test_dataset_info_registers_files_and_columns_that_llamafactory_reads(pairs, tmp_path):
    counts = convert_to_chat(pairs, ChatConfig(system="You are a radiologist."), tmp_path / "chat")
    assert check_llamafactory_info(tmp_path / "chat") == sum(counts.values())


def test_the_format_checks_catch_a_missing_image_part_and_a_wrong_column(pairs, tmp_path):
    chat = tmp_path / "chat"
    convert_to_chat(pairs, ChatConfig(), chat)
    trl = chat / "val.trl.jsonl"
    rec = json.loads(trl.read_text().splitlines()[0])
    rec["prompt"][0]["content"] = rec["prompt"][0]["content"][1:]
    trl.write_text(json.dumps(rec) + "\n" + "\n".join(trl.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(AssertionError):
        check_trl_files(chat)
    info = json.loads((chat / "dataset_info.json").read_text())
    info["medlens_test"]["columns"]["images"] = "image"
    (chat / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(AssertionError):
        check_llamafactory_info(chat)


def test_image_paths_resolve_from_another_directory_and_after_the_folder_moves(pairs, tmp_path, monkeypatch):
    convert_to_chat(pairs, ChatConfig(), tmp_path / "chat")
    moved = shutil.move(tmp_path / "chat", tmp_path / "elsewhere" / "chat")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for name in ("test.jsonl", "test.trl.jsonl"):
        images = [p for r in read_chat(os.path.relpath(moved / name)) for p in r["images"]]
        assert images and all(os.path.isabs(p) and os.path.isfile(p) for p in images)


def test_image_marks_that_do_not_match_the_images_are_refused():
    talk = [
        {"role": "user", "content": "<image>What is <image> here?"},
        {"role": "assistant", "content": "A."},
    ]
    with pytest.raises(DataError, match="2 image marks for 1 images"):
        prompt_completion(talk, 1)
    assert prompt_completion(talk, 2)["prompt"][0]["content"][:2] == [{"type": "image"}] * 2
