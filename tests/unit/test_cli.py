"""The ``medlens`` command in process: options, exit statuses, output formats (subprocess runs: tests/workflow)."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers.experiment import LABELS, RecordingGenerator, make_experiment
from medlens import cli
from medlens.config import GenerationConfig


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return make_experiment(tmp_path_factory.mktemp("results"))


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch):
    # main() configures the root logger and warning filters for a terminal; pytest owns them here
    monkeypatch.setattr(cli, "_setup_logging", lambda verbose: None)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.png"],  # no --model
        ["generate", "--model", "m"],  # no image
        ["embed", "--model", "m", "--images", "d", "--out", "o", "--batch-size", "0"],
        ["generate", "--model", "m", "x.png", "--format", "csv"],
        ["export", "--model", "m", "--out", "o", "--format", "tflite"],
        ["generate", "--model", "m", "x.png", "--repetition-penalty", "-1"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == cli.EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_classify_prints_each_label_and_reports_failures(experiment, image, capsys):
    status = cli.main(
        ["classify", "--model", str(experiment / "encoder"), str(image), str(image.with_name("no.png"))]
    )
    out, err = capsys.readouterr()
    assert status == cli.EXIT_FAILED
    header, *lines = out.strip().split("\n")
    assert header == f"==> {image} <=="
    assert [line.rsplit(None, 1)[0] for line in lines] == LABELS
    assert all(0 < float(line.rsplit(None, 1)[1]) < 1 for line in lines)
    assert f"medlens classify: error: {image.with_name('no.png')}: image file not found" in err
    assert "1 of 2 inputs failed" in err


def test_a_folder_that_is_not_a_model_is_a_usage_error(experiment, image, capsys):
    assert cli.main(["classify", "--model", str(experiment / "data"), str(image)]) == cli.EXIT_USAGE
    assert "is not an encoder folder" in capsys.readouterr().err
    assert cli.main(["info", str(experiment / "data")]) == cli.EXIT_USAGE
    assert (
        cli.main(
            [
                "embed",
                "--model",
                str(experiment / "encoder"),
                "--images",
                str(image.parent),
                "--out",
                str(image.parent / "e.parquet"),
                "--text",
            ]
        )
        == cli.EXIT_USAGE
    )
    assert "has no texts" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "classify", "embed", "export"])
def test_a_model_folder_that_is_not_there_or_is_a_file_is_named_as_such(command, image, tmp_path, capsys):
    # was, for generate and embed: "cannot tell how the training images of ... were prepared"
    for model, problem in ((tmp_path / "typo", "it does not exist"), (image, "a file")):
        argv = {
            "generate": ["generate", "--model", str(model), str(image)],
            "classify": ["classify", "--model", str(model), str(image)],
            "embed": ["embed", "--model", str(model), "--images", str(image.parent), "--out", "e.parquet"],
            "export": ["export", "--model", str(model), "--out", str(tmp_path / "onnx")],
        }[command]
        assert cli.main(argv) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert (
            f"medlens {command}: error: " in err and f"'{model}' is not a" in err and f"({problem})" in err
        ), err


def test_generate_passes_decoding_options_and_prompt(experiment, image, tmp_path, monkeypatch):
    gen = RecordingGenerator()
    monkeypatch.setattr("medlens.models.generator.load_generator", lambda path: gen)
    out = tmp_path / "reports.txt"
    status = cli.main(
        [
            "generate",
            "--model",
            str(experiment / "decoder"),
            str(image),
            "--num-beams",
            "3",
            "--max-new-tokens",
            "5",
            "--repetition-penalty",
            "1.2",
            "--prompt",
            "Findings?",
            "--out",
            str(out),
        ]
    )
    assert status == cli.EXIT_OK
    ((images, prompts, generation),) = gen.calls
    assert generation == GenerationConfig(max_new_tokens=5, num_beams=3, repetition_penalty=1.2)
    assert prompts == ["Findings?"]
    assert out.read_text() == f"==> {image} <==\nRGB 48x32\n\n"  # 60x40 shrunk to the experiment's 48 px


def test_generate_jsonl_has_one_line_per_input_errors_included(experiment, image, monkeypatch, capsys):
    monkeypatch.setattr("medlens.models.generator.load_generator", lambda path: RecordingGenerator())
    status = cli.main(
        ["generate", "--model", str(experiment / "decoder"), str(image), "gone.png", "--format", "jsonl"]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == cli.EXIT_FAILED
    # no ood.safetensors in this folder: no score (a trained one has it)
    assert lines[0] == {"id": str(image), "image": str(image), "report": "RGB 48x32", "ood_score": None}
    assert lines[1]["id"] == "gone.png" and lines[1]["error"].startswith("gone.png: image file not found")


def test_info_prints_the_summary(experiment, capsys):
    assert cli.main(["info", str(experiment)]) == cli.EXIT_OK
    assert "decoder: not trained" in capsys.readouterr().out
    assert cli.main(["info", str(experiment), "--format", "json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["encoder"]["steps"] == 3


def test_outputs_never_destroy_what_the_command_did_not_create(experiment, image, tmp_path, capsys):
    enc = str(experiment / "encoder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    existing = tmp_path / "labels.jsonl"
    existing.write_text("earlier results\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(existing)
    refused = {
        "a non-empty folder": (
            ["export", "--model", enc, "--out", str(mine)],
            "already exists and is not empty",
        ),
        "the model's own folder": (
            ["export", "--model", enc, "--out", enc, "--overwrite"],
            "would be written over the model folder",
        ),
        "a folder holding the model": (
            ["export", "--model", enc, "--out", str(experiment), "--overwrite"],
            "would be written over the model folder",
        ),
        "an existing file": (
            ["classify", "--model", enc, str(image), "--out", str(existing)],
            "already exists; expected a new path, or --overwrite to replace it",
        ),
        "a device or pipe": (
            ["classify", "--model", enc, str(image), "--out", str(fifo), "--overwrite"],
            "exists and is not a regular file",
        ),
        "a link": (
            ["embed", "--model", enc, "--images", str(image.parent), "--out", str(link), "--overwrite"],
            "is not a regular file (a link)",
        ),
        "a file for a folder": (
            ["export", "--model", enc, "--out", str(existing), "--overwrite"],
            "exists and is not a folder",
        ),
        "the folder it runs in": (
            ["export", "--model", enc, "--out", ".", "--overwrite"],
            "names no output of its own",
        ),
    }
    for case, (argv, message) in refused.items():
        assert cli.main(argv) == cli.EXIT_USAGE, case
        err = capsys.readouterr().err
        assert "--out: " in err and message in err, (case, err)
    assert (
        mine / "notes.txt"
    ).read_text() == "the user's own file" and existing.read_text() == "earlier results\n"
    assert (experiment / "encoder" / "open_clip_model.safetensors").is_file() and fifo.exists()

    assert (
        cli.main(
            [
                "classify",
                "--model",
                enc,
                str(image),
                "--format",
                "jsonl",
                "--out",
                str(existing),
                "--overwrite",
            ]
        )
        == cli.EXIT_OK
    )  # consent given: replaced, whole
    assert json.loads(existing.read_text().splitlines()[0])["probabilities"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fifo",
        "labels.jsonl",
        "link.jsonl",
        "mine",
        "x.png",
    ]


def test_overwrite_replaces_only_what_medlens_wrote_and_never_an_input_or_the_working_folder(
    experiment, image, tmp_path, monkeypatch, capsys
):
    enc = str(experiment / "encoder")
    metrics = tmp_path / "encoder.json"
    metrics.write_text(json.dumps({"split": "test", "zero_shot": {"mean": {"auc": 0.9}}}))
    hub = ["export", "--model", enc, "--format", "hub", "--metrics", str(metrics), "--overwrite", "--out"]
    work = tmp_path / "work"
    (work / "scans").mkdir(parents=True)
    (work / "notes.txt").write_text("the user's own file")
    shutil.copy(image, work / "scans" / "a.png")
    manifest = work / "m.csv"
    manifest.write_text("path\nscans/a.png\n")
    other = tmp_path / "other_experiment" / "encoder"  # another run's trained model: not an export's output
    shutil.copytree(experiment / "encoder", other)
    monkeypatch.chdir(work)
    refused = {
        # --overwrite replaced any non-empty folder, and removed what it held
        "a folder medlens did not write": ([*hub, str(work / "scans")], "was not written by medlens"),
        # it held medlens.json, which --overwrite took for the mark of an export: the trained model was lost
        "another experiment's trained model": (
            [*hub, str(other)],
            f"'{other}' is a trained model's folder (it holds medlens.json), so --overwrite does not replace it",
        ),
        # the check was of the name "." only
        "the folder it runs in, by its path": ([*hub, str(work)], "is the folder the command runs in"),
        "a folder holding it": ([*hub, str(tmp_path)], "holds the folder the command runs in"),
        "an input image": (
            [
                "classify",
                "--model",
                enc,
                str(work / "scans" / "a.png"),
                "--out",
                "scans/a.png",
                "--overwrite",
            ],
            "is an input of the command",
        ),
        "the manifest it reads": (
            ["embed", "--model", enc, "--images", str(manifest), "--out", str(manifest), "--overwrite"],
            "is an input of the command",
        ),
        "the metrics it reads": ([*hub[:-2], "--out", str(metrics), "--format", "hub"], "is an input"),
        # was a FileExistsError traceback, once the images had been classified
        "a path under a file": (
            ["classify", "--model", enc, str(image), "--out", str(image / "labels.txt")],
            f"'{image}' is a file, not a folder",
        ),
    }
    for case, (argv, message) in refused.items():
        assert cli.main(argv) == cli.EXIT_USAGE, case
        err = capsys.readouterr().err
        assert "--out: " in err and message in err, (case, err)
    assert (work / "notes.txt").read_text() == "the user's own file" and (work / "scans" / "a.png").is_file()
    assert manifest.read_text() == "path\nscans/a.png\n" and image.is_file() and metrics.is_file()
    assert (other / "open_clip_model.safetensors").is_file()

    # what a previous export wrote is replaced with --overwrite, as documented
    assert cli.main([*hub, "shared"]) == cli.EXIT_OK and cli.main([*hub, "shared"]) == cli.EXIT_OK
    assert (work / "shared" / "README.md").is_file() and (work / "notes.txt").is_file()
    assert json.loads((work / "shared" / "export.json").read_text())["source"] == enc


def test_an_out_folder_that_cannot_be_written_is_said_before_any_work(
    experiment, image, tmp_path, monkeypatch, capsys
):
    # was a MedlensError only once every image had been classified (hours, for a large batch)
    closed = tmp_path / "closed"
    closed.mkdir()
    real_access = os.access
    # the tests run as root, who may write anywhere: the folder is read-only as it is for another user
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: str(path) != str(closed) and real_access(path, mode)
    )
    classified = []
    monkeypatch.setattr("medlens.inference.predict.classify_images", lambda *a, **k: classified.append(1))
    argv = [
        "classify",
        "--model",
        str(experiment / "encoder"),
        str(image),
        "--out",
        str(closed / "new" / "x.txt"),
    ]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--out: '{closed / 'new' / 'x.txt'}' cannot be written: '{closed}' is not writable" in err, err
    assert not classified and not (closed / "new").exists()


def _deny_reading(monkeypatch, *paths) -> None:
    """Reading ``paths`` fails as it does for a file of another user (the tests run as root, who may read all)."""
    import builtins
    import io

    denied, real = {str(p) for p in paths}, builtins.open

    def guarded(file, *args, **kwargs):
        if str(file) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)  # pathlib's read_text and read_bytes


def test_an_input_that_cannot_be_read_is_named_on_one_line_not_a_traceback(
    experiment, image, tmp_path, monkeypatch, capsys
):
    enc = tmp_path / "encoder"
    shutil.copytree(experiment / "encoder", enc)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{image}\n")
    metrics = tmp_path / "encoder.json"
    metrics.write_text(json.dumps({"split": "test", "zero_shot": {"mean": {"auc": 0.9}}}))
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("Cardiomegaly:\n  positive: [big heart]\n  negative: [normal heart]\n")
    scans = tmp_path / "scans"
    (scans / "closed").mkdir(parents=True)
    shutil.copy(image, scans / "a.png")
    out = str(tmp_path / "out.jsonl")
    cases = {  # an unreadable file (not UTF-8, not JSON: each has its own message)
        "model config": (
            ["classify", "--model", str(enc), str(image)],
            enc / "open_clip_config.json",
        ),
        "manifest": (
            ["embed", "--model", str(enc), "--images", str(manifest), "--out", str(tmp_path / "e.parquet")],
            manifest,
        ),
        "metrics": (
            ["export", "--model", str(enc), "--format", "hub", "--metrics", str(metrics), "--out", out],
            metrics,
        ),
        "prompt set": (
            [
                "classify",
                "--model",
                str(enc),
                str(image),
                "--labels",
                "Cardiomegaly",
                "--prompts",
                str(prompts),
            ],
            prompts,
        ),
        "experiment file": (["info", str(enc.parent)], enc / "medlens.json"),
    }
    for case, (argv, unreadable) in cases.items():
        with monkeypatch.context() as m:
            _deny_reading(m, unreadable)
            assert cli.main(argv) == cli.EXIT_FAILED, case
        err = capsys.readouterr().err
        assert f"medlens {argv[0]}: error: {unreadable}: cannot be read: Permission denied" in err, (
            case,
            err,
        )
        assert "Traceback" not in err

    # a folder of images with a subfolder that cannot be listed: named, never embedded without its images
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path) == str(scans / "closed"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    argv = ["embed", "--model", str(enc), "--images", str(scans), "--out", str(tmp_path / "s.parquet")]
    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{scans / 'closed'}: cannot be listed: Permission denied" in err, err
    assert not (tmp_path / "s.parquet").exists()


def test_export_names_a_metrics_file_that_is_not_there(experiment, tmp_path, capsys):
    argv = ["export", "--model", str(experiment / "encoder"), "--out", str(tmp_path / "onnx")]
    assert cli.main([*argv, "--metrics", str(tmp_path / "eval.json")]) == cli.EXIT_USAGE
    assert "--metrics: " in capsys.readouterr().err and not (tmp_path / "onnx").exists()


def test_a_hub_export_without_metrics_is_a_usage_error(experiment, tmp_path, capsys):
    argv = [
        "export",
        "--model",
        str(experiment / "encoder"),
        "--out",
        str(tmp_path / "hub"),
        "--format",
        "hub",
    ]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "--metrics: " in capsys.readouterr().err and not (tmp_path / "hub").exists()


def test_an_onnx_export_of_a_decoder_folder_says_it_is_not_an_encoder(tmp_path, capsys):
    # was: "records no zero-shot labels", or with --labels "no prompts for ..."
    decoder = tmp_path / "decoder"
    decoder.mkdir()
    (decoder / "config.json").write_text('{"model_type": "medlens_captioner"}')
    (decoder / "model.safetensors").write_bytes(b"")
    (decoder / "medlens.json").write_text('{"kind": "captioner"}')
    for extra in ([], ["--labels", "Cardiomegaly"]):
        argv = ["export", "--model", str(decoder), "--out", str(tmp_path / "onnx"), *extra]
        assert cli.main(argv) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert f"--model: '{decoder}' is not an encoder folder" in err and "--format hub" in err
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["-v", "info", "{exp}"], True),
        (["info", "{exp}", "-v"], True),  # was: "unrecognized arguments: -v", exit 2
        (["info", "--verbose", "{exp}"], True),
        (["--verbose", "info", "-v", "{exp}"], True),
        (["info", "{exp}"], False),
    ],
)
def test_verbose_is_accepted_before_and_after_the_command(experiment, monkeypatch, capsys, argv, verbose):
    seen = []
    monkeypatch.setattr(cli, "_setup_logging", seen.append)
    assert cli.main([a.format(exp=experiment) for a in argv]) == cli.EXIT_OK
    assert seen == [verbose]


def test_a_prompt_for_a_captioner_is_a_usage_error_not_silently_dropped(
    experiment, image, monkeypatch, capsys
):
    captioner = RecordingGenerator()
    captioner.reads_prompts = False
    monkeypatch.setattr("medlens.models.generator.load_generator", lambda path: captioner)
    argv = ["generate", "--model", str(experiment / "decoder"), str(image)]
    assert cli.main([*argv, "--prompt", "Findings?"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--prompt: " in err and "is a captioner, which takes no prompt" in err
    assert captioner.calls == []
    assert cli.main(argv) == cli.EXIT_OK and len(captioner.calls) == 1  # its own report, no prompt asked


def test_python_dash_m_medlens_runs_the_command(repo):
    # for a virtual environment that is not activated (its scripts not on PATH)
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "medlens", "info", "--help"],
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: medlens info"), proc.stderr


def test_generate_with_an_encoder_folder_says_it_is_an_encoder(experiment, image, capsys):
    # was: "medlens.json: kind: unknown decoder kind 'open_clip'"
    assert cli.main(["generate", "--model", str(experiment / "encoder"), str(image)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"'{experiment / 'encoder'}' is an encoder folder, not a decoder folder" in err


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(experiment, monkeypatch):
    # `medlens info results/demo | head -3` printed a BrokenPipeError traceback
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert cli.main(["info", str(experiment)]) == cli.EXIT_FAILED
