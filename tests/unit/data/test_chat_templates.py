"""The ``{split}.trl.jsonl`` files through tiny PaliGemma and Mllama processors' chat templates, the way TRL's
SFTTrainer takes them: the prompt renders with the image token, the completion apart, and the label mask that
follows from the split is the one medlens's own collator builds from the sharegpt files."""

from __future__ import annotations

import os

import pytest
import torch

from helpers.pairs import write_pairs
from helpers.vlm import PALIGEMMA_CHAT_TEMPLATE, save_tiny_mllama, save_tiny_paligemma
from medlens.config import ChatConfig
from medlens.data.chat_format import convert_to_chat, read_chat
from medlens.models.vlm import PromptFormat, load_processor
from medlens.train.vlm import VLMCollator, VLMDataset

PROMPT = "Describe this medical image:"
SYSTEM = "You are a radiologist."


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    convert_to_chat(
        write_pairs(root / "pairs.parquet", n=12), ChatConfig(prompt=PROMPT, system=SYSTEM), root / "chat"
    )
    return root / "chat"


@pytest.fixture(scope="module", params=["paligemma", "mllama"])
def model_dir(request, chat, tmp_path_factory):
    corpus = [m["content"] for r in read_chat(chat / "train.jsonl") for m in r["messages"]]
    save = {"paligemma": save_tiny_paligemma, "mllama": save_tiny_mllama}[request.param]
    return save(tmp_path_factory.mktemp(request.param), corpus)


def templated(model_dir):
    """The model's processor with a chat template (PaliGemma's, which has none, from the helpers)."""
    processor = load_processor(model_dir)
    if processor.chat_template is None:
        processor.chat_template = PALIGEMMA_CHAT_TEMPLATE
    return processor


def trl_texts(processor, record) -> tuple[str, str]:
    """trl.data_utils.apply_chat_template for a prompt-completion record: the prompt with the generation
    prompt, the completion as what the whole conversation adds to the longest shared start."""
    prompt = processor.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    whole = processor.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    prompt = os.path.commonprefix([prompt, whole])
    return prompt, whole[len(prompt) :]


def trl_example(processor, record) -> dict[str, torch.Tensor]:
    """TRL's DataCollatorForVisionLanguageModeling for one prompt-completion record (no padding): the prompt
    through the processor with the images as the file names them, the completion tokenised alone, labels
    -100 on the prompt (completion_only_loss, the default for this layout). TRL 1.16 tokenises the completion
    with the processor, which for Mllama adds a <|begin_of_text|> and for PaliGemma fails; the tokenizer is
    what that step means."""
    prompt, completion = trl_texts(processor, record)
    row = processor(images=[record["images"]], text=[prompt], return_tensors="pt", add_special_tokens=False)
    ids = torch.tensor([processor.tokenizer(completion, add_special_tokens=False)["input_ids"]])
    return {
        "input_ids": torch.cat([row["input_ids"], ids], dim=1),
        "labels": torch.cat([torch.full_like(row["input_ids"], -100), ids], dim=1),
        "pixel_values": row["pixel_values"],
    }


def test_the_prompt_renders_the_image_token_and_the_completion_renders_apart(model_dir, chat):
    processor = templated(model_dir)
    image_mark = processor.tokenizer.convert_ids_to_tokens(processor.image_token_id)
    for rec in read_chat(chat / "train.trl.jsonl"):
        prompt, completion = trl_texts(processor, rec)
        answer = rec["completion"][0]["content"][0]["text"]
        assert prompt.count(image_mark) == len(rec["images"]) == 1
        assert SYSTEM in prompt and PROMPT in prompt and answer not in prompt
        assert completion.startswith(answer) and completion[len(answer) :] in ("<|eot_id|>", "<eos>")


def test_the_prompt_completion_split_masks_what_medlens_masks(model_dir, chat, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the image paths read_chat returns load from any working directory
    typed, plain = read_chat(chat / "train.trl.jsonl"), read_chat(chat / "train.jsonl")
    processor = templated(model_dir)
    ours = VLMCollator(PromptFormat(load_processor(model_dir)), max_length=512)
    items = VLMDataset(plain)
    for i, rec in enumerate(typed[:4]):
        trl, mine = trl_example(processor, rec), ours.example(items[i])
        assert torch.equal(trl["input_ids"], mine["input_ids"])
        assert torch.equal(trl["pixel_values"], mine["pixel_values"])
        # medlens also masks image tokens; TRL leaves them to the model, which ignores them in the loss
        image = trl["input_ids"] == processor.image_token_id
        assert torch.equal(trl["labels"].masked_fill(image, -100), mine["labels"])
        learnt = trl["labels"][trl["labels"] != -100]
        answer = rec["completion"][0]["content"][0]["text"]
        assert processor.tokenizer.decode(learnt, skip_special_tokens=True) == answer
