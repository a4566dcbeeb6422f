"""Model cards in the Hugging Face format for every model folder medlens writes.

A card is ``README.md`` with YAML front matter (``huggingface_hub.ModelCardData``: ``library_name``,
``license``, ``datasets``, ``tags``, ``pipeline_tag``, ``base_model`` and, once the model is evaluated,
``model-index``) and a body that says what the model was trained on and what it must not be used for.

The licence is the training data's: each dataset's adapter (recorded by ``prepare_datasets`` and copied
into ``medlens.json``'s ``preprocessing``) is looked up in :data:`DATA_LICENSES`; a dataset medlens knows
no licence for is called so rather than guessed. Training cards carry no metrics (the evaluation runs after
training, and a rule never rewrites another rule's output); they say where the metrics are written, and
:func:`eval_results` turns an ``eval/encoder.json`` or ``eval/decoder.json`` into ``model-index`` entries for
cards written later (``medlens export``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from medlens.io import atomic_path

__all__ = [
    "DataLicense",
    "DATA_LICENSES",
    "SYNTHETIC_ADAPTERS",
    "card_metadata",
    "training_data_section",
    "eval_results",
    "evaluation_section",
    "render_model_card",
    "write_model_card",
    "decoder_model_card",
]

SYNTHETIC_ADAPTERS = frozenset({"synthetic_cxr"})


@dataclass(frozen=True)
class DataLicense:
    """A dataset's licence as the Hub names it (``license``, or ``other`` with ``license_name``/``link``)."""

    license: str
    name: str | None = None
    link: str | None = None


# Licences medlens can state for its adapters' datasets; others are reported as unknown, never guessed.
DATA_LICENSES = {
    # rendered by medlens itself (medlens.data.phantom): medlens's own licence
    "synthetic_cxr": DataLicense("apache-2.0"),
    "chest_xray_pneumonia": DataLicense("cc-by-4.0", link="https://data.mendeley.com/datasets/rscbjbr9sj/2"),
    "nih_chest_xray": DataLicense("cc0-1.0", link="https://www.kaggle.com/datasets/nih-chest-xrays/data"),
    "nih_chest_xray_sample": DataLicense(
        "cc0-1.0", link="https://www.kaggle.com/datasets/nih-chest-xrays/sample"
    ),
    "pad_ufes_20": DataLicense("cc-by-4.0", link="https://data.mendeley.com/datasets/zr7vgbcyr2/1"),
    "mimic_cxr": DataLicense(
        "other",
        "physionet-credentialed-health-data-1.5.0",
        "https://physionet.org/content/mimic-cxr-jpg/view-license/2.1.0/",
    ),
    "chexpert": DataLicense(
        "other",
        "stanford-chexpert-research-use-agreement",
        "https://stanfordmlgroup.github.io/competitions/chexpert/",
    ),
}

_PIPELINE = {
    "open_clip": "zero-shot-image-classification",
    "onnx": "zero-shot-image-classification",
    "captioner": "image-to-text",
    "vlm": "image-text-to-text",
}
_NOT_FOR = (
    "Research use only. This model is not a medical device and has not been validated clinically: it must "
    "not be used to diagnose, triage, or write or check reports on patients, nor on images unlike its "
    "training data without new evaluation."
)
_SYNTHETIC_WARNING = (
    "**Trained on synthetic phantoms.** Its training images are chest radiograph phantoms rendered by "
    "medlens (`synthetic_cxr`), not images of patients. Applied to a real radiograph it gives fluent, "
    "confident and wrong output. It exists to test the pipeline and is not for clinical use."
)


def _licence(entries: list[dict[str, Any]]) -> DataLicense:
    """One licence for the card: the datasets' common one, else ``other`` (each is listed in the body)."""
    found = {DATA_LICENSES.get(e.get("adapter") or "") for e in entries}
    if None in found or not found:
        return DataLicense("other", "unknown")
    if len(found) == 1:
        return found.pop()
    return DataLicense("other", "several")


def _hub_id(value: str | None) -> str | None:
    """A Hub repository id of a pretrained start: ``hf-hub:<repo>``, or a timm weights name (``arch.tag``)."""
    if not value:
        return None
    if value.startswith("hf-hub:"):
        return value.removeprefix("hf-hub:")
    if value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")) or os.path.exists(value):
        return None  # a checkpoint file or folder of this machine
    if "/" not in value and "." in value:
        return f"timm/{value}"
    if value.count("/") == 1:
        return value
    return None


def card_metadata(
    kind: str,
    preprocessing: list[dict[str, Any]] | None,
    *,
    library_name: str,
    base_model: list[str | None] | None = None,
    results: list[Any] | None = None,
    model_name: str | None = None,
    tags: list[str] | None = None,
):
    """The front matter of a card.

    Args:
        kind: ``open_clip``, ``onnx``, ``captioner`` or ``vlm`` (decides ``pipeline_tag``).
        preprocessing: ``medlens.json``'s ``preprocessing`` (dataset, adapter, modality, rows).
        library_name: ``open_clip``, ``transformers``, ``peft`` or ``onnx``.
        base_model: the pretrained starts (Hub ids, ``hf-hub:`` sources or timm names; others are dropped).
        results: ``model-index`` entries (:func:`eval_results`); they need ``model_name``.
        model_name: the model's name in ``model-index``.
        tags: more tags.

    Returns:
        A ``huggingface_hub.ModelCardData``.
    """
    from huggingface_hub import ModelCardData

    entries = preprocessing or []
    licence = _licence(entries)
    modalities = sorted({e["modality"] for e in entries if e.get("modality")})
    synthetic = any(e.get("adapter") in SYNTHETIC_ADAPTERS for e in entries)
    bases = sorted({b for b in map(_hub_id, base_model or []) if b})
    return ModelCardData(
        library_name=library_name,
        license=licence.license,
        license_name=licence.name,
        license_link=licence.link,
        datasets=sorted({e["dataset"] for e in entries}) or None,
        tags=[
            "medical",
            "medlens",
            *(m.replace("_", "-") for m in modalities),
            *(["synthetic-data", "not-for-clinical-use"] if synthetic else []),
            *(tags or []),
        ],
        pipeline_tag=_PIPELINE[kind],
        base_model=bases or None,
        eval_results=results or None,
        model_name=model_name if results else None,
    )


def training_data_section(preprocessing: list[dict[str, Any]] | None) -> list[str]:
    """The card's "Training data" and "Intended use" sections, as Markdown lines."""
    entries = preprocessing or []
    lines = ["## Training data", ""]
    if not entries:
        lines += ["Not recorded (the folder's medlens.json has no `preprocessing`).", ""]
    else:
        lines += ["| dataset | adapter | modality | pairs (all splits) | licence |", "|---|---|---|---|---|"]
        for e in entries:
            lic = DATA_LICENSES.get(e.get("adapter") or "")
            text = (
                "not known to medlens: check the dataset's own terms before sharing this model"
                if lic is None
                else lic.name or lic.license
            )
            if lic is not None and lic.link:
                text = f"[{text}]({lic.link})"
            if e.get("adapter") in SYNTHETIC_ADAPTERS:
                text += " (generated by medlens)"
            lines.append(
                f"| {e['dataset']} | {e.get('adapter') or '?'} | {e['modality']} | {e['rows']} | {text} |"
            )
        lines.append("")
    lines += ["## Intended use and limits", ""]
    if any(e.get("adapter") in SYNTHETIC_ADAPTERS for e in entries):
        lines += [_SYNTHETIC_WARNING, ""]
    lines += [_NOT_FOR, ""]
    return lines


def _result(task: str, datasets: str, split: str, metric: str, name: str, value: Any, protocol: str):
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type=task,
        dataset_type=datasets,
        dataset_name=datasets,
        dataset_split=split,
        metric_type=metric,
        metric_name=name,
        metric_value=round(float(value), 4),
        metric_args={"protocol": protocol},
    )


def eval_results(metrics: dict[str, Any], datasets: list[str]) -> list[Any]:
    """``model-index`` entries of an ``eval/encoder.json`` or ``eval/decoder.json`` (headline metrics only,
    each with its protocol in ``metric_args``; the JSON holds intervals and per-label scores)."""
    split, names = metrics.get("split", "test"), ",".join(datasets) or "unknown"
    n = f"{metrics.get('n', '?')} {split} rows"
    out = []
    zs = (metrics.get("zero_shot") or {}).get("mean") or {}
    if zs.get("auc") is not None:
        out.append(
            _result(
                "zero-shot-image-classification",
                names,
                split,
                "roc_auc",
                "zero-shot mean AUC",
                zs["auc"],
                f"{n}; positive vs negative prompt per label, mean over labels",
            )
        )
    for k, v in ((metrics.get("retrieval") or {}).get("image_to_text") or {}).items():
        if isinstance(v, dict) and v.get("value") is not None:
            out.append(
                _result("image-text-retrieval", names, split, "recall", f"image-to-text {k}", v["value"], n)
            )
    overall = metrics.get("overall") or {}
    for key, value in (overall.get("text") or {}).items():
        if isinstance(value, int | float):
            out.append(_result("image-to-text", names, split, key, key, value, f"{n}; corpus-level"))
    for scheme, scores in (overall.get("clinical") or {}).items():
        # the label schemes (chexpert14, chexpert5) hold micro scores; "protocol" says how they were computed
        micro = scores.get("micro") if isinstance(scores, dict) else None
        f1 = micro.get("f1") if isinstance(micro, dict) else None
        if f1 is not None:
            out.append(
                _result(
                    "image-to-text",
                    names,
                    split,
                    "f1",
                    f"clinical micro-F1 ({scheme})",
                    f1,
                    f"{n}; labels of generated vs reference reports by labeler "
                    f"{overall['clinical'].get('labeler', '?')}",
                )
            )
    return out


def evaluation_section(results: list[Any] | None, where: str) -> list[str]:
    """The card's "Evaluation" section: the metrics as a table, or where the evaluation writes them."""
    lines = ["## Evaluation", ""]
    if not results:
        return [*lines, f"Evaluated after training: {where}.", ""]
    lines += ["| task | metric | value | split | protocol |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.task_type} | {r.metric_name} | {r.metric_value} | {r.dataset_split} | {r.metric_args['protocol']} |"
        for r in results
    ]
    return [*lines, "", f"Source: {where}.", ""]


def render_model_card(data: Any, body_lines: list[str]) -> str:
    """A card's text: ``data`` (``ModelCardData``) as YAML front matter, then the Markdown body."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body_lines).rstrip() + "\n"))


def write_model_card(path: str | os.PathLike, data: Any, body_lines: list[str]) -> None:
    """Write ``README.md`` (:func:`render_model_card`) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(render_model_card(data, body_lines), encoding="utf-8")


def _decoder_loading(info: dict[str, Any]) -> list[str]:
    """How to load a decoder folder with transformers: a VLM (and PEFT for adapters), or the captioner through
    the modeling file the folder carries."""
    if info["kind"] != "vlm":
        return [
            "An open_clip image tower cross-attended by GPT-2. No transformers class holds an open_clip tower, so "
            "the folder carries its classes (`captioner_modeling.py`: torch, transformers and open_clip only; "
            "read it before trusting it):",
            "",
            "```python",
            "from PIL import Image",
            "from transformers import AutoImageProcessor, AutoModel, AutoTokenizer",
            "",
            'model = AutoModel.from_pretrained(".", trust_remote_code=True).eval()',
            'tokenizer = AutoTokenizer.from_pretrained(".", trust_remote_code=True)',
            'processor = AutoImageProcessor.from_pretrained(".", backend="pil")  # open_clip\'s exact pixels',
            'pixels = processor(images=Image.open("image.png").convert("RGB"), return_tensors="pt")["pixel_values"]',
            "# generate() decodes with this folder's generation_config.json, as the evaluation did",
            "report = tokenizer.batch_decode(model.generate(pixels), skip_special_tokens=True)[0]",
            "```",
            "",
            "With medlens: `medlens.models.generator.load_generator(folder)`, or `medlens generate`.",
            "",
        ]
    base = info["config"]["model"]
    lines = ["```python", "from transformers import AutoModelForImageTextToText, AutoProcessor", ""]
    if info.get("weights") == "adapter":
        lines += [
            "from peft import PeftModel",
            "",
            f'model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained("{base}"), ".")',
        ]
    else:
        lines.append('model = AutoModelForImageTextToText.from_pretrained(".")')
    lines += [
        'processor = AutoProcessor.from_pretrained(".")',
        "# generate() decodes with this folder's generation_config.json, as the evaluation did",
        "```",
        "",
    ]
    return lines


def decoder_model_card(info: dict[str, Any]) -> str:
    """The ``README.md`` of a decoder folder (``info`` is its ``medlens.json``): the captioner or a VLM's
    adapters, merged or fully fine-tuned weights."""
    cfg, vlm = info["config"], info["kind"] == "vlm"
    data = card_metadata(
        "vlm" if vlm else "captioner",
        info.get("preprocessing"),
        library_name="peft" if info.get("weights") == "adapter" else "transformers",
        base_model=[cfg.get("model")] if vlm else None,
        tags=["report-generation", *(["lora"] if cfg.get("finetune") == "lora" and vlm else [])],
    )
    what = (
        f"`{cfg['model']}` fine-tuned ({info.get('weights')}) by medlens `train_decoder` to answer with a report"
        if vlm
        else f"A report generator (medlens captioner, preset `{cfg['preset']}`) trained by `train_decoder`"
    )
    summary = info.get("summary") or {}
    prompt = info.get("prompt")
    body = [
        f"# medlens decoder: {'VLM' if vlm else 'captioner'} (preset `{cfg['preset']}`)",
        "",
        what + ".",
        "",
        *_decoder_loading(info),
        *training_data_section(info.get("preprocessing")),
        *evaluation_section(
            None,
            "`evaluate_decoder` writes this model's text metrics (BLEU, ROUGE-L, CIDEr-D) and clinical scores, "
            "with their protocol, to `results/<experiment>/eval/decoder.json`",
        ),
        "## Training",
        "",
        f"- steps: {summary.get('global_step')}; final train loss {summary.get('train_loss')}; best validation "
        f"loss {summary.get('best_val_loss')}",
        f"- prompt: {json.dumps(prompt) if prompt else 'none (the captioner reads the image alone)'}",
        f"- decoding (`generation_config.json`): {json.dumps(cfg.get('generation'))}",
        f"- medlens {info.get('medlens_version')}",
    ]
    return render_model_card(data, body)
