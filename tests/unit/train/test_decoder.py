"""train_decoder: the tokenizer fallback of seed 004 (GPT-2 when reachable, else BPE on the reports), and a
checkpoint on SLURM's signal that the rerun resumes from exactly."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

from helpers.pairs import write_pairs
from medlens.config import ChatConfig, DecoderConfig, TrainerConfig
from medlens.data.chat_format import convert_to_chat
from medlens.errors import ConfigError, MedlensError
from medlens.train import decoder as dec
from medlens.train.decoder import load_tokenizer
from medlens.train.signals import TrainingInterrupted

REPORTS = ["The heart is enlarged.", "No pleural effusion.", "Lungs are clear."] * 4


def test_an_unreachable_hub_tokenizer_falls_back_to_bpe_on_the_reports_with_a_warning(caplog):
    cfg = DecoderConfig(tokenizer="medlens-tests/no-such-tokenizer", vocab_size=300)  # offline in tests
    with caplog.at_level(logging.WARNING, logger="medlens.train.decoder"):
        tok = load_tokenizer(cfg, REPORTS)
    assert "cannot be loaded" in caplog.text and "training a 300-token BPE" in caplog.text
    assert (
        tok.decode(tok("Lungs are clear.", add_special_tokens=False)["input_ids"]).strip()
        == "Lungs are clear."
    )


def test_a_local_tokenizer_folder_that_does_not_load_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"decoder\.tokenizer: tokenizer '.*' cannot be loaded"):
        load_tokenizer(DecoderConfig(tokenizer=str(tmp_path)), REPORTS)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioner")
    convert_to_chat(write_pairs(root / "pairs.parquet", n=40), ChatConfig(), root / "chat")
    return root / "chat"


@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_a_signal_saves_a_checkpoint_at_that_step_and_the_rerun_ends_with_the_same_weights(
    chat, tmp_path, monkeypatch, sampling
):
    """SLURM's SIGTERM mid-run: the Trainer finishes the step, checkpoints it (between scheduled saves) and
    stops; the rerun resumes there and ends bit for bit where an uninterrupted run ends."""
    # the training transform's random crop is on: it must resume exactly too, though the loader collates one
    # batch ahead of the step
    trainer = TrainerConfig(
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=6,
        warmup_steps=1,
        logging_steps=1,
        eval_steps=100,
        save_steps=100,
        load_best_model_at_end=False,
        dataloader_num_workers=0,
        train_sampling_strategy=sampling,
    )
    cfg = DecoderConfig(
        init_from_encoder=False,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        vocab_size=300,
        max_length=32,
        image_size=32,
        trainer=trainer,
    )
    dec.train_decoder(cfg, chat, tmp_path / "full")

    real_call, calls = dec.CaptionCollator.__call__, {"n": 0}

    def signalled(self, batch):
        calls["n"] += 1
        if (
            calls["n"] == 4
        ):  # SLURM's warning arrives mid-run (accelerate's loader collates a batch ahead: step 3)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, batch)

    monkeypatch.setattr(dec.CaptionCollator, "__call__", signalled)
    with pytest.raises(TrainingInterrupted, match="signal 15 at step 3/6"):
        dec.train_decoder(cfg, chat, tmp_path / "resumed")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was only there while training
    assert [p.name for p in (tmp_path / "resumed.ckpt").glob("checkpoint-*")] == [
        "checkpoint-3"
    ]  # none scheduled
    assert not (tmp_path / "resumed").exists()

    monkeypatch.setattr(dec.CaptionCollator, "__call__", real_call)
    summary = dec.train_decoder(cfg, chat, tmp_path / "resumed")
    assert summary["global_step"] == 6
    full, resumed = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    with open(tmp_path / "resumed" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]] == [1, 2, 3, 4, 5, 6]


def test_length_grouped_batches_pad_less_come_in_random_order_and_cover_every_report_without_loading_an_image(
    tmp_path,
):
    from transformers import TrainingArguments

    n = 650  # not a whole number of batches: the one short batch must come last
    lengths = [int(k) for k in torch.randint(5, 150, (n,), generator=torch.Generator().manual_seed(0))]
    dataset = dec.CaptionDataset([{"images": ["never-read.png"]}] * n, transform=None, lengths=lengths)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        use_cpu=True,
        report_to="none",
        train_sampling_strategy="group_by_length",
    )
    trainer = dec.CaptionTrainer(
        model=torch.nn.Linear(1, 1), args=args, train_dataset=dataset, length_group_batches=4
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, dec.LengthBucketSampler)
    torch.manual_seed(0)
    order = list(sampler)
    assert sorted(order) == list(range(n))
    batches = [order[k : k + 32] for k in range(0, n, 32)]
    assert [len(b) for b in batches] == [32] * 20 + [10]
    assert sorted(batches[-1]) == sorted(set(range(n)) - set(order[:640]))

    def mean_padded(bs):  # tokens a batch pads to, per batch
        return sum(max(lengths[i] for i in b) for b in bs) / len(bs)

    assert mean_padded(batches[:20]) < 0.8 * mean_padded([list(range(k, k + 32)) for k in range(0, 640, 32)])
    # the steps do not sweep from long to short batches within a pool (the Trainer's own grouping does: 15 or more
    # of these 19 neighbours would descend)
    maxima = [max(lengths[i] for i in b) for b in batches[:20]]
    assert 4 <= sum(a > b for a, b in zip(maxima, maxima[1:], strict=False)) <= 14


def test_repeat_factors_raise_rare_findings_toward_the_threshold_and_leave_common_ones_alone():
    # 100 reports: 50 normal, 25 effusion, 4 pneumothorax (one with effusion), 21 unlabelled
    labels = [["No Finding"]] * 50 + [["Pleural Effusion"]] * 24 + [["Pleural Effusion", "Pneumothorax"]]
    labels += [["Pneumothorax"]] * 3 + [[]] * 22
    r = dec.repeat_factors(labels, threshold=0.16)
    assert r[0] == 1.0  # No Finding: 50 % > 16 %
    assert r[50] == 1.0  # effusion: 25 % > 16 %
    assert r[74] == pytest.approx(2.0) == r[75]  # pneumothorax: sqrt(0.16 / 0.04); the larger factor wins
    assert r[-1] == 1.0  # no labels: drawn once


def test_repeat_factor_epochs_have_a_fixed_length_and_draw_rare_reports_as_often_as_their_factor(tmp_path):
    from transformers import TrainingArguments

    repeat = [1.0] * 90 + [2.5] * 10
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, report_to="none"
    )
    dataset = dec.CaptionDataset([{"images": ["never-read.png"]}] * 100, transform=None)
    trainer = dec.CaptionTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=dataset, repeat=repeat)
    sampler = trainer._get_train_sampler()
    assert len(sampler) == 90 + 25
    torch.manual_seed(0)
    counts = torch.zeros(100)
    for _ in range(40):
        epoch = list(sampler)
        assert len(epoch) == len(sampler)
        counts += torch.bincount(torch.tensor(epoch), minlength=100)
    assert torch.all(counts[:90] == 40)  # each common report exactly once per epoch
    assert torch.all((counts[90:] >= 80) & (counts[90:] <= 120))  # 2 or 3 times: 2.5 on average
    assert counts[90:].sum() == 40 * 25


def test_repeat_factor_threshold_is_refused_for_a_vlm():
    with pytest.raises(ConfigError, match="repeat_factor_threshold"):
        DecoderConfig(kind="vlm", model="some/vlm", repeat_factor_threshold=0.2)


def test_gradient_accumulation_takes_the_same_step_as_one_batch_of_the_same_reports(chat, tmp_path):
    """The Trainer leaves the loss of an accumulated step unscaled when the model takes ``num_items_in_batch``;
    the captioner passes it on to GPT-2's loss, so 2 x 4 reports step exactly like 8 (plain SGD shows any
    scale error, Adam's first step would hide it)."""
    weights = {}
    for name, batch, accum in (("one", 8, 1), ("accumulated", 4, 2)):
        trainer = TrainerConfig(
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accum,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
            eval_steps=100,
            save_steps=100,
            load_best_model_at_end=False,
            dataloader_num_workers=0,
        )
        cfg = DecoderConfig(
            init_from_encoder=False,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            vocab_size=300,
            max_length=32,
            image_size=32,
            dropout=0.0,
            trainer=trainer,
        )
        dec.train_decoder(cfg, chat, tmp_path / name)
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    for k in weights["one"]:
        torch.testing.assert_close(weights["accumulated"][k], weights["one"][k], rtol=1e-4, atol=1e-6, msg=k)


def _interrupted(chat, tmp_path, monkeypatch, cfg):
    """A run of ``cfg`` stopped by SIGTERM at step 3, leaving ``run.ckpt/checkpoint-3``."""
    real_call, calls = dec.CaptionCollator.__call__, {"n": 0}

    def signalled(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, batch)

    monkeypatch.setattr(dec.CaptionCollator, "__call__", signalled)
    with pytest.raises(TrainingInterrupted):
        dec.train_decoder(cfg, chat, tmp_path / "run")
    monkeypatch.setattr(dec.CaptionCollator, "__call__", real_call)
    return tmp_path / "run.ckpt"


def _small(**trainer):
    args = dict(
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=6,
        warmup_steps=1,
        logging_steps=1,
        eval_steps=100,
        save_steps=100,
        load_best_model_at_end=False,
        dataloader_num_workers=0,
    )
    return DecoderConfig(
        init_from_encoder=False,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        vocab_size=300,
        max_length=32,
        image_size=32,
        trainer=TrainerConfig(**{**args, **trainer}),
    )


def test_an_edit_after_a_kill_starts_the_decoder_over_and_a_logging_edit_resumes(
    chat, tmp_path, monkeypatch, caplog
):
    import dataclasses

    cfg = _small()
    ckpt = _interrupted(chat, tmp_path, monkeypatch, cfg)
    edited = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, learning_rate=1e-3))
    with caplog.at_level(logging.INFO):
        dec.train_decoder(edited, chat, tmp_path / "run")
    assert (
        f"not resuming the checkpoints in {ckpt}: they were written for other settings "
        "(decoder.trainer.learning_rate differ); starting over" in caplog.text
    )
    assert "resuming from the last checkpoint" not in caplog.text
    dec.train_decoder(edited, chat, tmp_path / "fresh")
    a, b = (
        load_file(tmp_path / "fresh" / "model.safetensors"),
        load_file(tmp_path / "run" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)

    caplog.clear()
    _interrupted(chat, tmp_path / "again", monkeypatch, cfg)
    with caplog.at_level(logging.INFO):  # how often it logs is not what it computes
        dec.train_decoder(
            dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, logging_steps=2)),
            chat,
            tmp_path / "again" / "run",
        )
    assert "resuming from the last checkpoint" in caplog.text


# every pickle the Trainer's resume reads (its weights too, as pytorch_model.bin where model.safetensors was)
@pytest.mark.parametrize("planted", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "pytorch_model.bin"])
def test_a_planted_pickle_in_a_decoder_checkpoint_is_refused_not_run(chat, tmp_path, monkeypatch, planted):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    ckpt = _interrupted(chat, tmp_path, monkeypatch, _small())
    if planted == "pytorch_model.bin":
        (ckpt / "checkpoint-3" / "model.safetensors").unlink()
    else:
        assert (ckpt / "checkpoint-3" / planted).is_file()  # the Trainer's own, replaced
    torch.save({"state": Boom()}, ckpt / "checkpoint-3" / planted)
    with pytest.raises(
        MedlensError, match=r"run\.ckpt: a resume checkpoint holds something other than tensors"
    ):
        dec.train_decoder(_small(), chat, tmp_path / "run")
    assert not (tmp_path / "pwned").exists()


def test_a_planted_training_args_bin_is_never_read_by_the_resume(chat, tmp_path, monkeypatch):
    # training_args.bin is a pickle the Trainer writes into every checkpoint but never loads on resume; the
    # resume goes on with the checkpoint's tensors, and the final folder carries no such file
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    ckpt = _interrupted(chat, tmp_path, monkeypatch, _small())
    torch.save(Boom(), ckpt / "checkpoint-3" / "training_args.bin")
    dec.train_decoder(_small(), chat, tmp_path / "run")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run" / "training_args.bin").exists()


def test_training_progress_goes_to_the_log_with_rate_and_eta_not_to_stdout(chat, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="medlens"):
        dec.train_decoder(_small(max_steps=4, logging_steps=2), chat, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.name == "medlens.train.trainer"]
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split(" | ")[0] for s in steps] == ["step 2/4 (50%)", "step 4/4 (100%)"]
    assert all(re.search(r"\| [\d.]+ samples/s \| eta \d+(m\d\ds|s)$", s) and "| loss " in s for s in steps)
    assert "{'loss'" not in capsys.readouterr().out  # the Trainer's own print of each log dict is gone


def test_report_to_tensorboard_writes_the_decoder_curves_beside_the_model(chat, tmp_path):
    import dataclasses

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _small(max_steps=2, logging_steps=1)
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, report_to=["tensorboard"]))
    dec.train_decoder(cfg, chat, tmp_path / "exp" / "decoder")
    events = sorted((tmp_path / "exp" / "tensorboard" / "decoder").glob("**/events.out.tfevents.*"))
    assert events and not (tmp_path / "exp" / "decoder.ckpt").exists()
    tags = set().union(*(EventAccumulator(str(e.parent)).Reload().Tags()["scalars"] for e in events))
    assert "train/loss" in tags


def test_the_folder_carries_its_decoding_and_image_processor_for_stock_transformers(chat, tmp_path):
    import dataclasses

    from transformers import AutoImageProcessor, AutoTokenizer, GenerationConfig

    from medlens.config import GenerationConfig as Decoding
    from medlens.data.chat_format import read_chat
    from medlens.data.images import load_image
    from medlens.models.generator import load_generator

    cfg = dataclasses.replace(
        _small(max_steps=2), generation=Decoding(max_new_tokens=3, num_beams=2, no_repeat_ngram_size=2)
    )
    dec.train_decoder(cfg, chat, tmp_path / "decoder")
    out = tmp_path / "decoder"
    stock = GenerationConfig.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert (stock.max_new_tokens, stock.num_beams, stock.no_repeat_ngram_size, stock.do_sample) == (
        3,
        2,
        2,
        False,
    )
    assert stock.decoder_start_token_id == stock.bos_token_id == tok.bos_token_id
    assert (stock.eos_token_id, stock.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)

    generator = load_generator(out)  # decodes with the folder's settings when given none
    assert generator.generation == cfg.generation
    path = read_chat(chat / "test.jsonl")[0]["images"][0]
    ids = generator.model.generate(
        generator.transform(load_image(path, grey=False))[None], **generator.generation.generate_kwargs()
    )
    assert ids.shape[1] <= 3
    pixels = AutoImageProcessor.from_pretrained(out, backend="pil")(
        images=load_image(path, grey=False), return_tensors="pt"
    )["pixel_values"][0]
    torch.testing.assert_close(pixels, generator.transform(load_image(path, grey=False)))


def test_a_decoder_trained_on_phantoms_has_a_card_that_says_so(tmp_path):
    from huggingface_hub import ModelCard

    from helpers.experiment import write_prepared

    data = tmp_path / "results" / "demo" / "data"  # the pipeline's layout: the prepared record is found
    data.mkdir(parents=True)
    convert_to_chat(write_pairs(data / "pairs.parquet", n=24), ChatConfig(), data / "chat")
    write_prepared(tmp_path / "results" / "prepared" / "toy.parquet", 48, adapter="synthetic_cxr")
    dec.train_decoder(_small(max_steps=1), data / "chat", tmp_path / "results" / "demo" / "decoder")
    card = ModelCard.load(tmp_path / "results" / "demo" / "decoder" / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag, card.data.license) == (
        "transformers",
        "image-to-text",
        "apache-2.0",
    )
    assert "Trained on synthetic phantoms" in card.text and "not for clinical use" in card.text


def test_a_decoding_edit_after_a_kill_resumes_the_decoder(chat, tmp_path, monkeypatch, caplog):
    import dataclasses

    from medlens.config import GenerationConfig as Decoding
    from medlens.models.generation import read_generation_config

    cfg = _small()
    _interrupted(chat, tmp_path, monkeypatch, cfg)
    edited = dataclasses.replace(cfg, generation=Decoding(max_new_tokens=7))
    with caplog.at_level(logging.INFO):  # the weights do not depend on how they are decoded
        dec.train_decoder(edited, chat, tmp_path / "run")
    assert "resuming from the last checkpoint" in caplog.text
    assert read_generation_config(tmp_path / "run") == Decoding(max_new_tokens=7)


PRINT = """
import json, sys
print(json.dumps({"text": report, "medlens": sorted(m for m in sys.modules if m.split(".")[0] == "medlens")}))
"""


def test_a_copied_captioner_folder_generates_with_stock_transformers_as_medlens_does(chat, tmp_path):
    """Copied anywhere, the folder loads with AutoModel (its own modeling file, trust_remote_code) and writes the
    report medlens writes, decoding with its generation_config.json, by the code its model card gives; medlens
    never runs that file itself."""
    import json
    import re
    import shutil
    import subprocess
    import sys

    from medlens.data.chat_format import read_chat
    from medlens.models.generator import load_generator

    dec.train_decoder(_small(max_steps=2), chat, tmp_path / "decoder")
    copy = tmp_path / "elsewhere" / "my-captioner"
    shutil.copytree(tmp_path / "decoder", copy)
    assert not (copy / "training_args.bin").exists()  # the Trainer's pickle is not shipped
    image = read_chat(chat / "test.jsonl")[0]["images"][0]
    card = re.search(r"```python\n(.*?)```", (copy / "README.md").read_text(), re.S).group(1)
    code = card.replace('"image.png"', repr(image)) + PRINT
    env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=copy)
    assert done.returncode == 0, done.stderr[-3000:]
    stock = json.loads(done.stdout.strip().splitlines()[-1])
    assert stock["medlens"] == []
    assert stock["text"] == load_generator(copy).generate([image])[0]

    # medlens loads the folder with its own installed classes: a planted modeling file is never run
    marker = tmp_path / "ran"
    (copy / "captioner_modeling.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(1)\n")
    assert load_generator(copy).generate([image])[0] == stock["text"]
    assert not marker.exists()

    # a damaged folder is named, not a library's traceback
    from medlens.errors import DataError

    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{re.escape(str(copy))}: the decoder cannot be loaded"):
        load_generator(copy)
    (copy / "medlens.json").write_text("[]")
    with pytest.raises(DataError, match=r"medlens\.json: a JSON list, not an object"):
        load_generator(copy)
