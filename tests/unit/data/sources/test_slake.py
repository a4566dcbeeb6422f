"""SLAKE: one VQA row per question, English by default, official split per file, VQA turns in the chat files."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from helpers.sources import slake
from helpers.sources.images import write_jpeg
from helpers.sources.run import prepare
from medlens.config import ChatConfig, SplitConfig
from medlens.data.chat_format import IMAGE_TOKEN, convert_to_chat, read_chat
from medlens.data.split import split_pairs
from medlens.errors import DataError


def run(tmp_path, **settings):
    fixture = slake.build(tmp_path / "data", mirror=settings.pop("mirror", False))
    return prepare(
        tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root), **settings}
    )


@pytest.mark.parametrize("mirror", [False, True])
def test_english_questions_are_kept_and_chinese_ones_counted_as_filtered(tmp_path, mirror):
    out = run(tmp_path, mirror=mirror)
    assert set(out.rows) == slake.ENGLISH
    assert set(out.rejected) == slake.CHINESE
    assert out.summary.reasons == {"filtered: language zh not in languages": 2}
    splits = {q: out.rows[q]["meta"]["official_split"] for q in slake.ENGLISH}
    assert splits == {"0": "train", "1": "train", "3": "train", "4": "val", "5": "test"}


def test_rows_carry_question_answer_and_the_image_as_group(tmp_path):
    out = run(tmp_path)
    for entries in slake.SPLITS.values():
        for e in entries:
            if str(e["qid"]) not in out.rows:
                continue
            row = out.rows[str(e["qid"])]
            assert row["text_source"] == "vqa"
            assert (row["meta"]["question"], row["meta"]["answer"]) == (e["question"], e["answer"])
            assert row["text"] == f"Question: {e['question']} Answer: {e['answer']}"
            assert row["patient_id"] == f"img{e['img_id']}"
            assert row["modality"] == slake.MODALITY[str(e["qid"])]
    assert out.rows["3"]["meta"]["triple"] == ["vhead", "effect", "ktail"]
    assert out.rows["3"]["meta"]["base_type"] == "kvqa"


def test_languages_setting_keeps_both(tmp_path):
    out = run(tmp_path, languages=["en", "zh"])
    assert set(out.rows) == slake.ENGLISH | slake.CHINESE and out.rejected == {}
    assert out.rows["6"]["meta"]["answer"] == "胸部"


@pytest.mark.parametrize("q_lang, languages", [("EN", ["en"]), ("en ", ["en"]), ("en", ["EN"])])
def test_language_codes_are_compared_without_case_or_spaces(tmp_path, q_lang, languages):
    # a re-saved file wrote "EN": every English question was rejected as another language
    splits = json.loads(json.dumps(slake.SPLITS))
    for entries in splits.values():
        for e in entries:
            e["q_lang"] = q_lang if e["q_lang"] == "en" else e["q_lang"]
    fixture = slake.build(tmp_path / "data", splits=splits)
    out = prepare(
        tmp_path,
        "slake",
        {"source": "path", "adapter": "slake", "path": str(fixture.root), "languages": languages},
    )
    assert set(out.rows) == slake.ENGLISH
    assert set(out.rejected) == slake.CHINESE


def test_malformed_question_record_is_a_rejected_row(tmp_path):
    splits = json.loads(json.dumps(slake.SPLITS))
    splits["train"][1]["qid"] = "1"  # a string where the format has an int
    fixture = slake.build(tmp_path / "data", splits=splits)
    out = prepare(tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root)})
    assert out.rejected["train[1]"]["reason"] == "malformed entry"
    assert out.rejected["train[1]"]["detail"] == "field 'qid' is '1'; expected int"
    assert out.rejected["train[1]"]["source_ref"].endswith("train.json:[1]")


@pytest.mark.parametrize("modality", ["PET", None, ""])
def test_a_modality_outside_ct_mri_and_x_ray_is_a_rejected_row(tmp_path, modality):
    # the audit: "PET" was kept as modality "pet" (decoded in colour), null as "none"
    splits = json.loads(json.dumps(slake.SPLITS))
    splits["train"][0]["modality"] = modality
    fixture = slake.build(tmp_path / "data", splits=splits)
    out = prepare(tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root)})
    assert (out.rejected["0"]["reason"], out.rejected["0"]["detail"]) == (
        "unknown modality",
        f"{modality!r}; expected CT, MRI or X-Ray",
    )
    assert set(out.rows) == slake.ENGLISH - {"0"}


def test_vqa_rows_become_question_answer_turns_that_load_back_without_images_crossing_splits(tmp_path):
    out = run(tmp_path)
    pairs = tmp_path / "pairs.parquet"
    split_pairs(
        [out.parquet],
        SplitConfig(train=0.6, val=0.2, test=0.2),
        pairs,
        tmp_path / "d.csv",
        tmp_path / "s.json",
    )
    chat = tmp_path / "chat"
    counts = convert_to_chat(pairs, ChatConfig(), chat)
    assert sum(counts.values()) == len(slake.ENGLISH)
    split_of_image: dict[str, set[str]] = defaultdict(set)
    questions = {}
    for split in ("train", "val", "test"):
        for rec in read_chat(chat / f"{split}.jsonl"):
            user, assistant = rec["messages"]
            assert user["role"] == "user" and assistant["role"] == "assistant"
            assert user["content"].count(IMAGE_TOKEN) == len(rec["images"]) == 1  # LLaMA-Factory checks this
            questions[user["content"].removeprefix(IMAGE_TOKEN)] = assistant["content"]
            split_of_image[rec["images"][0]].add(split)
    assert questions == {
        e["question"]: e["answer"]
        for es in slake.SPLITS.values()
        for e in es
        if str(e["qid"]) in slake.ENGLISH
    }
    assert len(split_of_image) == 3  # three distinct images, each written once
    assert all(len(s) == 1 for s in split_of_image.values())


def test_official_split_keeps_a_shared_image_in_one_split_and_reports_the_moves(tmp_path):
    out = run(tmp_path)
    stats = split_pairs(
        [out.parquet],
        SplitConfig(official=True),
        tmp_path / "p.parquet",
        tmp_path / "d.csv",
        tmp_path / "s.json",
    )
    # image 102 is asked about in train (2 questions) and val (1): its train questions move to val
    assert stats["moved_to_keep_patients_together"] == 2
    assert stats["rows_per_split"] == {"train": 1, "val": 3, "test": 1}


def test_an_image_path_leaving_the_dataset_folder_is_a_rejected_row(tmp_path):
    # the audit: img_name "../../outside.jpg" was read from outside the folder; manifests already refused it
    splits = json.loads(json.dumps(slake.SPLITS))
    splits["train"][1]["img_name"] = "../../outside.jpg"  # imgs/ -> Slake1.0/ -> data/outside.jpg
    fixture = slake.build(tmp_path / "data", splits=splits)
    write_jpeg(fixture.root / "outside.jpg", seed=5, size=(32, 32))
    settings = {"source": "path", "adapter": "slake", "path": str(fixture.root)}
    out = prepare(tmp_path, "slake", settings)
    assert out.rejected["1"]["reason"] == "image outside the dataset folder"
    imgs = fixture.root / "Slake1.0" / "imgs"
    assert (
        out.rejected["1"]["detail"] == f"../../outside.jpg leaves {imgs} (allow_outside_paths: true reads it)"
    )
    assert set(out.rows) == slake.ENGLISH - {"1"}
    allowed = prepare(tmp_path, "slake", {**settings, "allow_outside_paths": True})
    assert "1" in allowed.rows


def test_validate_and_validation_json_that_differ_are_an_error_naming_both(tmp_path):
    # the zip's validate.json beside the mirror's validation.json: validation.json was never read, unsaid
    fixture = slake.build(tmp_path / "data")
    base = fixture.root / "Slake1.0"
    (base / "validation.json").write_text(json.dumps(slake.SPLITS["val"][:0]))
    with pytest.raises(DataError, match=r"Slake1\.0: validate\.json and validation\.json both hold the val "):
        prepare(tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root)})
    (base / "validation.json").write_bytes((base / "validate.json").read_bytes())  # the same file twice: fine
    out = prepare(tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root)})
    assert set(out.rows) == slake.ENGLISH


def test_an_img_id_that_is_not_the_img_name_folder_is_a_rejected_row(tmp_path):
    # img_id groups the splits; img_name is the image read: disagreeing, one image could sit in two splits
    splits = json.loads(json.dumps(slake.SPLITS))
    splits["test"][0]["img_id"] = 102  # its img_name is xmlab1/source.jpg
    fixture = slake.build(tmp_path / "data", splits=splits)
    out = prepare(tmp_path, "slake", {"source": "path", "adapter": "slake", "path": str(fixture.root)})
    assert (out.rejected["5"]["reason"], out.rejected["5"]["detail"]) == (
        "malformed entry",
        "img_id 102 but img_name 'xmlab1/source.jpg'; expected the same N",
    )
    assert set(out.rows) == slake.ENGLISH - {"5"}
