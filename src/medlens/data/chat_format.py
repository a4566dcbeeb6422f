"""``convert_to_chat_format``: write the chat folder, one conversation per row, in two layouts.

``chat/`` holds, per split (``train``, ``val``, ``test``):

* ``{split}.jsonl``: LLaMA-Factory's sharegpt layout (and what medlens's own loaders read): string
  content with a literal ``<image>`` per image, the whole conversation in ``messages``::

    {"id": "a/r3", "dataset": "a", "images": ["images/3f2a....png"], "labels": [...],
     "messages": [{"role": "user", "content": "<image>Describe this medical image:"},
                  {"role": "assistant", "content": "<report>"}]}

  ``dataset_info.json`` registers these files (``medlens_train``...), so the folder is a LLaMA-Factory
  ``dataset_dir``.
* ``{split}.trl.jsonl``: TRL's conversational prompt-completion vision layout, which the Hugging Face chat
  templates take as they are: typed content, one ``{"type": "image"}`` part per entry of ``images``, the
  assistant turn apart in ``completion`` so that a trainer can leave the prompt out of the loss (TRL's
  SFTTrainer does so by default for this layout)::

    {"id": "a/r3", "dataset": "a", "images": ["images/3f2a....png"], "labels": [...],
     "prompt": [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "Describe this medical image:"}]}],
     "completion": [{"role": "assistant", "content": [{"type": "text", "text": "<report>"}]}]}

  There is no ``messages`` column here: TRL takes a record as either ``messages`` or
  ``prompt``/``completion``, never both.

Images are content-addressed (SHA-1 of the stored bytes), so a SLAKE image asked about in twenty questions
is written once. Their paths are relative to the chat folder, which keeps the folder relocatable; the folder
is the root in every tool: LLaMA-Factory joins them to its ``media_dir`` (the ``dataset_dir`` by default),
:func:`read_chat` returns them absolute, and ``README.md`` (a dataset card whose ``configs`` name the files)
says so. Outside medlens, with ``datasets`` and TRL::

    from datasets import load_dataset
    root = "results/demo/data/chat"
    data = load_dataset(root, "trl")  # the card's config: train/val/test of {split}.trl.jsonl
    data = data.map(lambda r: {"images": [f"{root}/{p}" for p in r["images"]]})
    trainer = SFTTrainer(model=model, processing_class=processor, args=SFTConfig(...),
                         train_dataset=data["train"], eval_dataset=data["val"])

Processors load image paths themselves (transformers' ``fetch_images``); ``cast_column("images",
List(Image()))`` decodes them up front instead. A relative path resolves only against the working
directory there, hence the ``map``. Checked with TRL 1.16: its prompt-completion vision collator runs the
completion through the processor alone, which Mllama's prefixes with ``<|begin_of_text|>`` (and its
``cross_attention_mask`` then misses the completion) and PaliGemma's refuses without images; for those two
hand TRL the whole conversation, ``data.map(lambda r: {"messages": r["prompt"] + r["completion"]},
remove_columns=["prompt", "completion"])`` (loss then on the prompt too, as TRL does for ``messages``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from medlens import layout
from medlens.config import ChatConfig
from medlens.data.schema import IMAGE_TOKEN, SPLITS
from medlens.errors import DataError
from medlens.io import atomic_dir

__all__ = [
    "convert_to_chat",
    "iter_chat",
    "read_chat",
    "report_prompt",
    "IMAGE_TOKEN",
    "build_messages",
    "prompt_completion",
    "TRL_SUFFIX",
]

logger = logging.getLogger(__name__)

TRL_SUFFIX = ".trl.jsonl"  # {split}.trl.jsonl: the prompt-completion layout
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


def prompt_completion(messages: list[dict[str, str]], n_images: int) -> dict[str, list[dict[str, Any]]]:
    """A sharegpt conversation as TRL's prompt-completion pair with typed content.

    Every ``<image>`` in a turn becomes one ``{"type": "image"}`` part ahead of its text (where the
    sharegpt turns put it); the completion is the last assistant turn, the prompt everything before it.

    Raises:
        DataError: when the ``<image>`` marks do not match ``n_images`` or no assistant turn ends the talk.
    """
    marks = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if marks != n_images or not messages or messages[-1]["role"] != "assistant":
        raise DataError(
            f"{marks} image marks for {n_images} images, last role "
            f"{messages[-1]['role'] if messages else None!r}",
            column="messages",
            expected="one <image> per image and an assistant turn last",
        )
    typed = [
        {
            "role": m["role"],
            "content": [{"type": "image"} for _ in range(m["content"].count(IMAGE_TOKEN))]
            + [{"type": "text", "text": m["content"].replace(IMAGE_TOKEN, "")}],
        }
        for m in messages
    ]
    return {"prompt": typed[:-1], "completion": typed[-1:]}


def _dataset_info() -> dict[str, Any]:
    """LLaMA-Factory's registration of the sharegpt files (its data/README.md schema)."""
    return {
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


def _card(counts: Counter[str]) -> str:
    """The folder's dataset card: its ``configs`` let ``datasets.load_dataset(folder, name)`` find the files
    of each split (only splits with rows: ``datasets`` refuses an empty one)."""
    configs = [
        {
            "config_name": name,
            **({"default": True} if name == "trl" else {}),
            "data_files": [{"split": s, "path": f"{s}{suffix}"} for s in SPLITS if counts[s]],
        }
        for name, suffix in (("trl", TRL_SUFFIX), ("sharegpt", ".jsonl"))
    ]
    return (
        f"---\n{yaml.safe_dump({'configs': configs}, sort_keys=False)}---\n\n"
        "# medlens chat files\n\n"
        "Image paths in `images` are relative to this folder: join them to its path before training "
        "outside it.\n\n"
        f"- `trl`: `{{split}}{TRL_SUFFIX}`, TRL's conversational prompt-completion vision layout "
        "(typed content, one image part per image).\n"
        "- `sharegpt`: `{split}.jsonl`, LLaMA-Factory's sharegpt layout (`<image>` marks), "
        "registered in `dataset_info.json`.\n"
    )


def convert_to_chat(
    pairs_path: str | os.PathLike, cfg: ChatConfig, out_dir: str | os.PathLike
) -> dict[str, int]:
    """Write both layouts of every split, the referenced images and the two registries into ``out_dir``.

    Args:
        pairs_path: ``results/{experiment}/data/pairs.parquet``.
        cfg: prompt and optional system turn.
        out_dir: ``results/{experiment}/data/chat``, built atomically.

    Returns:
        Conversations written per split.
    """
    counts: Counter[str] = Counter()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        with contextlib.ExitStack() as stack:
            files = {
                (s, suffix): stack.enter_context(open(tmp / f"{s}{suffix}", "w", encoding="utf-8"))
                for s in SPLITS
                for suffix in (".jsonl", TRL_SUFFIX)
            }
            pf = pq.ParquetFile(pairs_path)
            for i in range(pf.num_row_groups):
                for row in pf.read_row_group(i, columns=_COLUMNS).to_pylist():
                    image = row["image"]
                    name = f"images/{hashlib.sha1(image).hexdigest()[:20]}{_image_ext(image)}"
                    target = tmp / name
                    if not target.exists():
                        target.write_bytes(image)
                    try:
                        messages = build_messages(
                            row["text"], row["text_source"], json.loads(row["meta"]), cfg
                        )
                        typed = prompt_completion(messages, 1)
                    except DataError as e:
                        raise DataError(
                            e.problem,
                            file=str(pairs_path),
                            row=row["id"],
                            column=e.column,
                            expected=e.expected,
                        ) from e
                    about = {"id": row["id"], "dataset": row["dataset"]}
                    tail = {"images": [name], "labels": row["labels"]}
                    for suffix, talk in ((".jsonl", {"messages": messages}), (TRL_SUFFIX, typed)):
                        line = json.dumps({**about, **talk, **tail}, ensure_ascii=False)
                        files[row["split"], suffix].write(line + "\n")
                    counts[row["split"]] += 1
        (tmp / "dataset_info.json").write_text(json.dumps(_dataset_info(), indent=2) + "\n")
        (tmp / "README.md").write_text(_card(counts))
    logger.info("chat conversations per split: %s", dict(counts))
    return {s: counts.get(s, 0) for s in SPLITS}


def read_chat(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load one chat JSONL of either layout, image paths made absolute (checked to exist): :func:`iter_chat`
    as a list."""
    return list(iter_chat(path))


def iter_chat(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of one chat JSONL of either layout, one at a time, image paths made absolute (checked to
    exist).

    A ``{split}.jsonl`` record keeps its ``messages``; a ``{split}.trl.jsonl`` record its ``prompt`` and
    ``completion`` (ready for TRL without a ``map``, wherever the process runs).

    Raises:
        DataError: naming the file and line of a malformed record or a missing image.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                images = rec["images"]
                turns = rec["messages"] if "messages" in rec else [*rec["prompt"], *rec["completion"]]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(
                    f"malformed conversation ({e})",
                    file=str(path),
                    row=n,
                    expected="a JSON object with 'images' and 'messages' (or 'prompt' and 'completion')",
                ) from e
            # absolute (links kept, unlike resolve()), so the records work from any working directory
            resolved = [path.absolute().parent / p for p in images]
            for p in resolved:
                if not p.is_file():
                    raise DataError(
                        f"image '{p}' not found",
                        file=str(path),
                        row=n,
                        column="images",
                        expected="paths relative to the JSONL file",
                    )
            roles = [m["role"] for m in turns]
            if "assistant" not in roles or "user" not in roles:
                raise DataError(
                    f"roles {roles} lack a user or assistant turn",
                    file=str(path),
                    row=n,
                    column="messages" if "messages" in rec else "prompt",
                    expected="a user turn and an assistant turn",
                )
            yield {**rec, "images": [str(p) for p in resolved]}


def report_prompt(chat_dir: str | os.PathLike) -> str | None:
    """The user turn of the report rows of ``chat_dir/train.jsonl`` (the experiment's ``chat.prompt``), image mark
    removed; VQA rows carry their own questions, so a row counts only when ``pairs.parquet`` (beside the chat
    folder) says its text is not a VQA answer. None when the files are not there or hold no report row."""
    chat_dir = Path(chat_dir)
    chat = chat_dir / "train.jsonl"
    pairs = layout.in_experiment(layout.experiment_of(chat_dir, layout.CHAT), layout.PAIRS)
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
