"""``convert_to_chat_format``: write ``chat/{train,val,test}.jsonl`` and the images they reference.

Each line is one conversation in the ``messages``/``images`` layout read by LLaMA-Factory's
sharegpt format (and by medlens's own VLM loader)::

    {"id": "...", "messages": [{"role": "user", "content": "<image>Describe this medical image:"},
                               {"role": "assistant", "content": "<report>"}],
     "images": ["images/3f2a....png"], "labels": [...], "dataset": "..."}

Image paths are relative to the JSONL file. Images are content-addressed (SHA-1 of the stored
bytes), so a SLAKE image asked about in twenty questions is written once. A ``dataset_info.json``
next to the files lets LLaMA-Factory use the folder directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medlens.config import ChatConfig
from medlens.data.schema import SPLITS
from medlens.errors import DataError
from medlens.io import atomic_dir

__all__ = ["convert_to_chat", "read_chat", "report_prompt", "IMAGE_TOKEN", "build_messages"]

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"  # LLaMA-Factory's image placeholder
_COLUMNS = ["id", "dataset", "image", "text", "text_source", "labels", "meta", "split"]


def _image_ext(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def build_messages(
    text: str, text_source: str, meta: dict[str, Any], cfg: ChatConfig
) -> list[dict[str, str]]:
    """The conversation for one row: a VQA turn for ``vqa`` rows, else the configured prompt and the text."""
    if text_source == "vqa":
        if "question" not in meta or "answer" not in meta:
            raise DataError(
                "vqa row without meta.question/meta.answer",
                column="meta",
                expected="the question and answer of the VQA pair",
            )
        user, assistant = meta["question"], meta["answer"]
    else:
        user, assistant = cfg.prompt, text
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    return [
        *messages,
        {"role": "user", "content": IMAGE_TOKEN + user},
        {"role": "assistant", "content": assistant},
    ]


def convert_to_chat(
    pairs_path: str | os.PathLike, cfg: ChatConfig, out_dir: str | os.PathLike
) -> dict[str, int]:
    """Write one JSONL per split plus the referenced images into ``out_dir`` (atomically).

    Args:
        pairs_path: ``results/{experiment}/data/pairs.parquet``.
        cfg: prompt and optional system turn.
        out_dir: ``results/{experiment}/data/chat``.

    Returns:
        Conversations written per split.
    """
    counts: Counter[str] = Counter()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        with contextlib.ExitStack() as stack:
            files = {s: stack.enter_context(open(tmp / f"{s}.jsonl", "w", encoding="utf-8")) for s in SPLITS}
            pf = pq.ParquetFile(pairs_path)
            for i in range(pf.num_row_groups):
                for row in pf.read_row_group(i, columns=_COLUMNS).to_pylist():
                    image = row["image"]
                    name = f"images/{hashlib.sha1(image).hexdigest()[:20]}{_image_ext(image)}"
                    target = tmp / name
                    if not target.exists():
                        target.write_bytes(image)
                    meta = json.loads(row["meta"])
                    record = {
                        "id": row["id"],
                        "dataset": row["dataset"],
                        "messages": build_messages(row["text"], row["text_source"], meta, cfg),
                        "images": [name],
                        "labels": row["labels"],
                    }
                    files[row["split"]].write(json.dumps(record, ensure_ascii=False) + "\n")
                    counts[row["split"]] += 1
        info = {
            f"medlens_{s}": {
                "file_name": f"{s}.jsonl",
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                    "system_tag": "system",
                },
            }
            for s in SPLITS
        }
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("chat conversations per split: %s", dict(counts))
    return {s: counts.get(s, 0) for s in SPLITS}


def read_chat(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load one chat JSONL with image paths resolved to absolute paths (checked to exist).

    Raises:
        DataError: naming the file and line of a malformed record or a missing image.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                messages, images = rec["messages"], rec["images"]
            except (json.JSONDecodeError, KeyError) as e:
                raise DataError(
                    f"malformed conversation ({e})",
                    file=str(path),
                    row=n,
                    expected="a JSON object with 'messages' and 'images'",
                ) from e
            resolved = [path.parent / p for p in images]
            for p in resolved:
                if not p.is_file():
                    raise DataError(
                        f"image '{p}' not found",
                        file=str(path),
                        row=n,
                        column="images",
                        expected="paths relative to the JSONL file",
                    )
            roles = [m["role"] for m in messages]
            if "assistant" not in roles or "user" not in roles:
                raise DataError(
                    f"roles {roles} lack a user or assistant turn",
                    file=str(path),
                    row=n,
                    column="messages",
                    expected="a user turn and an assistant turn",
                )
            records.append({**rec, "images": [str(p) for p in resolved]})
    return records


def report_prompt(chat_dir: str | os.PathLike) -> str | None:
    """The user turn of the report rows of ``chat_dir/train.jsonl`` (the experiment's ``chat.prompt``), image mark
    removed; VQA rows carry their own questions, so a row counts only when ``pairs.parquet`` (beside the chat
    folder) says its text is not a VQA answer. None when the files are not there or hold no report row."""
    chat_dir = Path(chat_dir)
    chat, pairs = chat_dir / "train.jsonl", chat_dir.parent / "pairs.parquet"
    if not chat.is_file() or not pairs.is_file():
        return None
    table = pq.read_table(pairs, columns=["id", "text_source"])
    report_ids = {
        i
        for i, s in zip(table["id"].to_pylist(), table["text_source"].to_pylist(), strict=True)
        if s != "vqa"
    }
    with open(chat, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("id") in report_ids:
                user = next(m["content"] for m in record["messages"] if m["role"] == "user")
                return user.replace(IMAGE_TOKEN, "")
    return None
