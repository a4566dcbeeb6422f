"""The ``medlens`` command on the tiny pipeline's outputs, run as a user runs it (a subprocess per command).

Inputs: a test-split image of the tiny experiment as PNG, as JPEG and as a 16-bit PNG, plus a
truncated PNG and a path that does not exist. Every command runs once, all at the same time (each
spends seconds importing torch; together they overlap on the cores), and the tests read the results.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

MEDLENS = str(Path(sys.executable).with_name("medlens"))  # the console script pip installed
EXP = Path("results") / "tiny"
IMAGES = ("a.png", "a.jpg", "b16.png", "corrupt.png", "missing.png")


def _inputs(tiny_run: Path, folder: Path) -> None:
    rows = [
        r
        for r in pq.read_table(
            tiny_run / EXP / "data" / "pairs.parquet", columns=["id", "image", "split"]
        ).to_pylist()
        if r["split"] == "test"
    ][:2]
    first, second = (Image.open(io.BytesIO(r["image"])) for r in rows)
    (folder / "a.png").write_bytes(rows[0]["image"])  # the stored bytes: what evaluation read for this image
    first.convert("RGB").save(folder / "a.jpg", quality=95)
    Image.fromarray(np.asarray(second, dtype=np.uint16) * 257).save(folder / "b16.png")  # mode I;16
    (folder / "corrupt.png").write_bytes(rows[0]["image"][:60])  # truncated inside the first chunk
    (folder / "manifest.csv").write_text(
        "path,id,text\na.png,first,The heart is enlarged.\n"
        "corrupt.png,broken,No effusion.\nb16.png,second,Normal chest radiograph.\n"
    )
    (folder / "ids.json").write_text(json.dumps([r["id"] for r in rows]))
    # not a radiograph: a colour photograph-like picture (smooth hues, a bright disc)
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    photo = np.stack([xx, yy, 1 - xx * yy], axis=-1)
    photo[(xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.05] = [1.0, 0.9, 0.1]
    Image.fromarray((photo * 255).astype(np.uint8)).save(folder / "photo.png")


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("cli")
    _inputs(tiny_run, folder)
    enc, dec = str(tiny_run / EXP / "encoder"), str(tiny_run / EXP / "decoder")
    images = [str(folder / n) for n in IMAGES]
    moved = tmp_path_factory.mktemp("elsewhere")  # model folders copied away from results/: self-describing
    shutil.copytree(enc, moved / "encoder")
    shutil.copytree(dec, moved / "decoder")
    commands = {
        "classify": [
            "classify",
            "--model",
            enc,
            *images,
            "--format",
            "jsonl",
            "--out",
            str(folder / "labels.jsonl"),
        ],
        "generate": ["generate", "--model", dec, *images, "--format", "jsonl"],
        "embed": [
            "embed",
            "--model",
            enc,
            "--images",
            str(folder / "manifest.csv"),
            "--out",
            str(folder / "emb.parquet"),
            "--text",
        ],
        "info": ["info", str(tiny_run / EXP), "--format", "json"],
        "export": ["export", "--model", enc, "--format", "onnx", "--out", str(folder / "onnx")],
        "usage": ["classify", "--model", enc],
        "classify_moved": ["classify", "--model", str(moved / "encoder"), images[0], "--format", "jsonl"],
        "generate_far": [
            "generate",
            "--model",
            dec,
            images[0],
            str(folder / "photo.png"),
            "--format",
            "jsonl",
        ],
        "classify_far": [
            "classify",
            "--model",
            enc,
            images[0],
            str(folder / "photo.png"),
            "--format",
            "jsonl",
        ],
        "generate_moved": ["generate", "--model", str(moved / "decoder"), images[0], "--format", "jsonl"],
    }
    # one thread each: the commands already run side by side, and tiny models gain nothing from more
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    procs = {
        k: subprocess.Popen(
            [MEDLENS, *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k, args in commands.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done["folder"] = folder
    return done


def _failures_reported(proc: subprocess.CompletedProcess, folder: Path, total: int) -> None:
    assert proc.returncode == 1, proc.stderr
    assert f"{folder / 'corrupt.png'}: image cannot be decoded" in proc.stderr
    assert f"{folder / 'missing.png'}: image file not found" in proc.stderr
    assert f"2 of {total} inputs failed" in proc.stderr


def test_classify_png_jpeg_and_16_bit_with_the_evaluated_labels(runs, tiny_run):
    folder = runs["folder"]
    _failures_reported(runs["classify"], folder, 5)
    records = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
    ok = {Path(r["image"]).name: r["probabilities"] for r in records if "probabilities" in r}
    errors = {Path(r["image"]).name: r["error"] for r in records if "error" in r}
    assert list(ok) == ["a.png", "a.jpg", "b16.png"] and set(errors) == {"corrupt.png", "missing.png"}
    labels = json.loads((tiny_run / EXP / "encoder" / "medlens.json").read_text())["zero_shot"]["labels"]
    for probs in ok.values():
        assert list(probs) == labels and all(0 < p < 1 for p in probs.values())
    # the JPEG of the same radiograph is decoded grey like the PNG: only JPEG loss separates them
    assert max(abs(ok["a.png"][k] - ok["a.jpg"][k]) for k in labels) < 0.02
    assert ok["a.png"] != ok["b16.png"]


def test_generate_writes_a_report_per_readable_image(runs, tiny_run):
    folder = runs["folder"]
    proc = runs["generate"]
    _failures_reported(proc, folder, 5)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    reports = {Path(r["image"]).name: r["report"] for r in records if "report" in r}
    assert list(reports) == ["a.png", "a.jpg", "b16.png"] and all(reports.values())
    assert {Path(r["image"]).name for r in records if "error" in r} == {"corrupt.png", "missing.png"}
    # with the evaluation's decoding settings (the default), the stored test image gives the evaluation's report
    first_id = json.loads((folder / "ids.json").read_text())[0]
    with open(tiny_run / EXP / "eval" / "generations.jsonl", encoding="utf-8") as f:
        evaluated = next(g for g in map(json.loads, f) if g["id"] == first_id)
    assert reports["a.png"] == evaluated["generated"]


def test_embed_writes_ids_paths_and_both_embeddings(runs, tiny_run):
    folder = runs["folder"]
    proc = runs["embed"]
    assert proc.returncode == 1 and "corrupt.png: image cannot be decoded" in proc.stderr
    assert "wrote 2 embeddings" in proc.stderr
    table = pq.read_table(folder / "emb.parquet")
    assert table["id"].to_pylist() == ["first", "second"]
    assert table["text"].to_pylist() == ["The heart is enlarged.", "Normal chest radiograph."]
    dim = json.loads((tiny_run / EXP / "encoder" / "open_clip_config.json").read_text())["model_cfg"][
        "embed_dim"
    ]
    for column in ("image_embedding", "text_embedding"):
        vectors = np.stack(table[column].to_numpy(zero_copy_only=False))
        assert vectors.shape == (2, dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert json.loads(table.schema.metadata[b"medlens.embed"])["failed"] == ["broken"]


def test_info_summarises_the_experiment(runs, tiny_run):
    proc = runs["info"]
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    evaluated = json.loads((tiny_run / EXP / "eval" / "encoder.json").read_text())
    assert summary["evaluation"]["encoder"]["zero_shot_auc"]["auc"] == evaluated["zero_shot"]["mean"]["auc"]
    files = {c["file"]: c for c in summary["encoder"]["checkpoints"]}
    weights = tiny_run / EXP / "encoder" / "open_clip_model.safetensors"
    assert files["open_clip_model.safetensors"]["bytes"] == weights.stat().st_size
    assert files["open_clip_model.safetensors"]["parameters"] > 0
    assert summary["decoder"]["kind"] == "captioner" and summary["data"]["rows_per_split"]["test"] > 0


def _card_recipe(path: Path, pp: dict) -> np.ndarray:
    """The ONNX card's preprocessing with PIL and numpy alone: RGB, shortest side resized (bicubic), centre crop."""
    img = Image.open(path).convert("RGB")
    size, scale = pp["size"], pp["size"] / min(Image.open(path).size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    pixels = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return ((pixels - np.array(pp["mean"], np.float32)) / np.array(pp["std"], np.float32)).transpose(2, 0, 1)[
        None
    ]


def test_onnx_export_is_verified_and_usable_from_its_card_alone(runs, tiny_run):
    """The exported image tower, fed the card's recipe (no torch, no medlens), gives `medlens embed`'s vector."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; the export cannot be run")
    folder, proc = runs["folder"], runs["export"]
    assert proc.returncode == 0, proc.stderr
    record = json.loads((folder / "onnx" / "export.json").read_text())
    assert max(record["verification"]["max_abs_diff"].values()) <= record["verification"]["atol"] == 1e-4
    pp = record["preprocess_cfg"]
    card = (folder / "onnx" / "README.md").read_text()
    assert (
        f"input size: {pp['size']} x {pp['size']} px" in card
        and f"mean {pp['mean']} and std {pp['std']}" in card
    )
    assert "resize the shortest side to fit and centre-crop" in card
    zero_shot = json.loads((tiny_run / EXP / "encoder" / "medlens.json").read_text())["zero_shot"]
    assert record["zero_shot"]["templates"] == zero_shot["templates"]
    assert sorted(record["zero_shot"]["prompts"]) == sorted(zero_shot["labels"])  # export.json sorts its keys
    for label, prompts in record["zero_shot"]["prompts"].items():
        assert f"| {label} | {'; '.join(prompts['positive'])} | {'; '.join(prompts['negative'])} |" in card
    session = ort.InferenceSession(str(folder / "onnx" / "image_encoder.onnx"))
    onnx_vector = session.run(None, {"pixel_values": _card_recipe(folder / "a.png", pp)})[0][0]
    table = pq.read_table(folder / "emb.parquet")
    np.testing.assert_allclose(
        onnx_vector, np.asarray(table["image_embedding"][0].as_py()), atol=1e-4, rtol=0
    )


def test_usage_errors_exit_2(runs):
    proc = runs["usage"]
    assert proc.returncode == 2 and "IMAGE" in proc.stderr


def test_a_model_folder_copied_out_of_results_prepares_images_as_training_did(runs):
    # no --modality/--store-size: the folder's medlens.json says how its training images were prepared
    for name in ("classify_moved", "generate_moved"):
        assert runs[name].returncode == 0, runs[name].stderr
    moved = json.loads(runs["classify_moved"].stdout.splitlines()[0])
    in_place = json.loads((runs["folder"] / "labels.jsonl").read_text().splitlines()[0])
    # alone in its batch here, with two others in place: the same numbers to float rounding
    assert moved["probabilities"] == pytest.approx(in_place["probabilities"], abs=1e-6)
    report = json.loads(runs["generate_moved"].stdout.splitlines()[0])
    assert report["report"] == json.loads(runs["generate"].stdout.splitlines()[0])["report"]


@pytest.mark.parametrize("command", ["generate_far", "classify_far"])
def test_an_image_far_from_the_training_images_is_warned_about_with_its_score(runs, command):
    proc = runs[command]
    assert proc.returncode == 0, proc.stderr
    scores = {Path(r["image"]).name: r["ood_score"] for r in map(json.loads, proc.stdout.splitlines())}
    verb = command.split("_")[0]
    assert scores["photo.png"] > 2 > scores["a.png"]  # a test-split phantom is like the training images
    warning = re.search(
        rf"medlens {verb}: warning: \S+photo\.png lies far outside the images this model was "
        rf"trained on \(out-of-distribution score ([\d.]+);",
        proc.stderr,
    )
    assert warning and float(warning.group(1)) == pytest.approx(scores["photo.png"], abs=0.05)
    assert "a.png lies far" not in proc.stderr
