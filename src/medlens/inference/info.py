"""``medlens info``: what one experiment folder (``results/<experiment>``) holds.

Read from the files the stages wrote (``data/split.json``, each model's ``medlens.json`` and
``metrics.csv``, ``eval/*.json``, ``results/benchmarks``), never recomputed; a stage that has
not run shows as missing, not as zero. Parameter counts come from the safetensors headers, so
no weights are loaded.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from medlens import layout
from medlens.config import dig
from medlens.environment import LockDifferences, describe_machine
from medlens.errors import ConfigError, DataError
from medlens.io import read_json

__all__ = ["summarise_experiment", "format_summary"]

_STAGES = (
    "split",
    "convert_to_chat_format",
    "train_encoder",
    "train_decoder",
    "evaluate_encoder",
    "evaluate_decoder",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _last_row(path: Path, delimiter: str = ",") -> dict[str, float] | None:
    """The last row of a metrics.csv or Snakemake benchmark TSV, its numeric cells as floats."""
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot be read ({e})", file=str(path), expected="the table medlens wrote") from e
    if not rows:
        return None
    out = {}
    for key, value in rows[-1].items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue  # empty cells (metrics not logged at that step) and h:m:s strings
    return out


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _parameters(path: Path) -> int | None:
    """Number of parameters in a safetensors file, from its header (None for other formats)."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    total = 0
    try:
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
    except SafetensorError as e:
        raise DataError(
            f"damaged weights ({e})", file=str(path), expected="a complete safetensors file"
        ) from e
    return total


def _checkpoints(folder: Path) -> list[dict[str, Any]]:
    """Weight files of a model folder (its sub-folders too, e.g. a decoder's ``encoder_final``)."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and p.name != "training_args.bin"
    )
    return [
        {"file": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "parameters": _parameters(p)}
        for p in files
    ]


def _model(folder: Path) -> dict[str, Any] | None:
    if not folder.is_dir():
        return None
    info_path = folder / "medlens.json"
    info = read_json(info_path) if info_path.is_file() else {}
    described = {
        k: info.get(k)
        for k in (
            "kind",
            "steps",
            "best_metric",
            "best_value",
            "best_step",
            "summary",
            "zero_shot",
            "weights",
        )
        if info.get(k) is not None
    }
    return {
        "path": str(folder),
        **described,
        "config": info.get("config"),
        "environment": info.get("environment"),
        "last_metrics": _last_row(folder / "metrics.csv"),
        "checkpoints": _checkpoints(folder),
        "bytes": _size(folder),
    }


def _ci(section: Any, key: str = "auc") -> dict[str, Any] | None:
    if not isinstance(section, dict) or section.get(key) is None:
        return None
    return {k: section.get(k) for k in (key, "ci_low", "ci_high")}


def _evaluation(exp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    enc_path, dec_path = (
        layout.in_experiment(exp, layout.ENCODER_EVAL),
        layout.in_experiment(exp, layout.DECODER_EVAL),
    )
    if enc_path.is_file():
        enc = read_json(enc_path)
        out["encoder"] = {
            "split": enc.get("split"),
            "n": enc.get("n"),
            "zero_shot_auc": _ci(dig(enc, "zero_shot.mean")),
            "retrieval": {
                d: {
                    k: dig(enc, f"retrieval.{d}.{k}.value")
                    for k in dig(enc, f"retrieval.{d}") or {}
                    if k.startswith("recall@")
                }
                for d in ("image_to_text", "text_to_image")
            },
            "linear_probe_auc": {k: _ci(v.get("mean")) for k, v in (enc.get("linear_probe") or {}).items()},
            "external_zero_shot_auc": {
                k: _ci(dig(v, "zero_shot.mean")) for k, v in (enc.get("external") or {}).items()
            },
            "prompt_set": dig(enc, "protocol.templates"),
        }
    if dec_path.is_file():
        dec = read_json(dec_path)
        out["decoder"] = {
            "split": dec.get("split"),
            "n": dec.get("n"),
            "text": {
                k: v
                for k, v in (dig(dec, "overall.text") or {}).items()
                if k != "n" and (v is None or isinstance(v, int | float))
            },
            "clinical_micro_f1": {
                k: dig(dec, f"overall.clinical.{k}.micro.f1") for k in ("chexpert14", "chexpert5")
            },
            "labeler": dig(dec, "overall.clinical.labeler"),
        }
    return out


def _environments(
    folder: Path, encoder: dict[str, Any] | None, decoder: dict[str, Any] | None
) -> dict[str, Any]:
    """The environment each stage recorded (``medlens.environment.record``): lock, its hash, every package."""
    out = {
        "train_encoder": (encoder or {}).get("environment"),
        "train_decoder": (decoder or {}).get("environment"),
    }
    for stage, template in (
        ("evaluate_encoder", layout.ENCODER_EVAL),
        ("evaluate_decoder", layout.DECODER_EVAL),
    ):
        path = layout.in_experiment(folder, template)
        out[stage] = read_json(path).get("environment") if path.is_file() else None
    return out


def summarise_experiment(exp_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything ``medlens info`` shows about ``results/<experiment>``.

    Returns:
        ``{"experiment", "path", "data", "encoder", "decoder", "evaluation", "environments", "benchmarks",
        "bytes"}``; a part whose stage has not run is None (or empty).

    Raises:
        ConfigError: when the folder holds none of an experiment's outputs.
    """
    exp = Path(exp_dir)
    parts = [layout.in_experiment(exp, t).parent for t in (layout.PAIRS, layout.ENCODER_EVAL)]
    parts += [layout.in_experiment(exp, t) for t in (layout.ENCODER, layout.DECODER)]
    if not exp.is_dir() or not any(p.exists() for p in parts):
        raise ConfigError(
            f"'{exp}' is not an experiment folder",
            expected="results/<experiment> holding data/, encoder/, decoder/ or eval/",
        )
    split_path = layout.in_experiment(exp, layout.SPLIT)
    split = read_json(split_path) if split_path.is_file() else None
    benchmarks = {
        stage: _last_row(exp.parent.parent / layout.benchmark(stage, exp.name), "\t") for stage in _STAGES
    }
    encoder = _model(layout.in_experiment(exp, layout.ENCODER))
    decoder = _model(layout.in_experiment(exp, layout.DECODER))
    return {
        "experiment": exp.name,
        "path": str(exp),
        "data": None
        if split is None
        else {
            "rows_per_split": split.get("rows_per_split"),
            "patients": split.get("patients"),
            "dropped": split.get("dropped"),
        },
        "encoder": encoder,
        "decoder": decoder,
        "evaluation": _evaluation(exp),
        "environments": _environments(exp, encoder, decoder),
        "benchmarks": {k: v for k, v in benchmarks.items() if v is not None},
        "bytes": _size(exp),
    }


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "auc" in value:
        return f"{value['auc']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "missing" if value is None else str(value)


def _model_lines(title: str, model: dict[str, Any] | None) -> list[str]:
    if model is None:
        return [f"{title}: not trained"]
    cfg = model.get("config") or {}
    head = f"{title}: {model['path']} ({_human(model['bytes'])})"
    lines = [
        head,
        f"  kind {model.get('kind', 'open_clip')}, preset {cfg.get('preset')}, "
        f"model {cfg.get('model') or cfg.get('vision_model')}",
    ]
    if "steps" in model:
        lines.append(
            f"  {model['steps']} steps; best {model.get('best_metric')} = {_fmt(model.get('best_value'))} "
            f"at step {model.get('best_step')}"
        )
    if "summary" in model:
        lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in model["summary"].items()))
    for ck in model["checkpoints"]:
        params = f", {ck['parameters']:,} parameters" if ck["parameters"] is not None else ""
        lines.append(f"  checkpoint {ck['file']}: {_human(ck['bytes'])}{params}")
    return lines


def _environment_lines(environments: dict[str, Any]) -> list[str]:
    """Each stage's lock and whether it matched, then every package of the first stage that recorded them."""
    lines, packages = [], None
    for stage, rec in environments.items():
        if rec is None:
            lines.append(f"environment of {stage}: not recorded")
            continue
        if not rec.get("lock"):
            state = "and no lock"
        elif rec.get("matches_lock"):
            state = "as locked"
        else:
            state = "DIFFERING FROM THE LOCK: " + "; ".join(
                LockDifferences(**(rec.get("differences") or {})).lines()
            )
        lines.append(
            f"environment of {stage}: lock {rec.get('lock')} sha256 {str(rec.get('lock_sha256'))[:12]}, "
            f"Python {rec.get('python')}, {len(rec.get('packages') or {})} packages {state}"
        )
        if rec.get("machine"):
            lines.append(f"  ran on {describe_machine(rec['machine'])}")
        packages = packages or (stage, rec.get("packages"))
    if packages and packages[1]:
        lines.append(f"packages of {packages[0]}: " + ", ".join(f"{k}=={v}" for k, v in packages[1].items()))
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines (``--format json`` prints the dict itself)."""
    lines = [f"experiment {summary['experiment']}: {summary['path']} ({_human(summary['bytes'])})"]
    data = summary["data"]
    lines.append(
        "data: not split"
        if data is None
        else f"data: {data['rows_per_split']} rows per split, {data['patients']} patients, "
        f"{data['dropped']} dropped"
    )
    lines += _model_lines("encoder", summary["encoder"])
    lines += _model_lines("decoder", summary["decoder"])
    enc, dec = summary["evaluation"].get("encoder"), summary["evaluation"].get("decoder")
    if enc:
        lines.append(
            f"encoder evaluation ({enc['split']}, n={enc['n']}, prompts {enc['prompt_set']}): "
            f"zero-shot AUC {_fmt(enc['zero_shot_auc'])}"
        )
        for direction, recalls in enc["retrieval"].items():
            lines.append(f"  {direction}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in recalls.items()))
        for name, value in enc["linear_probe_auc"].items():
            lines.append(f"  linear probe {name}: AUC {_fmt(value)}")
        for name, value in enc["external_zero_shot_auc"].items():
            lines.append(f"  external {name}: zero-shot AUC {_fmt(value)}")
    else:
        lines.append("encoder evaluation: missing")
    if dec:
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in dec["text"].items())
        clinical = ", ".join(f"{k} {_fmt(v)}" for k, v in dec["clinical_micro_f1"].items())
        lines += [
            f"decoder evaluation ({dec['split']}, n={dec['n']}): {text}",
            f"  clinical micro-F1 ({dec['labeler']} labeler): {clinical}",
        ]
    else:
        lines.append("decoder evaluation: missing")
    lines += _environment_lines(summary["environments"])
    if summary["benchmarks"]:
        lines.append(
            "run time: " + ", ".join(f"{k} {_fmt(v.get('s'))} s" for k, v in summary["benchmarks"].items())
        )
    return "\n".join(lines)
