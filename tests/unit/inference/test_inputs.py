"""Inference inputs: preprocessing read from the experiment, image lists, and per-file failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers.dicom import write_dicom
from helpers.experiment import STORE_SIZE, write_prepared
from medlens.data.images import load_image
from medlens.data.prepare import _process
from medlens.data.sources import RawRecord
from medlens.errors import ConfigError, DataError
from medlens.inference.inputs import (
    ImageInput,
    Preprocessing,
    list_images,
    load_batches,
    model_input,
    resolve_preprocessing,
)


def test_preprocessing_is_read_from_the_experiment(experiment):
    prep = resolve_preprocessing(experiment / "encoder")
    assert (prep.modality, prep.store_size) == ("chest_xray", STORE_SIZE)
    assert "pairs.parquet" in prep.source and "toy" in prep.source
    given = resolve_preprocessing(experiment / "encoder", modality="dermatology", store_size=100)
    assert (given.modality, given.store_size) == ("dermatology", 100)
    assert resolve_preprocessing(experiment / "encoder", store_size=90).store_size == 90


def test_a_model_folder_that_records_its_training_images_needs_nothing_around_it(tmp_path):
    rows = [{"dataset": "knee", "modality": "knee_xray"}, {"dataset": "knee", "modality": "knee_xray"}]
    model = _experiment_with(tmp_path, rows, {"knee": 448})
    from medlens.data.preprocessing import describe_training_images

    record = describe_training_images(model.parent / "data" / "pairs.parquet")
    assert record == [
        {"dataset": "knee", "adapter": None, "modality": "knee_xray", "store_size": 448, "rows": 2}
    ]
    moved = tmp_path / "elsewhere" / "encoder"
    moved.mkdir(parents=True)
    (moved / "medlens.json").write_text(json.dumps({"preprocessing": record}))
    prep = resolve_preprocessing(moved)  # no results/ tree around it
    assert (prep.modality, prep.store_size) == ("knee_xray", 448) and "medlens.json" in prep.source


def test_a_model_outside_its_experiment_needs_the_options(tmp_path):
    (tmp_path / "encoder").mkdir()  # there, but with no record and no experiment around it
    with pytest.raises(ConfigError, match="--modality/--store-size"):
        resolve_preprocessing(tmp_path / "encoder")
    assert resolve_preprocessing(tmp_path / "encoder", modality="ct", store_size=64).modality == "ct"


def _experiment_with(tmp_path, rows: list[dict], sizes: dict[str, int]):
    exp = tmp_path / "results" / "exp"
    (exp / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), exp / "data" / "pairs.parquet")
    for name, size in sizes.items():
        write_prepared(tmp_path / "results" / "prepared" / f"{name}.parquet", size)
    return exp / "encoder"


def test_several_modalities_or_store_sizes_must_be_chosen(tmp_path):
    rows = [{"dataset": "knee", "modality": "knee_xray"}, {"dataset": "skin", "modality": "dermatology"}]
    model = _experiment_with(tmp_path, rows, {"knee": 320, "skin": 448})
    with pytest.raises(ConfigError, match="--modality: the model was trained on several modalities"):
        resolve_preprocessing(model)
    assert resolve_preprocessing(model, modality="dermatology").store_size == 448  # that modality's dataset
    shutil.rmtree(tmp_path / "results" / "prepared")
    with pytest.raises(ConfigError, match="--store-size: the store size of dataset 'knee' is unknown"):
        resolve_preprocessing(model, modality="knee_xray")


def test_one_modality_stored_at_two_sizes_asks_for_the_size(tmp_path):
    rows = [{"dataset": "a", "modality": "chest_xray"}, {"dataset": "b", "modality": "chest_xray"}]
    with pytest.raises(ConfigError, match=r"different sizes .*expected one of \[64, 320\]"):
        resolve_preprocessing(_experiment_with(tmp_path, rows, {"a": 64, "b": 320}))


@pytest.mark.parametrize("modality", ["chest_xray", "dermatology"])
def test_model_input_is_the_pixels_training_decodes(tmp_path, modality):
    """prepare_datasets stores bytes, training decodes them with load_image(grey=False): the same pixels."""
    rng = np.random.default_rng(1)
    src = tmp_path / "in.png"
    if modality == "chest_xray":
        Image.fromarray(rng.integers(0, 65535, (150, 100), dtype=np.uint16)).save(src)  # 16-bit radiograph
    else:
        src = tmp_path / "in.jpg"
        Image.fromarray(rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)).save(src, quality=90)
    rec = RawRecord(native_id="1", image=str(src), text="report", modality=modality)
    stored = _process((rec, 64)).image
    trained_on = load_image(stored, grey=False)
    got = model_input(src, Preprocessing(modality, 64, "test"))
    assert got.mode == "RGB" and max(got.size) == 64
    assert np.array_equal(np.asarray(got), np.asarray(trained_on))


def test_folders_are_searched_recursively_for_images_only(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.JPG", "sub/c.dcm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    items = list_images(tmp_path)
    assert [i.id for i in items] == ["b.png", "sub/a.JPG", "sub/c.dcm"]
    assert items[1].path == tmp_path / "sub" / "a.JPG"
    with pytest.raises(ConfigError, match="--text"):
        list_images(tmp_path, with_text=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in this folder"):
        list_images(tmp_path / "empty")


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,id,text\nimgs/a.png,first,Cardiomegaly.\n/abs/b.png,,No effusion.\n")
    items = list_images(manifest, with_text=True)
    assert items == [
        ImageInput("first", tmp_path / "imgs" / "a.png", "Cardiomegaly."),
        ImageInput("/abs/b.png", tmp_path / "/abs/b.png", "No effusion."),
    ]
    assert all(i.text is None for i in list_images(manifest))


def test_a_spreadsheet_manifest_with_a_byte_order_mark_is_read_and_latin_1_is_named(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,text\na.png,Cardiomégalie.\n".encode("utf-8-sig"))
    assert list_images(manifest, with_text=True) == [
        ImageInput("a.png", tmp_path / "a.png", "Cardiomégalie.")
    ]
    manifest.write_bytes("path,text\na.png,Cardiomégalie.\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"m\.csv: not UTF-8 text .*; expected a UTF-8 CSV manifest"):
        list_images(manifest, with_text=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,id\na.png,1\n", "column 'path'"),
        ("path\na.png\n\n", None),  # csv skips blank lines: one row
        ("path,id\na.png,x\nb.png,x\n", "row 3 column 'id': id 'x' also on line 2"),
        ("path,id\n,x\n", "row 2 column 'path': empty path"),
        ("path\n", "lists no images"),
    ],
)
def test_manifest_errors_name_the_file_line_and_column(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    if message is None:
        assert len(list_images(manifest)) == 1
        return
    with pytest.raises(DataError, match=message) as e:
        list_images(manifest)
    assert str(manifest) in str(e.value)


def test_manifest_without_text_column_cannot_give_texts(tmp_path):
    (tmp_path / "m.csv").write_text("path\na.png\n")
    with pytest.raises(DataError, match="column 'text'"):
        list_images(tmp_path / "m.csv", with_text=True)
    with pytest.raises(ConfigError, match="neither a folder nor a manifest"):
        list_images(tmp_path / "nothing.csv")


def test_failures_name_their_file_and_never_stop_the_others(tmp_path):
    Image.new("L", (80, 60), 100).save(tmp_path / "good.png")
    Image.new("RGB", (30, 30), (10, 200, 10)).save(tmp_path / "good.jpg")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (tmp_path / "empty.png").write_bytes(b"")
    names = ["good.png", "corrupt.png", "missing.png", "empty.png", "good.jpg"]
    items = list_images([tmp_path / n for n in names])
    batches = list(load_batches(items, Preprocessing("chest_xray", 64, "test"), batch_size=2))
    assert len(batches) == 3
    loaded = [item.id for b in batches for item, _ in b[0]]
    failed = {f.id: f.error for b in batches for f in b[1]}
    assert loaded == [str(tmp_path / "good.png"), str(tmp_path / "good.jpg")]
    assert set(failed) == {str(tmp_path / n) for n in ("corrupt.png", "missing.png", "empty.png")}
    for path, error in failed.items():
        assert error.startswith(path)
    assert "not found" in failed[str(tmp_path / "missing.png")]
    assert [img.size for b in batches for _, img in b[0]] == [(64, 48), (30, 30)]


def test_an_empty_text_is_a_failure_of_its_row(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "a.png")
    items = [ImageInput("a", tmp_path / "a.png", "  "), ImageInput("b", tmp_path / "a.png", "Effusion.")]
    ((loaded, failed),) = load_batches(items, Preprocessing("chest_xray", 64, "test"), batch_size=8)
    assert [i.id for i, _ in loaded] == ["b"]
    assert failed[0].id == "a" and "empty text" in failed[0].error


def test_a_multi_frame_dicom_or_a_numpy_stack_is_a_failed_input_not_a_crash(tmp_path):
    # a multi-frame DICOM stopped classify/embed/generate with a raw TypeError from Image.fromarray
    write_dicom(tmp_path / "cine.dcm", np.arange(3 * 64, dtype=np.uint16).reshape(3, 8, 8), frames=3)
    Image.new("L", (80, 60), 100).save(tmp_path / "good.png")
    items = list_images([tmp_path / "cine.dcm", tmp_path / "good.png"])
    ((loaded, failed),) = load_batches(items, Preprocessing("chest_xray", 64, "test"), batch_size=8)
    assert [i.id for i, _ in loaded] == [str(tmp_path / "good.png")]
    assert [f.error for f in failed] == [
        f"{tmp_path / 'cine.dcm'}: DICOM holds 3 frames; expected a single-frame DICOM (one radiograph); "
        "export the frame to use as its own file"
    ]
    with pytest.raises(DataError, match=r"<bytes>: image cannot be decoded \(TypeError: Cannot handle"):
        load_image(np.zeros((1, 1, 32), np.float32))
