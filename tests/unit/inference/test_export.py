"""ONNX export: both towers match PyTorch within the stated tolerance, and the card says how to feed them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from helpers.experiment import LABELS
from medlens.errors import MedlensError
from medlens.evaluate.zero_shot import build_prompts
from medlens.inference import export as export_module
from medlens.inference.export import DEFAULT_ATOL, IMAGE_FILE, TEXT_FILE, export_onnx
from medlens.inference.inputs import Preprocessing

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed here; the export cannot be checked"
)

PREP = Preprocessing("chest_xray", 48, "test")


@pytest.fixture(scope="module")
def exported(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "export"
    metrics = out.parent / "encoder.json"  # as evaluate_encoder writes it, headline entries only
    metrics.write_text(
        json.dumps(
            {
                "split": "test",
                "n": 20,
                "zero_shot": {"mean": {"auc": 0.8125, "ci_low": 0.7, "ci_high": 0.9}},
                "retrieval": {"image_to_text": {"recall@1": {"value": 0.25}, "recall@5": {"value": 0.5}}},
            }
        )
    )
    record = export_onnx(
        experiment / "encoder", out, PREP, labels=LABELS, templates="report", metrics=metrics
    )
    return out, record


def test_towers_match_pytorch_on_new_inputs(experiment, exported):
    from medlens.models.encoders import load_encoder

    out, record = exported
    assert record["verification"]["atol"] == DEFAULT_ATOL
    assert max(record["verification"]["max_abs_diff"].values()) <= DEFAULT_ATOL
    encoder = load_encoder(experiment / "encoder", device="cpu")
    pixels = torch.rand(5, 3, 32, 32)  # a batch size the export never saw
    tokens = encoder.tokenizer(["The heart is enlarged.", "No pleural effusion.", "x", "Cardiomegaly.", "y"])
    image = ort.InferenceSession(str(out / IMAGE_FILE)).run(None, {"pixel_values": pixels.numpy()})[0]
    text = ort.InferenceSession(str(out / TEXT_FILE)).run(None, {"input_ids": tokens.numpy()})[0]
    np.testing.assert_allclose(
        image, encoder.model.encode_image(pixels, normalize=True).detach().numpy(), atol=DEFAULT_ATOL, rtol=0
    )
    np.testing.assert_allclose(
        text,
        encoder.encode_texts(
            ["The heart is enlarged.", "No pleural effusion.", "x", "Cardiomegaly.", "y"]
        ).numpy(),
        atol=DEFAULT_ATOL,
        rtol=0,
    )


def test_card_and_record_state_input_size_normalisation_and_prompts(exported):
    out, record = exported
    card = (out / "README.md").read_text()
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").text.lstrip().startswith("# tiny encoder")  # its own, extended
    assert "input size: 32 x 32 px" in card
    assert "mean [0.5, 0.5, 0.5] and std [0.25, 0.25, 0.25]" in card
    assert "at most 48 px" in card and "decode grey" in card
    pos, neg = build_prompts(["Cardiomegaly"], "report")["Cardiomegaly"]
    assert f"| Cardiomegaly | {'; '.join(pos)} | {'; '.join(neg)} |" in card
    assert f"tolerance {DEFAULT_ATOL:g}" in card
    saved = json.loads((out / "export.json").read_text())
    assert saved["files"][IMAGE_FILE]["input"]["pixel_values"] == ["batch", 3, 32, 32]
    assert saved["files"][TEXT_FILE]["input"]["input_ids"] == ["batch", 32]
    assert saved["zero_shot"]["prompts"] == {
        k: {"positive": p, "negative": n} for k, (p, n) in build_prompts(LABELS, "report").items()
    }
    assert (out / "open_clip_config.json").is_file()


def test_the_card_front_matter_carries_the_evaluation_metrics_with_their_protocol(exported):
    from huggingface_hub import ModelCard

    out, _ = exported
    card = ModelCard.load(out / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("onnx", "zero-shot-image-classification")
    assert "medical" in card.data.tags
    results = {r.metric_name: r for r in card.data.eval_results}
    auc = results["zero-shot mean AUC"]
    assert (auc.metric_type, auc.metric_value, auc.dataset_split) == ("roc_auc", 0.8125, "test")
    assert "20 test rows" in auc.metric_args["protocol"]
    assert results["image-to-text recall@5"].metric_value == 0.5
    assert "| zero-shot mean AUC | 0.8125 | test |" in card.text


def test_a_graph_outside_the_tolerance_writes_nothing(experiment, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_max_diff", lambda *a: 0.5)
    with pytest.raises(MedlensError, match=r"differ by .*'image': 0.5.*nothing was written"):
        export_onnx(experiment / "encoder", tmp_path / "out", PREP, labels=LABELS, templates="report")
    assert not (tmp_path / "out").exists()


def test_a_hub_copy_of_a_decoder_folder_carries_its_evaluation_and_the_original_is_untouched(tmp_path):
    from huggingface_hub import ModelCard

    from medlens.inference.export import export_hub
    from medlens.models.card import decoder_model_card

    folder = tmp_path / "results" / "demo" / "decoder"
    folder.mkdir(parents=True)
    info = {
        "kind": "captioner",
        "config": {"preset": "tiny_captioner", "generation": {"max_new_tokens": 160}},
        "preprocessing": [
            {"dataset": "synthetic_cxr", "adapter": "synthetic_cxr", "modality": "chest_xray", "rows": 9}
        ],
        "summary": {},
    }
    card = decoder_model_card(info)
    (folder / "README.md").write_text(card)
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    metrics = tmp_path / "decoder.json"
    metrics.write_text(
        json.dumps(
            {
                "split": "test",
                "n": 30,
                "overall": {
                    "text": {"bleu4": 0.2},
                    "clinical": {"labeler": "rules", "chexpert5": {"micro": {"f1": 0.9}}},
                },
            }
        )
    )
    assert export_hub(folder, tmp_path / "share", metrics=metrics) == 2
    shared = ModelCard.load(tmp_path / "share" / "README.md")
    assert {r.metric_name: r.metric_value for r in shared.data.eval_results} == {
        "bleu4": 0.2,
        "clinical micro-F1 (chexpert5)": 0.9,
    }
    assert shared.data.license == "apache-2.0" and "Trained on synthetic phantoms" in shared.text
    assert (
        "| image-to-text | bleu4 | 0.2 | test |" in shared.text
        and "Evaluated after training" not in shared.text
    )
    assert (tmp_path / "share" / "model.safetensors").read_bytes() == (
        folder / "model.safetensors"
    ).read_bytes()
    assert (folder / "README.md").read_text() == card  # the pipeline's folder is never rewritten


def test_a_hub_copy_needs_metrics_with_something_to_report(tmp_path, experiment):
    from medlens.inference.export import export_hub

    metrics = tmp_path / "empty.json"
    metrics.write_text("{}")
    with pytest.raises(MedlensError, match="no zero-shot, retrieval, text or clinical metrics"):
        export_hub(experiment / "encoder", tmp_path / "share", metrics=metrics)
    assert not (tmp_path / "share").exists()


def test_an_export_never_copies_what_a_link_in_the_model_folder_points_at(experiment, tmp_path):
    # copytree and copy follow links: a folder handed over with `notes.txt -> ~/.ssh/id_rsa` had the key
    # copied into the export, the folder that is uploaded
    import shutil

    from medlens.errors import DataError
    from medlens.inference.export import export_hub

    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    metrics = tmp_path / "encoder.json"
    metrics.write_text(json.dumps({"split": "test", "n": 4, "zero_shot": {"mean": {"auc": 0.9}}}))
    for link, export in (
        ("notes.txt", lambda folder: export_hub(folder, tmp_path / "share", metrics=metrics)),
        (
            "tokenizer.json",
            lambda folder: export_onnx(folder, tmp_path / "onnx", PREP, labels=LABELS, templates="report"),
        ),
        ("sub/inner", lambda folder: export_hub(folder, tmp_path / "share", metrics=metrics)),
    ):
        folder = tmp_path / "encoder"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(experiment / "encoder", folder)
        (folder / link).parent.mkdir(exist_ok=True)
        (folder / link).symlink_to(
            secret if link != "sub/inner" else tmp_path, target_is_directory=link == "sub/inner"
        )
        with pytest.raises(DataError, match=rf"{folder / link}: a link \(to {tmp_path}"):
            export(folder)
        assert not (tmp_path / "share").exists() and not (tmp_path / "onnx").exists()
