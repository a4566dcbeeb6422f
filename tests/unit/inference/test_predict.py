"""Predictions on new images: zero-shot as the evaluation computes it, reports, embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers.experiment import LABELS, STORE_SIZE, RecordingGenerator
from medlens.config import GenerationConfig
from medlens.data.images import encode_image, prepare_image
from medlens.errors import ConfigError
from medlens.evaluate.encoder import _encode_texts, encode_rows
from medlens.evaluate.zero_shot import zero_shot_probabilities
from medlens.inference.inputs import ImageInput, Preprocessing, list_images, resolve_preprocessing
from medlens.inference.predict import (
    EMBED_METADATA_KEY,
    classify_images,
    embed_images,
    generate_reports,
    generation_settings,
    training_prompt,
    zero_shot_setup,
)
from medlens.models.generation import save_generation_config


@pytest.fixture(scope="module")
def encoder(experiment):
    from medlens.models.encoders import load_encoder

    return load_encoder(experiment / "encoder", device="cpu")


@pytest.fixture
def images(tmp_path):
    """A grey PNG, an RGB JPEG and a 16-bit PNG with different content, plus a corrupt file and a missing one."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 50), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    Image.fromarray(rng.integers(0, 65535, (90, 90), dtype=np.uint16)).save(tmp_path / "c16.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    return list_images([tmp_path / n for n in ("a.png", "bad.png", "b.jpg", "missing.png", "c16.png")])


def test_zero_shot_defaults_are_what_the_encoder_was_evaluated_with(experiment):
    assert zero_shot_setup(experiment / "encoder") == (LABELS, "report")
    assert zero_shot_setup(experiment / "encoder", ["Edema"], "chexzero") == (["Edema"], "chexzero")
    with pytest.raises(ConfigError, match="not found"):
        zero_shot_setup(experiment / "encoder", prompts="no_such_set")
    with pytest.raises(ConfigError, match="--labels"):
        zero_shot_setup(experiment / "data")  # no medlens.json: nothing recorded
    with pytest.raises(
        ConfigError,
        match=r"--labels: no prompts for 'Banana': the model was evaluated on other "
        r"labels; expected one of .*Cardiomegaly.*--prompts my_prompts\.yaml",
    ):
        zero_shot_setup(experiment / "encoder", ["Cardiomegaly", "Banana"])
    assert zero_shot_setup(experiment / "encoder", ["Pneumonia"]) == (
        ["Pneumonia"],
        "report",
    )  # in the prompt set


def test_classify_gives_the_evaluation_probabilities(experiment, encoder, images):
    """Same images through the pipeline's path (stored bytes -> encode_rows) give the same numbers."""
    prep = resolve_preprocessing(experiment / "encoder")
    records, failures = classify_images(encoder, images, prep, LABELS, "report", batch_size=2)
    assert [r["id"] for r in records] == [str(images[i].path) for i in (0, 2, 4)]
    assert {f.id for f in failures} == {str(images[1].path), str(images[3].path)}
    rows = [
        {"image": encode_image(prepare_image(images[i].path, modality="chest_xray", store_size=STORE_SIZE))}
        for i in (0, 2, 4)
    ]
    expected = zero_shot_probabilities(
        encode_rows(encoder, rows),
        lambda t: _encode_texts(encoder, t),
        LABELS,
        "report",
        logit_scale=encoder.logit_scale,
    )
    got = np.array([[r["probabilities"][lab] for lab in LABELS] for r in records])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(got[0], got[1])  # different images, different answers


def test_embeddings_are_written_with_ids_paths_texts_and_failures(experiment, encoder, tmp_path):
    Image.new("L", (60, 60), 90).save(tmp_path / "x.png")
    Image.new("L", (60, 60), 200).save(tmp_path / "y.png")
    (tmp_path / "m.csv").write_text(
        "path,id,text\nx.png,x,Heart size is normal.\nmissing.png,m,Effusion.\n"
        "y.png,y,The heart is enlarged.\n"
    )
    items = list_images(tmp_path / "m.csv", with_text=True)
    prep = Preprocessing("chest_xray", 48, "test")
    written, failures = embed_images(
        encoder, items, prep, tmp_path / "e.parquet", with_text=True, model_dir="enc"
    )
    assert written == 2 and [f.id for f in failures] == ["m"]
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["id", "path", "image_embedding", "text", "text_embedding"]
    assert table["id"].to_pylist() == ["x", "y"] and table["path"].to_pylist()[0] == str(tmp_path / "x.png")
    assert table.schema.field("image_embedding").type == pa.list_(pa.float32(), 32)
    img = np.stack(table["image_embedding"].to_numpy(zero_copy_only=False))
    txt = np.stack(table["text_embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        txt, encoder.encode_texts(["Heart size is normal.", "The heart is enlarged."]).numpy(), atol=1e-6
    )
    meta = json.loads(table.schema.metadata[EMBED_METADATA_KEY])
    assert meta["failed"] == ["m"] and meta["preprocessing"]["store_size"] == 48 and meta["embed_dim"] == 32


def test_nothing_is_written_when_no_image_can_be_read(encoder, tmp_path):
    items = [ImageInput("gone", tmp_path / "gone.png")]
    written, failures = embed_images(
        encoder, items, Preprocessing("chest_xray", 48, "t"), tmp_path / "e.parquet"
    )
    assert written == 0 and "gone.png: image file not found" in failures[0].error
    assert not (tmp_path / "e.parquet").exists()


def test_reports_come_back_per_image_with_prepared_inputs(images):
    gen = RecordingGenerator()
    settings = GenerationConfig(num_beams=3)
    records, failures = generate_reports(
        gen,
        images,
        Preprocessing("chest_xray", 32, "t"),
        generation=settings,
        prompt="Describe:",
        batch_size=2,
    )
    assert [r["report"] for r in records] == ["RGB 23x32", "RGB 32x32", "RGB 32x32"]  # 50x70 keeps its aspect
    assert [r["image"] for r in records] == [str(images[i].path) for i in (0, 2, 4)]
    assert len(failures) == 2
    assert all(p == ["Describe:"] * len(ims) and g is settings for ims, p, g in gen.calls)


def test_decoding_defaults_are_the_folders_own(tmp_path):
    decoder = tmp_path / "exp" / "decoder"
    decoder.mkdir(parents=True)
    assert generation_settings(decoder) == (GenerationConfig(), "medlens defaults")
    # an evaluation record beside the folder is not read: the folder is the one source
    (tmp_path / "exp" / "eval").mkdir(parents=True)
    (tmp_path / "exp" / "eval" / "decoder.json").write_text(
        json.dumps({"protocol": {"decoding": {"max_new_tokens": 7}}})
    )
    save_generation_config(decoder, GenerationConfig(max_new_tokens=48, num_beams=2), eos_token_id=2)
    settings, source = generation_settings(decoder, num_beams=None, max_new_tokens=10)
    assert settings == GenerationConfig(max_new_tokens=10, num_beams=2)
    assert source == str(decoder / "generation_config.json")


def test_the_training_prompt_is_the_report_prompt_not_a_vqa_question(tmp_path):
    data = tmp_path / "exp" / "data"
    assert training_prompt(tmp_path / "exp" / "decoder") is None
    (data / "chat").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["q", "r"], "text_source": ["vqa", "report"]}), data / "pairs.parquet")
    turns = [("q", "<image>Is there an effusion?"), ("r", "<image>Write the findings:")]
    (data / "chat" / "train.jsonl").write_text(
        "".join(
            json.dumps(
                {"id": i, "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": "a"}]}
            )
            + "\n"
            for i, u in turns
        )
    )
    assert training_prompt(tmp_path / "exp" / "decoder") == "Write the findings:"
