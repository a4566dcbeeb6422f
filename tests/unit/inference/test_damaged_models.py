"""A model folder that is damaged, foreign or asks to run its own code: the ``medlens`` command names the file,
exits 1 and runs nothing from the folder; the other commands' inputs are read before any work starts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from medlens import cli


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch):
    monkeypatch.setattr(cli, "_setup_logging", lambda verbose: None)


@pytest.fixture
def encoder(experiment, tmp_path):
    folder = tmp_path / "encoder"
    shutil.copytree(experiment / "encoder", folder)
    return folder


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)).save(path)
    return path


def _edit_config(folder, edit) -> None:
    path = folder / "open_clip_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg["model_cfg"])
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("config_asks", [True, False], ids=["config-says-trust", "config-silent"])
def test_a_folder_that_asks_to_run_its_own_code_is_refused_and_nothing_runs(
    encoder, image, tmp_path, capsys, config_asks
):
    ran = tmp_path / "ran"
    (encoder / "planted.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('code from the model folder ran')\n"
        "from transformers import PreTrainedTokenizerFast as PlantedTokenizer\n"
    )
    auto_map = {"AutoTokenizer": ["planted.PlantedTokenizer", None]}
    (encoder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "Planted", "auto_map": auto_map})
    )

    def ask_for_a_hugging_face_tokenizer(model_cfg):
        model_cfg["text_cfg"]["hf_tokenizer_name"] = "bert-base-uncased"
        if config_asks:  # open_clip hands a config's tokenizer_kwargs to transformers
            model_cfg["text_cfg"]["tokenizer_kwargs"] = {"trust_remote_code": True}

    _edit_config(encoder, ask_for_a_hugging_face_tokenizer)
    assert cli.main(["classify", "--model", str(encoder), str(image)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{encoder / 'open_clip_config.json'}: open_clip cannot build the model" in err
    assert "custom code" in err and "with no code of its own to run" in err
    assert not ran.exists()


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_width(path) -> None:
    cfg = json.loads(path.read_text())
    cfg["model_cfg"]["embed_dim"] += 8
    path.write_text(json.dumps(cfg))


DAMAGE = {
    "config not JSON": ("open_clip_config.json", lambda p: p.write_text("{not json"), "not valid JSON"),
    "config a list": ("open_clip_config.json", lambda p: p.write_text("[]"), "a JSON list, not an object"),
    "config Latin-1": (
        "open_clip_config.json",
        lambda p: p.write_bytes(b'{"model_cfg": "\xe9"}'),
        "not UTF-8",
    ),
    "config without a model": ("open_clip_config.json", lambda p: p.write_text("{}"), "no model_cfg"),
    "weights truncated": ("open_clip_model.safetensors", _truncate, "the weights cannot be loaded"),
    "weights of another model": ("open_clip_config.json", _other_width, "the weights cannot be loaded"),
    "medlens.json a list": ("medlens.json", lambda p: p.write_text("[]"), "a JSON list, not an object"),
    "prompt set a number": (  # was a TypeError traceback
        "medlens.json",
        lambda p: p.write_text(json.dumps({"zero_shot": {"labels": ["Cardiomegaly"], "templates": 5}})),
        "zero_shot.templates is 5",
    ),
    "preprocessing of wrong types": (  # was a TypeError traceback
        "medlens.json",
        lambda p: p.write_text(
            json.dumps(
                {
                    "zero_shot": {"labels": ["Cardiomegaly"]},
                    "preprocessing": [{"dataset": "t", "modality": 5, "store_size": "big", "rows": 3}],
                }
            )
        ),
        "preprocessing is [{",
    ),
    "labels a string": (
        "medlens.json",
        lambda p: p.write_text(json.dumps({"zero_shot": {"labels": "Cardiomegaly"}})),
        "zero_shot.labels is 'Cardiomegaly'",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_model_folder_is_named_not_a_traceback(encoder, image, capsys, damage):
    name, spoil, message = DAMAGE[damage]
    spoil(encoder / name)
    if damage == "weights of another model":
        name = "open_clip_model.safetensors"  # the config is whole; the weights do not fit it
    assert cli.main(["classify", "--model", str(encoder), str(image)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"medlens classify: error: {encoder / name}: " in err and message in err, err
    if damage == "preprocessing of wrong types":  # also when the options make export skip reading it
        argv = ["export", "--model", str(encoder), "--out", str(encoder.parent / "onnx")]
        assert cli.main([*argv, "--modality", "chest_xray", "--store-size", "48"]) == cli.EXIT_FAILED
        err = capsys.readouterr().err  # was an AttributeError traceback from the model card, after the export
        assert f"medlens export: error: {encoder / name}: " in err and message in err, err


def test_export_reads_its_metrics_and_checks_the_weights_before_writing(encoder, tmp_path, capsys):
    out = tmp_path / "shared"
    hub = ["export", "--model", str(encoder), "--out", str(out), "--format", "hub"]
    not_json = tmp_path / "eval.csv"
    not_json.write_text("metric,value\nauc,0.9\n")
    a_list = tmp_path / "eval.json"
    a_list.write_text("[1, 2]")
    for metrics, message in ((not_json, "not valid JSON"), (a_list, "a JSON list, not an object")):
        for argv in (hub, hub[:-2]):  # the hub copy and the ONNX export
            assert cli.main([*argv, "--metrics", str(metrics)]) == cli.EXIT_FAILED
            err = capsys.readouterr().err
            assert f"{metrics}: {message}" in err and "eval/encoder.json" in err, err
    metrics = tmp_path / "encoder.json"
    metrics.write_text(json.dumps({"split": "test", "n": 4, "zero_shot": {"mean": {"auc": 0.9}}}))
    _truncate(encoder / "open_clip_model.safetensors")
    assert cli.main([*hub, "--metrics", str(metrics)]) == cli.EXIT_FAILED
    assert f"{encoder / 'open_clip_model.safetensors'}: damaged weights" in capsys.readouterr().err
    (encoder / "open_clip_model.safetensors").unlink()
    assert cli.main([*hub, "--metrics", str(metrics)]) == cli.EXIT_FAILED
    assert f"{encoder}: no weights in the model folder" in capsys.readouterr().err
    assert not out.exists()


def test_info_names_a_damaged_file_of_the_experiment(experiment, tmp_path, capsys):
    exp = tmp_path / "results" / experiment.name
    shutil.copytree(experiment, exp)
    assert cli.main(["info", str(exp)]) == cli.EXIT_OK
    capsys.readouterr()
    damaged = {
        exp / "encoder" / "medlens.json": (b"[]", "a JSON list, not an object"),
        exp / "encoder" / "metrics.csv": (b"step,loss\n1,caf\xe9\n", "cannot be read"),
        exp / "encoder" / "open_clip_model.safetensors": (b"\x08\x00", "damaged weights"),
    }
    for path, (content, message) in damaged.items():
        original = path.read_bytes() if path.exists() else None
        path.write_bytes(content)
        assert cli.main(["info", str(exp)]) == cli.EXIT_FAILED, path
        err = capsys.readouterr().err
        assert f"{path}: {message}" in err, err
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    """A captioner decoder folder as train_decoder writes it: weights, tokenizer, decoding settings, its image
    tower (encoder_final/) and its out-of-distribution statistics."""
    from helpers.encoders import save_tiny_open_clip
    from medlens.config import DecoderConfig, TrainerConfig
    from medlens.models.captioner import build_captioner
    from medlens.models.generation import save_generation_config
    from medlens.models.ood import fit_ood
    from medlens.train.decoder import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("captioner")
    tokenizer = train_bpe_tokenizer(["The heart is enlarged.", "No pleural effusion."] * 6, vocab_size=280)
    cfg = DecoderConfig(hidden_size=32, num_layers=1, num_heads=2, max_length=32, trainer=TrainerConfig())
    model = build_captioner(cfg, tokenizer, save_tiny_open_clip(root / "encoder"))
    folder = root / "decoder"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_generation_config(folder, cfg.generation, eos_token_id=tokenizer.eos_token_id)
    model.save_vision_encoder(folder / "encoder_final")
    preprocessing = [
        {"dataset": "toy", "adapter": "toy", "modality": "chest_xray", "store_size": 48, "rows": 4}
    ]
    (folder / "medlens.json").write_text(json.dumps({"kind": "captioner", "preprocessing": preprocessing}))
    rng = np.random.default_rng(0)
    fit_ood(rng.normal(size=(40, 32)), rng.normal(size=(8, 32))).save(folder)  # the tower's width
    return folder


def test_the_undamaged_captioner_folder_generates(captioner, image, capsys):
    assert (
        cli.main(["generate", "--model", str(captioner), str(image), "--max-new-tokens", "2"]) == cli.EXIT_OK
    )
    assert "out-of-distribution score" in capsys.readouterr().out  # its tower and statistics were read


def fit_other_width(path) -> None:
    from medlens.models.ood import fit_ood

    rng = np.random.default_rng(1)
    fit_ood(rng.normal(size=(20, 8)), rng.normal(size=(4, 8))).save(path.parent)


DECODER_DAMAGE = {
    "tower config not JSON": ("encoder_final/config.json", lambda p: p.write_text("{"), "not valid JSON"),
    "tower config without a model": (
        "encoder_final/config.json",
        lambda p: p.write_text("{}"),
        "the image tower cannot be loaded (KeyError",
    ),
    "tower weights truncated": (
        "encoder_final/vision.safetensors",
        _truncate,
        "the image tower cannot be loaded",
    ),
    "ood statistics truncated": (
        "ood.safetensors",
        _truncate,
        "the out-of-distribution statistics cannot be read",
    ),
    "ood statistics of another model": (
        "ood.safetensors",
        lambda p: fit_other_width(p),
        "statistics of 8-wide image features",
    ),
    "decoding settings a list": (
        "generation_config.json",
        lambda p: p.write_text("[]"),
        "a JSON list, not an object",
    ),
    "preprocessing record a string": (
        "medlens.json",
        lambda p: p.write_text(json.dumps({"kind": "captioner", "preprocessing": "chest_xray"})),
        "preprocessing is 'chest_xray'",
    ),
}


@pytest.mark.parametrize("damage", DECODER_DAMAGE)
def test_a_damaged_decoder_folder_is_named_not_a_traceback(captioner, image, tmp_path, capsys, damage):
    # each was a traceback (JSONDecodeError, KeyError, SafetensorError, AttributeError, TypeError)
    folder = tmp_path / "decoder"
    shutil.copytree(captioner, folder)
    name, spoil, message = DECODER_DAMAGE[damage]
    spoil(folder / name)
    # the decoding settings are read as settings (a ConfigError, exit 2, as for one that is not JSON)
    status = cli.EXIT_USAGE if name == "generation_config.json" else cli.EXIT_FAILED
    assert cli.main(["generate", "--model", str(folder), str(image), "--max-new-tokens", "2"]) == status
    err = capsys.readouterr().err
    assert f"medlens generate: error: {folder / name.split('/')[0]}" in err, (
        err
    )  # the file, or encoder_final/
    assert message in err, err
