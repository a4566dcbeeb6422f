"""train_vlm on tiny random PaliGemma and Mllama models: label mask token by token, LoRA and QLoRA steps, resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.pairs import write_pairs
from helpers.vlm import save_tiny_mllama, save_tiny_paligemma
from medlens import cli
from medlens.config import ChatConfig, DecoderConfig, QuantizationConfig, TrainerConfig
from medlens.data.chat_format import convert_to_chat, read_chat
from medlens.errors import ConfigError
from medlens.models.generator import load_generator
from medlens.models.vlm import PromptFormat, load_processor
from medlens.train.vlm import VLMCollator, VLMDataset, augment_image, split_conversation, train_vlm

PROMPT = "Describe this medical image:"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # models this small gain nothing from a second thread, and on a shared machine a starved one stalls every op
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    convert_to_chat(write_pairs(root / "pairs.parquet", n=40), ChatConfig(prompt=PROMPT), root / "chat")
    return root / "chat"


@pytest.fixture(scope="module")
def bases(chat, tmp_path_factory):
    corpus = [split_conversation(r)[1] for r in read_chat(chat / "train.jsonl")] + [PROMPT]
    root = tmp_path_factory.mktemp("bases")
    return {
        "paligemma": save_tiny_paligemma(root / "paligemma", corpus),
        "mllama": save_tiny_mllama(root / "mllama", corpus),
    }


def vlm_config(model, **trainer) -> DecoderConfig:
    args = {
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 12,
        "warmup_steps": 0,
        "lr_scheduler_type": "constant",
        "logging_steps": 3,
        "eval_steps": 100,
        "save_steps": 100,
        "dataloader_num_workers": 0,
        **trainer,
    }
    return DecoderConfig(kind="vlm", model=str(model), max_length=64, trainer=TrainerConfig(**args))


def items(chat, n=3):
    return [VLMDataset(read_chat(chat / "train.jsonl"))[i] for i in range(n)]


def expected_labels(input_ids, attention_mask, n_prompt, image_token_id):
    """The rule written out per position: -100 on prompt, image and padding tokens, the token itself elsewhere."""
    out = []
    for pos, (tok, real) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
        out.append(-100 if pos < n_prompt or not real or tok == image_token_id else tok)
    return out


def test_paligemma_collator_matches_the_processor_suffix_encoding_token_by_token(chat, bases):
    proc = load_processor(bases["paligemma"])
    fmt = PromptFormat(proc)
    assert not fmt.chat and fmt.end_of_turn == "<eos>"
    batch_items = items(chat)
    batch = VLMCollator(fmt, 64)(batch_items)
    for row, item in enumerate(batch_items):
        ref = proc(
            text=["<image>" + PROMPT], images=[item["images"]], suffix=[item["target"]], return_tensors="pt"
        )
        n = ref["input_ids"].shape[1]
        assert batch["input_ids"][row, :n].tolist() == ref["input_ids"][0].tolist()
        assert batch["token_type_ids"][row, :n].tolist() == ref["token_type_ids"][0].tolist()
        assert batch["labels"][row, :n].tolist() == ref["labels"][0].tolist()
        n_prompt = int((ref["token_type_ids"][0] == 0).sum())
        assert batch["labels"][row].tolist() == expected_labels(
            batch["input_ids"][row], batch["attention_mask"][row], n_prompt, proc.image_token_id
        )
        assert int((batch["input_ids"][row] == proc.image_token_id).sum()) == 16
        answer = [t for t in batch["labels"][row].tolist() if t != -100]
        assert proc.tokenizer.decode(answer) == item["target"] + "<eos>"


def test_mllama_collator_matches_the_chat_template_token_by_token(chat, bases):
    proc = load_processor(bases["mllama"])
    fmt = PromptFormat(proc)
    assert fmt.chat and fmt.end_of_turn == "<|eot_id|>"
    batch_items = items(chat)
    batch = VLMCollator(fmt, 64)(batch_items)
    for row, item in enumerate(batch_items):
        messages = fmt.chat_messages(item["messages"], 1)
        prompt = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = proc.apply_chat_template(
            [*messages, {"role": "assistant", "content": [{"type": "text", "text": item["target"]}]}],
            tokenize=False,
        )
        ref = proc(text=[full], images=[item["images"]], return_tensors="pt", add_special_tokens=False)
        n = ref["input_ids"].shape[1]
        n_prompt = len(proc.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == ref["input_ids"][0].tolist()
        assert torch.equal(batch["cross_attention_mask"][row, :n], ref["cross_attention_mask"][0])
        assert batch["labels"][row].tolist() == expected_labels(
            batch["input_ids"][row], batch["attention_mask"][row], n_prompt, proc.image_token_id
        )
        answer = [t for t in batch["labels"][row].tolist() if t != -100]
        assert proc.tokenizer.decode(answer) == item["target"] + "<|eot_id|>"
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_max_length_cuts_the_answer_never_the_image_tokens(chat, bases):
    fmt = PromptFormat(load_processor(bases["paligemma"]))
    item = items(chat, 1)[0]
    n_prompt = fmt.prompt_inputs(item["images"], item["messages"])["input_ids"].shape[1]
    row = VLMCollator(fmt, n_prompt + 3).example(item)
    assert row["input_ids"].shape[1] == n_prompt + 3
    assert int((row["input_ids"] == fmt.image_token_id).sum()) == 16
    assert (row["labels"] != -100).sum() == 3
    with pytest.raises(
        ConfigError, match=r"decoder\.max_length: the prompt alone is \d+ tokens \(16 of them image"
    ):
        VLMCollator(fmt, n_prompt).example(item)


def test_flip_is_laterality_aware():
    image = Image.new("RGB", (8, 8))
    image.putpixel((0, 0), (255, 255, 255))
    flipped, text = augment_image(
        image, "Right pleural effusion. The left lung is clear.", replace(DecoderConfig().augment, hflip=1.0)
    )
    assert flipped.getpixel((7, 0)) == (255, 255, 255)
    assert text == "Left pleural effusion. The right lung is clear."


def batch_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("family", ["paligemma", "mllama"])
def test_lora_steps_lower_the_loss_and_the_output_generates_text(
    family, chat, bases, tmp_path, monkeypatch, capsys
):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    cfg = vlm_config(bases[family])
    summary = train_vlm(cfg, chat, tmp_path / "decoder")
    assert summary["global_step"] == 12 and 0 < summary["trainable_parameters"] < 20_000
    out = tmp_path / "decoder"
    info = json.loads((out / "medlens.json").read_text())
    assert (
        info["kind"] == "vlm"
        and info["weights"] == "adapter"
        and (out / "adapter_model.safetensors").is_file()
    )
    assert not (out.parent / "decoder.ckpt").exists()
    from transformers import GenerationConfig

    stock, fmt = GenerationConfig.from_pretrained(out), PromptFormat(load_processor(out))
    assert stock.max_new_tokens == cfg.generation.max_new_tokens and not stock.do_sample
    assert set(fmt.stop_token_ids) <= set(stock.eos_token_id)  # a stock generate() stops at the turn's end
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # medlens's card over the one PEFT writes
    assert (card.data.library_name, card.data.pipeline_tag) == ("peft", "image-text-to-text")
    assert "lora" in card.data.tags and card.data.base_model is None  # a local base is no Hub id
    assert "PeftModel.from_pretrained" in card.text and "not a medical device" in card.text

    batch = VLMCollator(PromptFormat(load_processor(out)), 64)(items(chat, 4))
    base = AutoModelForImageTextToText.from_pretrained(bases[family])
    before = batch_loss(base, batch)
    after = batch_loss(PeftModel.from_pretrained(base, str(out)), batch)
    assert after < before - 0.5, (before, after)
    with open(out / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]]
    assert len(losses) == 4 and losses[-1] < losses[0]

    images = [r["images"][0] for r in read_chat(chat / "test.jsonl")[:3]]
    generator = load_generator(out)
    texts = generator.generate(images, ["<image>" + PROMPT] * 3)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)

    # the out-of-distribution statistics of its training images, in the VLM's own space: a photograph-like
    # colour image is far from the radiographs it was trained on, its test images are not
    from medlens.models.ood import OOD_WARN_AT, load_ood

    scorer = load_ood(out)
    far = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    near = scorer.score(generator.encode_images(images).float().numpy())
    assert scorer.score(generator.encode_images([far]).float().numpy())[0] > max(OOD_WARN_AT, near.max())
    far.save(tmp_path / "photo.png")
    monkeypatch.setattr(cli, "_setup_logging", lambda verbose: None)  # pytest owns logging here
    argv = ["generate", "--model", str(out), str(tmp_path / "photo.png"), "--max-new-tokens", "2"]
    # the test data has no prepared-dataset record to say how its images were prepared
    status = cli.main([*argv, "--modality", "chest_xray", "--store-size", "64"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "photo.png lies far outside the images this model was trained on" in err

    # copied anywhere, the adapter loads and generates with transformers and PEFT in a process without medlens
    copy = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(out, copy)
    code = f"""
import json, sys
from PIL import Image
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained({str(bases[family])!r}), {str(copy)!r})
processor = AutoProcessor.from_pretrained({str(copy)!r})
turn = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": {PROMPT!r}}}]}}]
text = processor.apply_chat_template(turn, add_generation_prompt=True) if processor.chat_template else {PROMPT!r}
inputs = processor(images=Image.open({images[0]!r}).convert("RGB"), text=text, return_tensors="pt")
ids = model.eval().generate(**inputs, max_new_tokens=4, do_sample=False)
print(json.dumps({{"new": ids.shape[1] - inputs["input_ids"].shape[1],
                  "medlens": [m for m in sys.modules if m.split(".")[0] == "medlens"]}}))
"""
    env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"new": 4, "medlens": []} or (0 < result["new"] <= 4 and result["medlens"] == [])


def test_resume_continues_the_step_count(chat, bases, tmp_path, monkeypatch):
    cfg = vlm_config(bases["paligemma"], max_steps=6, save_steps=2, eval_steps=2, logging_steps=1)
    calls = {"n": 0}
    real_call = VLMCollator.__call__

    def preempted(self, batch):
        calls["n"] += 1
        if (
            calls["n"] == 7
        ):  # after checkpoint-2 and a logged step 3: rows past the checkpoint must not repeat
            raise KeyboardInterrupt("preempted")
        return real_call(self, batch)

    monkeypatch.setattr(VLMCollator, "__call__", preempted)
    with pytest.raises(KeyboardInterrupt):
        train_vlm(cfg, chat, tmp_path / "decoder")
    ckpt = tmp_path / "decoder.ckpt"
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (tmp_path / "decoder").exists()

    monkeypatch.setattr(VLMCollator, "__call__", real_call)
    summary = train_vlm(cfg, chat, tmp_path / "decoder")
    assert summary["global_step"] == 6
    with open(tmp_path / "decoder" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]]
    assert steps == [1, 2, 3, 4, 5, 6]  # rows from before the interruption kept, none repeated


def test_qlora_4bit_on_cpu_trains_and_merges(chat, bases, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from medlens.models.vlm import load_vlm

    q = QuantizationConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype="float16",
    )  # the seed's fp16 becomes float32 on CPU
    cfg = replace(
        vlm_config(bases["paligemma"], gradient_checkpointing=True), quantization=q, merge_adapters=True
    )
    quantized = load_vlm(cfg, training=True)
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules())
    assert n4 > 10 and quantized.is_loaded_in_4bit
    # the 32-wide vision layers stay unquantised (unquantised_modules): the evaluation below runs
    # bitsandbytes' inference path, which on an AVX512-BF16 CPU cannot repack them
    assert all(
        m.in_features % 64 == 0 and m.out_features % 32 == 0
        for m in quantized.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )

    train_vlm(cfg, chat, tmp_path / "decoder")
    out = tmp_path / "decoder"
    assert json.loads((out / "medlens.json").read_text())["weights"] == "merged"
    batch = VLMCollator(PromptFormat(load_processor(out)), 64)(items(chat, 4))
    base = AutoModelForImageTextToText.from_pretrained(bases["paligemma"])
    before = batch_loss(base, batch)
    merged = AutoModelForImageTextToText.from_pretrained(out)
    with_adapter = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(bases["paligemma"]), str(out / "adapter")
    )
    assert batch_loss(merged, batch) < before - 0.3
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**batch).logits, with_adapter.eval()(**batch).logits, atol=1e-4, rtol=1e-4
        )
    assert load_generator(out).generate([read_chat(chat / "test.jsonl")[0]["images"][0]], [PROMPT])[0]


def test_conflicting_vlm_settings_fail_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"decoder\.model: kind 'vlm' needs a model"):
        DecoderConfig(kind="vlm")
    with pytest.raises(ConfigError, match=r"decoder\.quantization: load_in_4bit and load_in_8bit"):
        QuantizationConfig(load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(
        ConfigError, match=r"decoder\.finetune: quantised weights cannot be fine-tuned in full"
    ):
        DecoderConfig(
            kind="vlm", model="m", finetune="full", quantization=QuantizationConfig(load_in_4bit=True)
        )
    with pytest.raises(ConfigError, match=r"decoder\.merge_adapters"):
        DecoderConfig(kind="vlm", model="m", finetune="full", merge_adapters=True)


def test_unloadable_model_names_the_config_key(chat, tmp_path):
    with pytest.raises(ConfigError, match=r"decoder\.model: processor of '.*missing' cannot be loaded"):
        train_vlm(vlm_config(tmp_path / "missing"), chat, tmp_path / "decoder")


def test_a_planted_adapter_pickle_in_a_vlm_checkpoint_is_refused_not_run(chat, bases, tmp_path, monkeypatch):
    # the Trainer reloads a LoRA checkpoint's adapter through PEFT, which reads adapter_model.bin (where there
    # is no adapter_model.safetensors) with torch.load(weights_only=True)
    from medlens.errors import MedlensError

    ran = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    cfg = vlm_config(bases["paligemma"], max_steps=6, save_steps=2, eval_steps=2, logging_steps=1)
    real_call, calls = VLMCollator.__call__, {"n": 0}

    def preempted(self, batch):
        calls["n"] += 1
        if calls["n"] == 7:  # after checkpoint-2 (the collator also batches the evaluation)
            raise KeyboardInterrupt("preempted")
        return real_call(self, batch)

    monkeypatch.setattr(VLMCollator, "__call__", preempted)
    with pytest.raises(KeyboardInterrupt):
        train_vlm(cfg, chat, tmp_path / "decoder")
    monkeypatch.setattr(VLMCollator, "__call__", real_call)
    checkpoint = tmp_path / "decoder.ckpt" / "checkpoint-2"
    (checkpoint / "adapter_model.safetensors").unlink()
    torch.save({"base_model.model.x": Planted()}, checkpoint / "adapter_model.bin")
    with pytest.raises(
        MedlensError, match=r"decoder\.ckpt: a resume checkpoint holds something other than tensors"
    ):
        train_vlm(cfg, chat, tmp_path / "decoder")
    assert not ran.exists() and not (tmp_path / "decoder").exists()
