"""The ``medlens`` command: run trained models on new images, export encoders, summarise experiments.

Subcommands are thin: they parse options, call :mod:`medlens.inference`, and write the records.
Every image goes through the preprocessing of training (``medlens.data.images.prepare_image``),
with the modality and store size read from the experiment the model came from.

Exit status: 0 when everything worked; 1 when an input or the model failed (every other input is
still processed, and each failure is reported on stderr naming its file) or the reader of stdout went
away (``| head``); 2 for usage errors (bad options, a folder that is not a model, an unknown prompt set or
label).
"""

# long: one parser and one thin function per subcommand (generate, classify, embed, info, export)
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from medlens import layout
from medlens.errors import ConfigError, MedlensError
from medlens.io import atomic_path, check_output, read_json

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# what every folder `export` writes holds (ONNX and hub); --overwrite replaces no other folder, so never a
# trained model's own folder (it holds medlens.json, not export.json)
EXPORT_MARKS = ("export.json",)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _add_preprocessing(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing (read from the model's experiment when not given)")
    g.add_argument(
        "--modality", help="modality of the inputs, e.g. chest_xray (decides grey or RGB decoding)"
    )
    g.add_argument("--store-size", type=_positive_int, help="longest side the training images were stored at")
    p.add_argument(
        "--batch-size", type=_positive_int, default=16, help="images per forward pass (default 16)"
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "jsonl"), default="text", help="output format (default text)")
    p.add_argument(
        "--out", type=Path, help="write to this file instead of stdout (a new file unless --overwrite)"
    )
    _add_overwrite(p)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (never a model folder)"
    )


_VERBOSE_HELP = "log progress and library warnings"


def _verbose_after_the_command() -> argparse.ArgumentParser:
    """A parent parser giving each subcommand ``-v`` (``medlens generate -v ...``); its default is SUPPRESS, so
    that it never overwrites a ``-v`` given before the command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    return parent


def _add_export(sub, verbose: argparse.ArgumentParser) -> None:
    """The ``export`` subcommand (apart from build_parser, which would pass 80 lines)."""
    p = sub.add_parser(
        "export", parents=[verbose], help="encoder towers as ONNX, or a model folder to share (--format hub)"
    )
    p.add_argument("--model", type=Path, required=True, help="model folder, results/<experiment>/<stage>")
    p.add_argument("--format", choices=("onnx", "hub"), default="onnx", help="onnx (an encoder) or hub")
    p.add_argument(
        "--out", type=Path, required=True, help="folder to write (a new or empty one unless --overwrite)"
    )
    _add_overwrite(p)
    p.add_argument(
        "--atol", type=_positive_float, help="largest allowed |export - torch| per feature (default 1e-4)"
    )
    p.add_argument("--opset", type=_positive_int, help="ONNX opset (default 17)")
    p.add_argument(
        "--labels", nargs="+", help="labels whose prompts the model card records (default: evaluated ones)"
    )
    p.add_argument("--prompts", help="their prompt set (default: the set the encoder was evaluated with)")
    p.add_argument("--metrics", type=Path, help="the model's eval/<stage>.json, for the card's model-index")
    g = p.add_argument_group(
        "preprocessing recorded in the model card (read from the experiment when not given)"
    )
    g.add_argument("--modality")
    g.add_argument("--store-size", type=_positive_int)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used to document them)."""
    parser = argparse.ArgumentParser(
        prog="medlens",
        description="Run trained medlens models on new images, export encoders, summarise experiments.",
        epilog="exit status: 0 ok; 1 when an input or the model failed (the other inputs are still processed); "
        "2 for usage errors",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    verbose = _verbose_after_the_command()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "generate", parents=[verbose], help="write a report for each image with a trained decoder"
    )
    p.add_argument("--model", type=Path, required=True, help="decoder folder, results/<experiment>/decoder")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG/16-bit/TIFF/DICOM files")
    p.add_argument("--num-beams", type=_positive_int, help="beam width; 1 is greedy")
    p.add_argument("--max-new-tokens", type=_positive_int, help="longest report, in tokens")
    p.add_argument("--repetition-penalty", type=_positive_float, help=">1 discourages repeated tokens")
    p.add_argument(
        "--prompt",
        help="user turn for VLM decoders (default: the one they were trained with); a captioner takes none",
    )
    _add_output(p)
    _add_preprocessing(p)

    p = sub.add_parser(
        "classify", parents=[verbose], help="zero-shot probability of each label for each image"
    )
    p.add_argument("--model", type=Path, required=True, help="encoder folder, results/<experiment>/encoder")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG/16-bit/TIFF/DICOM files")
    p.add_argument(
        "--labels", nargs="+", help="labels to score (default: the ones the encoder was evaluated on)"
    )
    p.add_argument(
        "--prompts",
        help="prompt set name under resources/prompts or a YAML file "
        "(default: the set the encoder was evaluated with)",
    )
    _add_output(p)
    _add_preprocessing(p)

    p = sub.add_parser("embed", parents=[verbose], help="write image (and text) embeddings to a parquet file")
    p.add_argument("--model", type=Path, required=True, help="encoder folder, results/<experiment>/encoder")
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        help="a folder (searched recursively) or a manifest CSV with columns path[, id, text]",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="the parquet file to write (a new file unless --overwrite)"
    )
    _add_overwrite(p)
    p.add_argument("--text", action="store_true", help="also embed the manifest's 'text' column")
    _add_preprocessing(p)

    p = sub.add_parser("info", parents=[verbose], help="summarise what an experiment produced")
    p.add_argument("experiment", type=Path, metavar="EXPERIMENT", help="results/<experiment>")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")

    _add_export(sub, verbose)
    return parser


class _Report:
    """Failures reported on stderr as they are found, counted for the exit status."""

    def __init__(self, command: str):
        self.command, self.failed = command, 0

    def failures(self, failures) -> None:
        for f in failures:
            self.failed += 1
            print(f"medlens {self.command}: error: {f.error}", file=sys.stderr)

    def far_from_training(self, records: list[dict[str, Any]]) -> None:
        """A warning for each image far outside the model's training images (``ood_score``, medlens.models.ood)."""
        from medlens.models.ood import OOD_WARN_AT

        for rec in records:
            score = rec.get("ood_score")
            if score is not None and score > OOD_WARN_AT:
                print(
                    f"medlens {self.command}: warning: {rec['image']} lies far outside the images this model was "
                    f"trained on (out-of-distribution score {score:.1f}; 1 is the 99th percentile of held-out "
                    f"images like its training ones, warnings start at {OOD_WARN_AT:g}): its output may mean "
                    "nothing",
                    file=sys.stderr,
                )

    def status(self, total: int) -> int:
        if self.failed:
            print(f"medlens {self.command}: {self.failed} of {total} inputs failed", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK


def _write(records: list[dict[str, Any]], failures, fmt: str, out: Path | None, text_block) -> None:
    """Records as JSON lines (failures too, with their error) or as readable blocks; a file is written
    whole or not at all."""

    def write(stream: TextIO) -> None:
        if fmt == "jsonl":
            for rec in [*records, *({"id": f.id, "image": f.path, "error": f.error} for f in failures)]:
                stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            for rec in records:
                stream.write(f"==> {rec['image']} <==\n{text_block(rec)}\n\n")

    if out is None:
        write(sys.stdout)
        return
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        write(stream)


def _check_out(args: argparse.Namespace) -> None:
    """A file ``--out`` may be new, or replaced with ``--overwrite``; never a device, a link, the model or an
    input (an image, the manifest, a prompt file)."""
    if args.out is not None:
        images = args.images if isinstance(args.images, list) else [args.images]
        prompts = getattr(args, "prompts", None)
        inputs = [*images, *([prompts] if prompts and Path(prompts).is_file() else [])]
        check_output(args.out, overwrite=args.overwrite, protect=[args.model], inputs=inputs)


def _ood_line(record: dict[str, Any]) -> str:
    score = record.get("ood_score")
    return (
        ""
        if score is None
        else f"\n(out-of-distribution score {score:.2f}; 1 = 99th percentile of held-out training images)"
    )


def _decoder_ood(model: Path, generator, items, prep, batch_size: int) -> dict[str, float] | None:
    """Scores of the images in the decoder's own image space (the captioner's tower, or the VLM itself), when the
    folder records its training images."""
    from medlens.inference.predict import ood_scores
    from medlens.models.ood import load_ood

    scorer = load_ood(model)
    if scorer is None:
        return None
    if (model / layout.TOWER).is_dir():
        from medlens.models.captioner import ImageTower

        return ood_scores(ImageTower(model / layout.TOWER), items, prep, scorer, batch_size=batch_size)
    if hasattr(generator, "encode_images"):
        return ood_scores(generator, items, prep, scorer, batch_size=batch_size)
    return None


def _generate(args: argparse.Namespace) -> int:
    from medlens.inference import list_images, resolve_preprocessing
    from medlens.inference.predict import generate_reports, generation_settings, training_prompt
    from medlens.models.generator import load_generator

    _check_out(args)
    prep = resolve_preprocessing(args.model, modality=args.modality, store_size=args.store_size)
    generation, _ = generation_settings(
        args.model,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
    )
    generator = load_generator(args.model)
    if args.prompt is not None and not getattr(generator, "reads_prompts", True):
        # a captioner writes its report from the image alone: a prompt would be dropped without a word
        raise ConfigError(
            f"'{args.model}' is a captioner, which takes no prompt",
            key="--prompt",
            expected="no --prompt for this model (it is for VLM decoders)",
        )
    items = list_images(args.images)
    ood = _decoder_ood(args.model, generator, items, prep, args.batch_size)
    records, failures = generate_reports(
        generator,
        items,
        prep,
        generation=generation,
        prompt=args.prompt or training_prompt(args.model),
        batch_size=args.batch_size,
    )
    for rec in records:
        rec["ood_score"] = ood.get(rec["image"]) if ood is not None else None
    report = _Report("generate")
    report.failures(failures)
    report.far_from_training(records)
    _write(records, failures, args.format, args.out, lambda r: r["report"] + _ood_line(r))
    return report.status(len(items))


def _classify(args: argparse.Namespace) -> int:
    from medlens.inference import list_images, resolve_preprocessing
    from medlens.inference.predict import classify_images, zero_shot_setup
    from medlens.models.encoders import load_encoder
    from medlens.models.ood import load_ood

    _check_out(args)
    encoder = load_encoder(args.model)  # first: a folder that is not an encoder is the clearest error
    labels, templates = zero_shot_setup(args.model, args.labels, args.prompts)
    prep = resolve_preprocessing(args.model, modality=args.modality, store_size=args.store_size)
    items = list_images(args.images)
    records, failures = classify_images(
        encoder, items, prep, labels, templates, batch_size=args.batch_size, ood=load_ood(args.model)
    )
    report = _Report("classify")
    report.failures(failures)
    report.far_from_training(records)
    width = max(len(lab) for lab in labels)
    _write(
        records,
        failures,
        args.format,
        args.out,
        lambda r: (
            "\n".join(f"{lab:<{width}}  {p:.4f}" for lab, p in r["probabilities"].items()) + _ood_line(r)
        ),
    )
    return report.status(len(items))


def _embed(args: argparse.Namespace) -> int:
    from medlens.inference import list_images, resolve_preprocessing
    from medlens.inference.predict import embed_images
    from medlens.models.encoders import load_encoder
    from medlens.models.ood import load_ood

    _check_out(args)
    items = list_images(args.images, with_text=args.text)
    prep = resolve_preprocessing(args.model, modality=args.modality, store_size=args.store_size)
    encoder = load_encoder(args.model)
    written, failures = embed_images(
        encoder,
        items,
        prep,
        args.out,
        with_text=args.text,
        batch_size=args.batch_size,
        model_dir=str(args.model),
        ood=load_ood(args.model),
    )
    report = _Report("embed")
    report.failures(failures)
    print(
        f"wrote {written} embeddings to {args.out}" if written else "no image could be read; nothing written",
        file=sys.stderr,
    )
    return report.status(len(items))


def _info(args: argparse.Namespace) -> int:
    from medlens.inference.info import format_summary, summarise_experiment

    summary = summarise_experiment(args.experiment)
    print(json.dumps(summary, indent=2, default=str) if args.format == "json" else format_summary(summary))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from medlens.inference import resolve_preprocessing
    from medlens.inference.export import DEFAULT_ATOL, DEFAULT_OPSET, METRICS_EXPECTED, export_onnx
    from medlens.inference.predict import zero_shot_setup
    from medlens.models.encoders import check_encoder_folder

    check_output(
        args.out,
        folder=True,
        overwrite=args.overwrite,
        protect=[args.model],
        inputs=[p for p in (args.metrics, args.prompts) if p and Path(p).is_file()],
        marks=EXPORT_MARKS,
    )
    if args.metrics is not None and not args.metrics.is_file():
        raise ConfigError(f"'{args.metrics}' is not a file", key="--metrics", expected="an eval/<stage>.json")
    if args.metrics is not None:  # read now: a wrong file stops the command before any export work
        read_json(args.metrics, expected=METRICS_EXPECTED)
    if args.format == "hub":
        return _export_hub(args)
    try:  # first: a decoder folder would otherwise be told it records no zero-shot labels
        check_encoder_folder(args.model)
    except ConfigError as e:
        raise ConfigError(
            e.problem, key="--model", expected=f"{e.expected}; --format hub copies any model folder"
        ) from e
    labels, templates = zero_shot_setup(args.model, args.labels, args.prompts)
    prep = resolve_preprocessing(args.model, modality=args.modality, store_size=args.store_size)
    record = export_onnx(
        args.model,
        args.out,
        prep,
        labels=labels,
        templates=templates,
        atol=args.atol or DEFAULT_ATOL,
        opset=args.opset or DEFAULT_OPSET,
        metrics=args.metrics,
    )
    ver = record["verification"]
    print(
        f"exported {', '.join(record['files'])} to {args.out} (opset {record['opset']}); max |onnx - torch| "
        f"image {ver['max_abs_diff']['image']:.2e}, text {ver['max_abs_diff']['text']:.2e} "
        f"<= {ver['atol']:g}; model card {args.out / 'README.md'}"
    )
    return EXIT_OK


def _export_hub(args: argparse.Namespace) -> int:
    from medlens.inference.export import export_hub

    if args.metrics is None:
        raise ConfigError("--format hub puts the evaluation in the card", key="--metrics", expected="a file")
    results = export_hub(args.model, args.out, metrics=args.metrics)
    print(f"copied {args.model} to {args.out}; model card {args.out / 'README.md'} with {results} metrics")
    return EXIT_OK


_COMMANDS = {"generate": _generate, "classify": _classify, "embed": _embed, "info": _info, "export": _export}


class _DropMisleading(logging.Filter):
    """open_clip warns "initialized randomly" for ``local-dir:`` models that load_encoder fills right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _setup_logging(verbose: bool) -> None:
    from medlens.log import setup_logging

    setup_logging(None, level=logging.INFO if verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropMisleading())
    if not verbose:
        import warnings

        warnings.simplefilter("ignore")  # library deprecation notes are noise to someone running a model
        # read by transformers and huggingface_hub when they are imported (importing them here costs a second)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medlens`` command; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"medlens {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MedlensError as e:
        print(f"medlens {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_FAILED
    except OSError as e:
        # an input the user cannot read (permissions, EIO, a folder where a file goes): one line naming it,
        # like every other input error (outputs' write faults are MedlensErrors already, medlens.io)
        problem = f"{e.filename}: cannot be read: {e.strerror}" if e.filename else f"{type(e).__name__}: {e}"
        print(f"medlens {args.command}: error: {problem}", file=sys.stderr)
        return EXIT_FAILED


def _stdout_gone() -> None:
    """The reader of stdout went away (``medlens classify ... | head``): stop without a traceback, and point
    stdout at /dev/null so that flushing it at exit raises nothing either (Python's advice:
    https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    # a stdout without a file descriptor (a test's capture) has nothing to flush at exit
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
