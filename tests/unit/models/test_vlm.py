"""VLM prompt layouts, batching and generation on tiny random models; the seed decoder presets and experiments."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from helpers.vlm import save_tiny_mllama, save_tiny_paligemma
from medlens.config import (
    DecoderConfig,
    GenerationConfig,
    from_dict,
    load_experiment,
    load_pipeline,
    resolve_preset,
)
from medlens.models.registry import list_decoder_presets
from medlens.models.vlm import PromptFormat, VLMGenerator, load_processor, pad_rows, unquantised_modules

CORPUS = [
    "The heart is enlarged. No pleural effusion.",
    "Heart size is normal. Right pleural effusion.",
    "Describe this medical image:",
    "Is there an effusion?",
] * 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # models this small gain nothing from a second thread, and on a shared machine a starved one stalls every op
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {
        "paligemma": save_tiny_paligemma(root / "paligemma", CORPUS),
        "mllama": save_tiny_mllama(root / "mllama", CORPUS),
    }


def test_pad_rows_pads_tokens_on_the_chosen_side_and_everything_else_at_the_end():
    short = {
        "input_ids": torch.tensor([[5, 6]]),
        "labels": torch.tensor([[-100, 6]]),
        "cross_attention_mask": torch.ones(1, 2, 1, 1, dtype=torch.long),
        "pixel_values": torch.ones(1, 1, 2),
    }
    long = {
        "input_ids": torch.tensor([[7, 8, 9]]),
        "labels": torch.tensor([[-100, 8, 9]]),
        "cross_attention_mask": torch.ones(1, 3, 1, 2, dtype=torch.long),
        "pixel_values": torch.ones(1, 2, 2),
    }
    right = pad_rows([short, long], pad_token_id=0, side="right")
    assert right["input_ids"].tolist() == [[5, 6, 0], [7, 8, 9]]
    assert right["labels"].tolist() == [[-100, 6, -100], [-100, 8, 9]]
    assert right["cross_attention_mask"][0, :, 0].tolist() == [[1, 0], [1, 0], [0, 0]]
    assert right["pixel_values"][0].tolist() == [[1, 1], [0, 0]]
    left = pad_rows([short, long], pad_token_id=0, side="left")
    assert left["input_ids"].tolist() == [[0, 5, 6], [7, 8, 9]]
    assert left["cross_attention_mask"][0, :, 0].tolist() == [[0, 0], [1, 0], [1, 0]]
    assert left["pixel_values"][0].tolist() == [[1, 1], [0, 0]]  # per-image tensors never pad on the left


@pytest.mark.parametrize("family", ["paligemma", "mllama"])
def test_4bit_loads_keep_layers_bitsandbytes_cannot_pack_on_every_cpu_and_the_output_head(family, bases):
    # bitsandbytes' AVX512-BF16 CPU path repacks 4-bit weights in blocks of 64 inputs x 32 outputs: a layer of
    # another shape quantised on one CPU crashes on the next, so it stays in full precision everywhere
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText

    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(bases[family]))
    linear = {
        n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    kept = unquantised_modules(bases[family], ["multi_modal_projector"])
    narrow = {n for n, (k, n_out) in linear.items() if k % 64 or n_out % 32}
    assert narrow and narrow <= set(kept)  # the tiny vision towers are 32 wide
    assert (
        "lm_head" in kept and "multi_modal_projector" in kept
    )  # transformers' default survives a configured list
    assert (set(kept) - narrow) & set(linear) <= {
        "lm_head",
        "multi_modal_projector",
    }  # no other layer is spared
    assert any(n not in kept for n in linear)  # the rest is quantised


def test_prompt_layouts(bases):
    messages = [
        {"role": "system", "content": "You are a radiologist."},
        {"role": "user", "content": "<image>Describe this medical image:"},
    ]
    pali = PromptFormat(load_processor(bases["paligemma"]))
    assert pali.prompt_text(messages, 1) == "<image>You are a radiologist.\nDescribe this medical image:"
    assert pali.stop_token_ids == [pali.tokenizer.eos_token_id]
    llama = PromptFormat(load_processor(bases["mllama"]))
    assert llama.prompt_text(messages, 1) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a radiologist.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<|image|>Describe this medical image:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert llama.stop_token_ids == [llama.tokenizer.convert_tokens_to_ids("<|eot_id|>")]


def _image(i: int) -> Image.Image:
    img = Image.new("RGB", (48, 40), 30)
    ImageDraw.Draw(img).rectangle([4 * i, 2 * i, 20 + 4 * i, 30], fill=200)
    return img


def _until_stop(ids: torch.Tensor, stops: set[int]) -> list[int]:
    out = []
    for t in ids.tolist():
        if t in stops:
            break
        out.append(t)
    return out


@pytest.mark.parametrize("family", ["paligemma", "mllama"])
def test_left_padded_batches_generate_what_single_prompts_do(family, bases):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(bases[family]).eval()
    gen = VLMGenerator(model, PromptFormat(load_processor(bases[family])))
    images = [_image(i) for i in range(3)]
    prompts = ["Describe this medical image:", "Is there an effusion?", "Describe:"]  # three prompt lengths
    greedy = GenerationConfig(max_new_tokens=8)
    stops = {*gen.fmt.stop_token_ids, gen.fmt.tokenizer.eos_token_id, gen.fmt.tokenizer.pad_token_id}
    batched = gen.generate_ids(images, prompts, greedy)
    singles = [
        _until_stop(gen.generate_ids([im], [p], greedy)[0], stops)
        for im, p in zip(images, prompts, strict=True)
    ]
    assert max(map(len, singles)) >= 3  # the random model writes something, so the comparison means something
    assert [_until_stop(row, stops) for row in batched] == singles
    texts = [gen.fmt.tokenizer.decode(s, skip_special_tokens=True).strip() for s in singles]
    assert gen.generate(images, prompts, greedy, batch_size=2) == texts


def test_every_decoder_preset_resolves_to_a_valid_config():
    assert {"tiny_captioner", "lapvqa_captioner", "paligemma_qlora", "llama32_vision_lora"} <= set(
        list_decoder_presets()
    )
    for name in list_decoder_presets():
        from_dict(DecoderConfig, resolve_preset("decoder", {"preset": name}, source=name), source=name)


def test_paligemma_and_llama_presets_carry_the_seed_numbers():
    pali = from_dict(DecoderConfig, resolve_preset("decoder", {"preset": "paligemma_qlora"}, source="p"))
    assert (pali.model, pali.kind, pali.finetune) == ("google/paligemma-3b-pt-224", "vlm", "lora")
    assert (pali.lora.r, pali.lora.lora_alpha, pali.lora.lora_dropout, pali.lora.bias) == (
        16,
        32,
        0.05,
        "none",
    )
    assert pali.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    q = pali.quantization
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        True,
        "nf4",
        True,
        "float16",
    )
    t = pali.trainer
    assert (
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        t.learning_rate,
        t.lr_scheduler_type,
        t.warmup_steps,
        t.weight_decay,
        t.max_grad_norm,
        t.num_train_epochs,
        t.optim,
    ) == (4, 8, 2e-4, "cosine", 50, 0.01, 1.0, 10, "adamw_torch_fused")
    assert (
        t.save_steps,
        t.eval_steps,
        t.save_total_limit,
        t.load_best_model_at_end,
        t.dataloader_num_workers,
        t.gradient_checkpointing,
    ) == (250, 250, 3, True, 4, True)
    assert (pali.early_stopping_patience, pali.early_stopping_threshold, pali.max_length) == (3, 0.001, 384)
    assert pali.augment.hflip == 0.0 and pali.augment.rotate_degrees == 5.0 and pali.augment.brightness == 0.1

    llama = from_dict(DecoderConfig, resolve_preset("decoder", {"preset": "llama32_vision_lora"}, source="l"))
    assert llama.model == "meta-llama/Llama-3.2-11B-Vision-Instruct" and llama.finetune == "lora"
    t = llama.trainer
    assert (
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        t.learning_rate,
        t.weight_decay,
        llama.max_length,
    ) == (1, 4, 2e-4, 0.01, 512)
    full = from_dict(
        DecoderConfig,
        resolve_preset("decoder", {"preset": "llama32_vision_lora", "finetune": "full"}, source="l"),
    )
    assert full.finetune == "full"


def test_lapvqa_preset_is_a_vit_l14_at_384_px_and_a_6_layer_512_wide_decoder():
    import open_clip
    from open_clip.model import _build_vision_tower
    from transformers import GPT2Config, GPT2LMHeadModel

    from medlens.models.captioner import vision_tokens

    cfg = from_dict(DecoderConfig, resolve_preset("decoder", {"preset": "lapvqa_captioner"}, source="x"))
    model_cfg = open_clip.get_model_config(cfg.vision_model)
    vision_cfg = {**model_cfg["vision_cfg"], "image_size": cfg.image_size}
    with torch.device("meta"):  # full size without allocating the 0.3 B weights
        tower = _build_vision_tower(model_cfg["embed_dim"], vision_cfg)
        tokens = vision_tokens(tower, torch.empty(1, 3, cfg.image_size, cfg.image_size))
        decoder = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=50257,
                n_positions=cfg.max_length,
                n_embd=cfg.hidden_size,
                n_layer=cfg.num_layers,
                n_head=cfg.num_heads,
                add_cross_attention=True,
            )
        )
    assert tuple(tokens.shape) == (1, 27 * 27 + 1, 1024)  # 384 // 14 = 27: not the 256 tokens the card shows
    assert (
        len(tower.transformer.resblocks) == 24 and 300e6 < sum(p.numel() for p in tower.parameters()) < 310e6
    )
    assert (decoder.config.n_layer, decoder.config.n_embd, cfg.tokenizer) == (6, 512, "gpt2")
    assert cfg.init_from_encoder is False and cfg.kind == "captioner"


@pytest.mark.parametrize("name", ["paligemma_qlora", "llama32_vision", "lapvqa_captioner"])
def test_seed_experiments_validate_and_name_defined_datasets(name, repo):
    exp = load_experiment(
        repo / "config" / "experiments" / f"{name}.yaml",
        schema_path=repo / "workflow" / "schemas" / "experiment.schema.yaml",
    )
    pipeline = load_pipeline(yaml.safe_load((repo / "config" / "config.yaml").read_text()))
    assert set(exp.datasets) | set(exp.evaluate.external_datasets) <= set(pipeline.datasets)
    assert name not in pipeline.run


def test_a_vlm_folder_never_runs_its_own_code_or_unpickles_its_adapter(bases, tmp_path):
    # a VLM decoder folder is PEFT adapters, a processor and medlens.json naming the base model; each can be
    # swapped by whoever hands the folder over
    import dataclasses
    import json
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medlens.errors import DataError
    from medlens.models.generation import save_generation_config
    from medlens.models.generator import load_generator

    base, ran = bases["paligemma"], tmp_path / "ran"
    folder = tmp_path / "decoder"
    lora = LoraConfig(r=2, target_modules=["q_proj"])
    get_peft_model(AutoModelForImageTextToText.from_pretrained(base), lora).save_pretrained(folder)
    processor = AutoProcessor.from_pretrained(base)
    processor.save_pretrained(folder)
    cfg = DecoderConfig(kind="vlm", model=str(base), max_length=64)
    save_generation_config(folder, cfg.generation, eos_token_id=processor.tokenizer.eos_token_id)
    info = {"kind": "vlm", "weights": "adapter", "config": dataclasses.asdict(cfg)}
    (folder / "medlens.json").write_text(json.dumps(info, default=str))

    def planted(where, name, imported):
        (where / "planted.py").write_text(
            f"open({str(ran)!r}, 'w').close()\nfrom transformers import {imported} as {name}\n"
        )

    def edit(path, **changes):
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    def variant(name):
        shutil.copytree(folder, tmp_path / name)
        return tmp_path / name

    pickled = variant("pickled-adapter")
    (pickled / "adapter_model.safetensors").unlink()

    class Planted:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"base_model.model.x": Planted()}, pickled / "adapter_model.bin")
    with pytest.raises(
        DataError, match=r"pickled-adapter: the folder holds a pickle of more than tensors"
    ) as e:
        load_generator(pickled)
    assert "trust the source" not in str(e.value)  # torch's advice to load it unsafely is not passed on

    tokenizer = variant("tokenizer-code")
    planted(tokenizer, "PlantedTokenizer", "PreTrainedTokenizerFast")
    edit(
        tokenizer / "tokenizer_config.json",
        tokenizer_class="PlantedTokenizer",
        auto_map={"AutoTokenizer": ["planted.PlantedTokenizer", None]},
    )
    with pytest.raises(DataError, match=r"tokenizer-code: the decoder cannot be loaded .*custom code"):
        load_generator(tokenizer)

    # a processor, or the base model medlens.json names, mapped to code of its own: loaded with the stock
    # transformers classes of their model type, the code never imported
    processor_code = variant("processor-code")
    planted(processor_code, "PlantedProcessor", "PaliGemmaProcessor")
    edit(processor_code / "processor_config.json", auto_map={"AutoProcessor": "planted.PlantedProcessor"})
    load_generator(processor_code)
    evil_base = tmp_path / "evil-base"
    shutil.copytree(base, evil_base)
    planted(evil_base, "PlantedModel", "PaliGemmaForConditionalGeneration")
    edit(evil_base / "config.json", auto_map={"AutoModelForImageTextToText": "planted.PlantedModel"})
    base_code = variant("base-code")
    edit(base_code / "medlens.json", config={**info["config"], "model": str(evil_base)})
    load_generator(base_code)
    assert not ran.exists()
