"""The chat folder checked against the documented schemas of the tools that read it, TRL and LLaMA-Factory.

Versions read: TRL docs/source/dataset_formats.md ("Vision datasets", conversational prompt-completion) and
trl/data_utils.py (``apply_chat_template``, ``prepare_multimodal_messages``) at 1.10.0.dev0 (f2cd577);
LLaMA-Factory data/README.md and src/llamafactory/data/converter.py (sharegpt) at ff6d4d1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

SPLITS = ("train", "val", "test")
IMAGE_PART = {"type": "image"}  # TRL fills it from ``images`` in order (prepare_multimodal_messages)
# TRL's apply_chat_template takes exactly one of these key sets; "messages" beside "prompt" is refused
TRL_KEYS = {"prompt", "chosen", "rejected", "completion", "messages", "label"}
# LLaMA-Factory's dataset_info.json schema (data/README.md)
LF_ENTRY_KEYS = {
    "hf_hub_url",
    "ms_hub_url",
    "script_url",
    "cloud_file_name",
    "file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
}
LF_COLUMNS = {
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
}
LF_TAGS = {
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_turn(turn: dict[str, Any], roles: set[str], where: str) -> int:
    """One typed message; returns its image parts."""
    assert set(turn) == {"role", "content"} and turn["role"] in roles, where
    assert isinstance(turn["content"], list) and turn["content"], where
    for part in turn["content"]:
        assert part == IMAGE_PART or (set(part) == {"type", "text"} and part["type"] == "text"), where
        assert part == IMAGE_PART or isinstance(part["text"], str), where
    return sum(part == IMAGE_PART for part in turn["content"])


def check_trl_files(chat: Path) -> int:
    """Every ``{split}.trl.jsonl`` record is a conversational prompt-completion vision example, and says
    what the sharegpt record of the same line says. Returns the records checked."""
    n = 0
    for split in SPLITS:
        typed, plain = lines(chat / f"{split}.trl.jsonl"), lines(chat / f"{split}.jsonl")
        assert len(typed) == len(plain), split
        for rec, twin in zip(typed, plain, strict=True):
            where = f"{split}.trl.jsonl {rec.get('id')}"
            assert set(rec) & TRL_KEYS == {"prompt", "completion"}, where
            assert set(rec) == {"id", "dataset", "prompt", "completion", "images", "labels"}, where
            prompt, completion = rec["prompt"], rec["completion"]
            # the prompt ends on the user (TRL then adds the generation prompt); a system turn only leads
            assert [t["role"] for t in prompt] in (["user"], ["system", "user"]), where
            n_parts = sum(_check_turn(t, {"system", "user"}, where) for t in prompt)
            assert len(completion) == 1 and _check_turn(completion[0], {"assistant"}, where) == 0, where
            assert n_parts == len(rec["images"]) >= 1, where
            assert all(not os.path.isabs(p) and (chat / p).is_file() for p in rec["images"]), where
            # the same conversation as the sharegpt line, the <image> marks turned into image parts
            assert {k: rec[k] for k in ("id", "dataset", "images", "labels")} == {
                k: twin[k] for k in ("id", "dataset", "images", "labels")
            }, where
            texts = [
                " ".join(p["text"] for p in t["content"] if p != IMAGE_PART) for t in prompt + completion
            ]
            assert texts == [m["content"].replace("<image>", "") for m in twin["messages"]], where
            n += 1
    card = (chat / "README.md").read_text().split("---")[1]
    filled = {s for s in SPLITS if (chat / f"{s}.jsonl").stat().st_size}
    for config in yaml.safe_load(card)["configs"]:
        assert {f["split"] for f in config["data_files"]} == filled, config
        assert all((chat / f["path"]).stat().st_size for f in config["data_files"]), config
    return n


def check_llamafactory_info(chat: Path) -> int:
    """``dataset_info.json`` follows LLaMA-Factory's schema, names files that exist and columns and tags that
    every record has, and each record passes the sharegpt converter's checks. Returns the records checked."""
    info = json.loads((chat / "dataset_info.json").read_text())
    assert set(info) == {f"medlens_{s}" for s in SPLITS}
    n = 0
    for name, entry in info.items():
        assert set(entry) <= LF_ENTRY_KEYS and entry["formatting"] == "sharegpt", name
        assert set(entry["columns"]) <= LF_COLUMNS and set(entry["tags"]) <= LF_TAGS, name
        tags, cols = entry["tags"], entry["columns"]
        for rec in lines(chat / entry["file_name"]):
            where = f"{entry['file_name']} {rec.get('id')}"
            assert all(c in rec for c in cols.values()), where
            turns = rec[cols["messages"]]
            assert all(set(t) == {tags["role_tag"], tags["content_tag"]} for t in turns), where
            roles = [t[tags["role_tag"]] for t in turns]
            if roles[0] == tags["system_tag"]:  # a leading system turn is taken out first
                roles = roles[1:]
            # converter.py: users at odd positions, assistants at even ones, an answer last
            assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2), where
            assert len(roles) % 2 == 0, where
            text = "".join(t[tags["content_tag"]] for t in turns)
            images = rec[cols["images"]]
            # mm_plugin: as many <image> marks as images; paths joined to media_dir (the dataset_dir)
            assert text.count("<image>") == len(images), where
            assert all(os.path.isfile(os.path.join(chat, p)) for p in images), where
            n += 1
    return n
