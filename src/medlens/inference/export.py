"""ONNX export of a trained encoder: the image tower and the text tower, each checked against PyTorch.

Each tower is exported as its own graph with a dynamic batch axis and L2-normalised outputs (what
``encode_image``/``encode_text`` return with ``normalize=True``). Before the folder appears, both
graphs are run in onnxruntime on inputs of another batch size than the one traced (seeded random
pixels; the tokenised label prompts) and must match PyTorch within ``atol`` on every feature entry.
The folder gets a model card (Hugging Face format) that extends the encoder's own with what a user of the
ONNX files needs: input size, resize, normalisation, the training preprocessing, and the label prompts; given
the encoder's evaluation (``eval/encoder.json``), its headline metrics go into the card's ``model-index``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.data.images import GREY_MODALITIES
from medlens.errors import DataError, MedlensError
from medlens.evaluate.zero_shot import build_prompts
from medlens.inference.inputs import Preprocessing
from medlens.io import atomic_dir, read_json

__all__ = ["export_onnx", "export_hub", "DEFAULT_ATOL", "IMAGE_FILE", "TEXT_FILE"]

logger = logging.getLogger(__name__)

# On unit-norm features fp32 ONNX Runtime agrees with PyTorch to ~1e-7 on the tiny encoder; fused
# kernels of large towers move entries by up to ~1e-5, so 1e-4 catches a wrong graph, not rounding.
DEFAULT_ATOL = 1e-4
DEFAULT_OPSET = 17
METRICS_EXPECTED = "an eval/encoder.json or eval/decoder.json object, as evaluate_* writes it"
IMAGE_FILE, TEXT_FILE = "image_encoder.onnx", "text_encoder.onnx"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "vocab.txt",
)
# open_clip's evaluation transform per resize_mode (open_clip.transform.image_transform)
_RESIZE = {
    "shortest": "resize the shortest side to fit and centre-crop to {w} x {h}",
    "longest": "resize the longest side to fit and pad to {w} x {h} (centred)",
    "squash": "resize to exactly {w} x {h} (aspect ratio not kept)",
}


class _Tower(nn.Module):
    """One tower of an open_clip model as a module (the exporter traces ``forward``)."""

    def __init__(self, model: nn.Module, tower: str):
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encode = self.model.encode_image if self.tower == "image" else self.model.encode_text
        return encode(x, normalize=True)  # [B, D]


def _export(tower: _Tower, example: torch.Tensor, path: Path, names: tuple[str, str], opset: int) -> None:
    with warnings.catch_warnings():
        # tracer and deprecation warnings of the TorchScript exporter; the graph is verified instead
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (example,),
            str(path),
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )  # the dynamo exporter needs onnxscript, which medlens does not depend on


def _max_diff(path: Path, tower: _Tower, x: torch.Tensor, input_name: str) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: x.numpy()})[0]
    with torch.no_grad():
        want = tower(x).float().numpy()
    if got.shape != want.shape:
        raise MedlensError(f"{path}: ONNX output shape {got.shape} != PyTorch {want.shape}")
    return float(np.abs(got - want).max())


def export_onnx(
    encoder_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    prep: Preprocessing,
    *,
    labels: list[str],
    templates: str,
    atol: float = DEFAULT_ATOL,
    opset: int = DEFAULT_OPSET,
    metrics: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export both towers of an encoder folder to ONNX, verify them, and write the model card.

    Args:
        encoder_dir: ``results/<experiment>/encoder``.
        out_dir: the export folder (replaced atomically).
        prep: the training preprocessing (recorded in the card).
        labels: zero-shot labels whose prompts are recorded and used to verify the text tower.
        templates: their prompt set.
        atol: largest allowed ``|onnx - torch|`` over feature entries.
        opset: ONNX opset version.
        metrics: ``evaluate_encoder``'s ``eval/encoder.json`` of this encoder, for the card's model-index.

    Returns:
        The export record also written to ``export.json`` (files, inputs, tolerance, differences).

    Raises:
        MedlensError: when a graph differs from PyTorch by more than ``atol`` (nothing is written).
    """
    # long: export, check against PyTorch and the model card of both towers, in the order they depend on
    import onnxruntime

    from medlens.inference.inputs import recorded_preprocessing
    from medlens.models.encoders import load_encoder

    encoder_dir, out_dir = Path(encoder_dir), Path(out_dir)
    _refuse_links(encoder_dir)
    recorded_preprocessing(encoder_dir)  # the card reads it after the export: a damaged record is named first
    encoder = load_encoder(encoder_dir, device="cpu")
    model = encoder.model.float()
    size = encoder.preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size  # open_clip allows (H, W)
    prompts = build_prompts(labels, templates)
    texts = list(dict.fromkeys(p for pos, neg in prompts.values() for p in (*pos, *neg)))
    tokens = encoder.tokenizer(texts)  # [P, C] int64
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, height, width, generator=generator)
    image, text = _Tower(model, "image").eval(), _Tower(model, "text").eval()
    with atomic_dir(out_dir) as tmp:
        # traced at batch 2, checked at other batch sizes: the dynamic axis is tested too
        _export(image, pixels[:2], tmp / IMAGE_FILE, ("pixel_values", "image_embeds"), opset)
        _export(text, tokens[:2], tmp / TEXT_FILE, ("input_ids", "text_embeds"), opset)
        diffs = {
            "image": _max_diff(tmp / IMAGE_FILE, image, pixels, "pixel_values"),
            "text": _max_diff(tmp / TEXT_FILE, text, tokens, "input_ids"),
        }
        bad = {k: v for k, v in diffs.items() if not v <= atol}
        if bad:
            raise MedlensError(
                f"{out_dir}: ONNX and PyTorch outputs differ by {bad} (> atol {atol}); nothing was written"
            )
        for name in ("open_clip_config.json", *_TOKENIZER_FILES):
            if (encoder_dir / name).is_file():
                shutil.copy(encoder_dir / name, tmp / name)
        record = {
            "format": "onnx",
            "opset": opset,
            "source": str(encoder_dir),
            "files": {
                IMAGE_FILE: {
                    "input": {"pixel_values": ["batch", 3, height, width], "dtype": "float32"},
                    "output": {"image_embeds": ["batch", int(encoder.model_cfg["embed_dim"])]},
                },
                TEXT_FILE: {
                    "input": {"input_ids": ["batch", int(tokens.shape[1])], "dtype": "int64"},
                    "output": {"text_embeds": ["batch", int(encoder.model_cfg["embed_dim"])]},
                },
            },
            "outputs_normalized": True,
            "preprocess_cfg": encoder.preprocess_cfg,
            "preprocessing": prep.as_dict(),
            "logit_scale": encoder.logit_scale,
            "logit_bias": encoder.logit_bias,
            "zero_shot": {
                "templates": templates,
                "prompts": {k: {"positive": p, "negative": n} for k, (p, n) in prompts.items()},
            },
            "verification": {
                "runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
                "atol": atol,
                "max_abs_diff": diffs,
                "image_batch": int(pixels.shape[0]),
                "text_batch": int(tokens.shape[0]),
                "inputs": "seeded N(0,1) pixels; the tokenised label prompts",
            },
        }
        (tmp / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        (tmp / "README.md").write_text(_model_card(encoder_dir, record, height, width, metrics))
    logger.info(
        "exported %s and %s to %s; max |onnx - torch| %s (atol %g)",
        IMAGE_FILE,
        TEXT_FILE,
        out_dir,
        diffs,
        atol,
    )
    return record


def export_hub(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metrics: str | os.PathLike,
) -> int:
    """Copy a model folder for sharing, its card's front matter extended with the evaluation's headline metrics
    (``model-index``) and its Evaluation section replaced by them.

    The pipeline's own folder is never changed (``evaluate_*`` run after ``train_*``, and a rule must not
    rewrite another's output); this copy is the one to upload.

    Args:
        model_dir: a model folder with a medlens model card (encoder or decoder).
        out_dir: the copy (replaced atomically).
        metrics: the model's ``eval/encoder.json`` or ``eval/decoder.json``.

    Returns:
        The number of metrics put in the card (also in the copy's ``export.json``, with the source folder).

    Raises:
        MedlensError: when ``model_dir`` has no model card or ``metrics`` none of the metrics cards carry.
    """
    from huggingface_hub import ModelCard

    from medlens.models.card import eval_results, render_model_card

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _refuse_links(model_dir)
    if not (model_dir / "README.md").is_file():
        raise MedlensError(f"{model_dir}: no README.md model card (a folder written by medlens has one)")
    _check_weights(model_dir)
    card = ModelCard.load(model_dir / "README.md")
    results = eval_results(read_json(metrics, expected=METRICS_EXPECTED), list(card.data.datasets or []))
    if not results:
        raise MedlensError(f"{metrics}: no zero-shot, retrieval, text or clinical metrics to put in the card")
    card.data.eval_results = results
    card.data.model_name = card.data.model_name or f"medlens {model_dir.name}"
    # the training card's Evaluation section says where the metrics would be; the copy has them
    body = _with_metrics(card.text, results, f"`{Path(metrics).name}` (medlens evaluation)")
    with atomic_dir(out_dir) as tmp:
        # copies, not hard links: a link changes the source's ctime, which Snakemake reads as a newer model
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        (tmp / "README.md").write_text(render_model_card(card.data, [body.strip()]))
        # the mark of an export: `medlens export --overwrite` replaces a folder holding it, and never a
        # training stage's own folder (which holds medlens.json alone)
        record = {
            "format": "hub",
            "source": str(model_dir),
            "metrics": str(metrics),
            "metrics_in_card": len(results),
        }
        (tmp / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("copied %s to %s with %d metrics in its model card", model_dir, out_dir, len(results))
    return len(results)


def _refuse_links(model_dir: Path) -> None:
    """DataError naming the first link in ``model_dir``: copying follows links, so a folder handed over with
    ``notes.txt -> ~/.ssh/id_rsa`` would put the key into the export, the folder that gets shared. medlens writes
    no links into model folders."""
    for root, dirs, files in os.walk(model_dir):
        for name in sorted([*dirs, *files]):
            path = Path(root) / name
            if path.is_symlink():
                raise DataError(
                    f"a link (to {os.readlink(path)}); an export copies what links point at",
                    file=str(path),
                    expected="a model folder of plain files, as medlens writes it; copy the file in if it belongs",
                )


def _check_weights(model_dir: Path) -> None:
    """Refuse to share a folder whose weights are missing or damaged (each safetensors header read, its size
    checked against the file's)."""
    from safetensors import SafetensorError, safe_open

    weights = sorted(model_dir.rglob("*.safetensors"))
    if not weights:
        raise DataError(
            "no weights in the model folder",
            file=str(model_dir),
            expected="the *.safetensors files training wrote",
        )
    for path in weights:
        try:
            with safe_open(str(path), framework="np"):
                pass
        except SafetensorError as e:
            raise DataError(
                f"damaged weights ({e})", file=str(path), expected="a complete safetensors file"
            ) from e


def _with_metrics(body: str, results: list[Any], source: str) -> str:
    """``body`` with its Evaluation section (where a training card says the metrics will be) replaced by them."""
    import re

    from medlens.models.card import evaluation_section

    section = "\n".join(evaluation_section(results, source)).rstrip()
    if "## Evaluation\n" not in body:
        return body.rstrip() + "\n\n" + section
    return re.sub(r"## Evaluation\n.*?(?=\n## |\Z)", lambda _: section, body, count=1, flags=re.S)


def _model_card(encoder_dir: Path, record: dict[str, Any], height: int, width: int, metrics) -> str:
    """The export's card: the encoder's own body, its ONNX section and, given them, the evaluation metrics."""
    from huggingface_hub import ModelCard

    from medlens.inference.inputs import read_medlens_json
    from medlens.models.card import card_metadata, eval_results, render_model_card

    own = encoder_dir / "README.md"
    body = ModelCard.load(own).text.strip() if own.is_file() else ""
    info = read_medlens_json(encoder_dir)
    datasets = sorted({e["dataset"] for e in info.get("preprocessing") or []})
    results = (
        eval_results(read_json(metrics, expected=METRICS_EXPECTED), datasets) if metrics is not None else []
    )
    cfg = info.get("config") or {}
    data = card_metadata(
        "onnx",
        info.get("preprocessing"),
        library_name="onnx",
        base_model=[cfg.get(k) for k in ("pretrained", "pretrained_image", "pretrained_text")],
        results=results,
        model_name=f"medlens encoder {cfg.get('preset', encoder_dir.name)} (ONNX)",
        tags=["open_clip", "clip"],
    )
    if results:
        body = _with_metrics(body, results, f"`{Path(metrics).name}` (evaluate_encoder)")
    return render_model_card(data, [body, "", _card_section(record, height, width)])


def _card_section(record: dict[str, Any], height: int, width: int) -> str:
    """The model card's ONNX section: how to feed the graphs and read their outputs."""
    pp, prep, zs, ver = (
        record["preprocess_cfg"],
        record["preprocessing"],
        record["zero_shot"],
        record["verification"],
    )
    image_io, text_io = record["files"][IMAGE_FILE], record["files"][TEXT_FILE]
    lines = [
        "## ONNX export",
        "",
        f"- `{IMAGE_FILE}`: `pixel_values` float32 {image_io['input']['pixel_values']} -> `image_embeds` "
        f"{image_io['output']['image_embeds']}, L2-normalised",
        f"- `{TEXT_FILE}`: `input_ids` int64 {text_io['input']['input_ids']} (the tokenizer of "
        f"`open_clip.get_tokenizer('local-dir:<this folder>')`) -> `text_embeds` {text_io['output']['text_embeds']}, "
        "L2-normalised",
        f"- input size: {width} x {height} px (width x height), RGB",
        f"- preprocessing as in training: decode {'grey, replicated to RGB' if prep['modality'] in GREY_MODALITIES else 'RGB'} "
        f"(modality `{prep['modality']}`), shrink the longest side to at most {prep['store_size']} px "
        f"(`medlens.data.images.prepare_image`), then "
        f"{_RESIZE[pp.get('resize_mode', 'shortest')].format(w=width, h=height)} ({pp['interpolation']})",
        f"- normalisation: pixels scaled to [0, 1], then (x - mean) / std per channel with mean {pp['mean']} "
        f"and std {pp['std']}",
        f"- zero-shot: logits = {record['logit_scale']:.4g} x cosine(image, prompt side); probability = "
        f"exp(pos) / (exp(pos) + exp(neg)); each side is the renormalised mean of its prompts' embeddings",
        f"- verified: {ver['runtime']}, max |onnx - torch| image {ver['max_abs_diff']['image']:.2e}, text "
        f"{ver['max_abs_diff']['text']:.2e} (tolerance {ver['atol']:g}, batches {ver['image_batch']} and "
        f"{ver['text_batch']})",
        "",
        f"### Label prompts (set `{zs['templates']}`)",
        "",
        "| label | positive | negative |",
        "|---|---|---|",
    ]
    lines += [
        f"| {label} | {'; '.join(p['positive'])} | {'; '.join(p['negative'])} |"
        for label, p in zs["prompts"].items()
    ]
    return "\n".join(lines) + "\n"
