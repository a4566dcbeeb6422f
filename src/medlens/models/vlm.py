"""Hugging Face vision-language models (PaliGemma, Llama 3.2 Vision, any image-text-to-text model) in medlens.

Three things are shared by training (``medlens.train.vlm``) and generation (:class:`VLMGenerator`):

* :class:`PromptFormat` turns a medlens conversation into the model's prompt, in the one layout the
  model was trained with: the processor's chat template when it has one (Llama 3.2 Vision Instruct,
  most instruction-tuned VLMs), else PaliGemma's prefix/suffix convention (``<image>...<bos>prefix\\n``
  then ``suffix<eos>``). Training appends the target tokens to exactly the prompt tokens that
  generation feeds, so the two can never tokenise the boundary differently.
* :func:`pad_rows` pads per-example processor outputs into a batch (right for training, left for
  generation), whatever extra tensors the processor returns (PaliGemma's ``token_type_ids``, Mllama's
  ``cross_attention_mask``, tiles...).
* :func:`load_vlm` loads the weights, 4-bit/8-bit through bitsandbytes when configured.
"""
# long: prompt format, batching, loading and generation of VLMs, shared by training and inference

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medlens.config import DecoderConfig, GenerationConfig, from_dict
from medlens.data.chat_format import IMAGE_TOKEN
from medlens.data.images import load_image
from medlens.errors import ConfigError
from medlens.precision import resolve_precision

__all__ = [
    "PromptFormat",
    "TOKEN_KEYS",
    "pad_rows",
    "load_processor",
    "load_vlm",
    "bnb_config",
    "unquantised_modules",
    "VLMGenerator",
    "embed_images",
]

logger = logging.getLogger(__name__)

# Processor outputs with one entry per token (dim 1 is the sequence); every other tensor is per image.
TOKEN_KEYS = (
    "input_ids",
    "attention_mask",
    "labels",
    "token_type_ids",
    "mm_token_type_ids",
    "cross_attention_mask",
)
_PAD_VALUES = {"labels": -100}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# bitsandbytes' 4-bit quantisation block along a layer's input (BitsAndBytesConfig has no setting for it),
# and the rows its AVX512-BF16 CPU kernel packs together (block_n in _convert_weight_packed_for_cpu)
_BNB_4BIT_BLOCK, _BNB_CPU_ROWS = 64, 32


def _text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of typed parts) without medlens's image token."""
    if isinstance(content, str):
        return content.replace(IMAGE_TOKEN, "").strip()
    return " ".join(p["text"] for p in content if p.get("type") == "text").replace(IMAGE_TOKEN, "").strip()


class PromptFormat:
    """How one processor's model expects a conversation.

    Args:
        processor: the model's processor (tokenizer + image processor).

    Attributes:
        chat: True when the processor's chat template lays out the prompt; False for PaliGemma's
            prefix/suffix convention (pretrained PaliGemma checkpoints have no chat template).
        end_of_turn: the text that closes the assistant's answer (``<|eot_id|>``, ``<eos>``...).
        stop_token_ids: tokens at which generation stops (the first token of ``end_of_turn``).
    """

    def __init__(self, processor: Any):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.chat = getattr(processor, "chat_template", None) is not None
        self.end_of_turn = self._chat_end_of_turn() if self.chat else self.tokenizer.eos_token
        end_ids = self.tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"]
        self.stop_token_ids = end_ids[:1]
        self.image_token_id = getattr(processor, "image_token_id", None)

    def _chat_end_of_turn(self) -> str:
        """What the template writes after an assistant answer, read off a rendered probe conversation."""
        probe, answer = (
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}],
            "PROBE",
        )
        prompt = self.processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        full = self.processor.apply_chat_template(
            [*probe, {"role": "assistant", "content": [{"type": "text", "text": answer}]}], tokenize=False
        )
        if not full.startswith(prompt + answer):
            raise ConfigError(
                "the processor's chat template does not render the prompt as the start of the "
                "conversation, so answers cannot be appended to it",
                key="decoder.model",
                expected="a chat template whose generation prompt is a prefix of the full conversation",
            )
        return full[len(prompt) + len(answer) :]

    def chat_messages(self, messages: list[dict[str, Any]], n_images: int) -> list[dict[str, Any]]:
        """medlens messages (``<image>`` in the text) as template messages with typed image/text parts."""
        with_image = next(
            (i for i, m in enumerate(messages) if IMAGE_TOKEN in str(m["content"])),
            next(i for i, m in enumerate(messages) if m["role"] == "user"),
        )
        out = []
        for i, m in enumerate(messages):
            parts = [{"type": "image"}] * n_images if i == with_image else []
            out.append(
                {"role": m["role"], "content": [*parts, {"type": "text", "text": _text_of(m["content"])}]}
            )
        return out

    def prompt_text(self, messages: list[dict[str, Any]], n_images: int) -> str:
        """The prompt string handed to the processor (up to where the answer starts)."""
        if self.chat:
            return self.processor.apply_chat_template(
                self.chat_messages(messages, n_images), add_generation_prompt=True, tokenize=False
            )
        # PaliGemma: image tokens, then the processor adds <bos>, the prefix and "\n"
        prefix = "\n".join(t for t in (_text_of(m["content"]) for m in messages) if t)
        return self.processor.image_token * n_images + prefix

    def prompt_inputs(self, images: list[Any], messages: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Processor outputs (batch of one, unpadded) for the prompt of one conversation."""
        text = self.prompt_text(messages, len(images))
        # a chat template writes its own <|begin_of_text|>; PaliGemma's processor places <bos> itself
        kwargs = {"add_special_tokens": False} if self.chat else {}
        inputs = dict(self.processor(text=[text], images=[images], return_tensors="pt", **kwargs))
        inputs.pop(
            "labels", None
        )  # PaliGemma's processor adds all -100 labels for a prompt; medlens sets its own
        return inputs

    def target_ids(self, target: str) -> list[int]:
        """Token ids of an answer plus the end of the turn, as training appends them to the prompt."""
        # chat templates trim message content; the answer is trimmed alike so training sees what generation will
        return self.tokenizer(target.strip() + self.end_of_turn, add_special_tokens=False)["input_ids"]

    def suffix_token_type(self, prompt_types: torch.Tensor) -> int:
        """``token_type_ids`` value of answer tokens: PaliGemma marks its causal suffix 1, others repeat the last."""
        return 1 if not self.chat else int(prompt_types[0, -1])


def pad_rows(
    rows: list[dict[str, torch.Tensor]], pad_token_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad per-example tensors (each with batch size 1) to common shapes and concatenate them.

    Token tensors (:data:`TOKEN_KEYS`) are padded along the sequence on ``side`` (``input_ids`` with
    ``pad_token_id``, ``labels`` with -100, the rest with 0); every other dimension, and every
    per-image tensor, is padded at its end with 0 (as processors pad tiles and image counts).
    """
    out = {}
    for key in rows[0]:
        tensors = [r[key] for r in rows]
        shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
        value = pad_token_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
        padded = []
        for t in tensors:
            pad: list[int] = []
            for d in reversed(range(1, t.dim())):
                missing = shape[d] - t.shape[d]
                left = key in TOKEN_KEYS and d == 1 and side == "left"
                pad += [missing, 0] if left else [0, missing]
            padded.append(F.pad(t, pad, value=value) if any(pad) else t)
        out[key] = torch.cat(padded)
    return out


def load_processor(name_or_path: str | os.PathLike) -> Any:
    """``AutoProcessor.from_pretrained`` with a ConfigError naming ``decoder.model`` when it cannot load."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(name_or_path), trust_remote_code=False)
    except OSError as e:
        raise ConfigError(
            f"processor of '{name_or_path}' cannot be loaded ({e})",
            key="decoder.model",
            expected="a local model folder, or a hub id reachable from here (huggingface-cli login "
            "for gated models such as Llama 3.2 Vision)",
        ) from e


def compute_dtype(cfg: DecoderConfig) -> torch.dtype:
    """bitsandbytes' compute dtype: the configured one on a GPU, float32 on CPU (half-precision CPU kernels are slow or absent)."""
    wanted = _DTYPES[cfg.quantization.bnb_4bit_compute_dtype]
    if wanted != torch.float32 and not torch.cuda.is_available():
        logger.warning(
            "bnb_4bit_compute_dtype %s requested but no GPU is available; computing in float32",
            cfg.quantization.bnb_4bit_compute_dtype,
        )
        return torch.float32
    return wanted


def unquantised_modules(source: str, configured: list[str] | None) -> list[str]:
    """The modules a 4-bit load keeps in full precision: transformers' own choice (the output head and what
    is tied to it), the configured ones, and every linear layer bitsandbytes cannot pack for its CPU kernel.

    bitsandbytes 0.50 repacks 4-bit weights for its AVX512-BF16 CPU kernel (used in evaluation and
    generation) in blocks of 64 inputs by 32 outputs, and fails on a layer of any other shape (``shape
    '[32, 0]' is invalid``, ``N must be divisible by block_n``): such a layer would load on one CPU and
    crash on the next. Real VLMs have none (their widths are multiples of 64); small test models do. The
    model is built on the meta device to list them, so no weight is read.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.quantizers.base import get_keys_to_not_convert

    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(
            AutoConfig.from_pretrained(source, trust_remote_code=False)
        )
    narrow = [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (m.in_features % _BNB_4BIT_BLOCK or m.out_features % _BNB_CPU_ROWS)
    ]
    return sorted({*get_keys_to_not_convert(model), *(configured or []), *narrow})


def bnb_config(cfg: DecoderConfig, source: str | None = None):
    """``cfg.quantization`` as a ``BitsAndBytesConfig`` (same field names), or None when not quantised.

    Args:
        cfg: decoder settings.
        source: the model the config will load; for 4-bit, its layers that bitsandbytes cannot hold in
            4 bits on every CPU are kept unquantised (:func:`unquantised_modules`).
    """
    q = cfg.quantization
    if not (q.load_in_4bit or q.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    skip = (
        unquantised_modules(source, q.llm_int8_skip_modules)
        if q.load_in_4bit and source
        else q.llm_int8_skip_modules
    )
    return BitsAndBytesConfig(
        load_in_4bit=q.load_in_4bit,
        load_in_8bit=q.load_in_8bit,
        bnb_4bit_quant_type=q.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype(cfg),
        llm_int8_skip_modules=skip,
    )


def _device_index() -> int | str:
    if not torch.cuda.is_available():
        return "cpu"
    from accelerate import PartialState

    return PartialState().local_process_index  # each DDP process holds its own quantised copy


def load_vlm(
    cfg: DecoderConfig, *, training: bool, path: str | os.PathLike | None = None, quantize: bool = True
) -> Any:
    """Load ``cfg.model`` (or ``path``) with ``AutoModelForImageTextToText``.

    Weights are quantised when ``cfg.quantization`` says so; otherwise they are loaded in the
    half precision the run uses when they stay frozen (LoRA, or generation), and in float32 when
    they are trained in full (mixed precision keeps float32 master weights).

    Args:
        cfg: decoder settings.
        training: whether the weights will be trained.
        path: load from here instead of ``cfg.model`` (a merged or fully fine-tuned output).
        quantize: False loads unquantised even when ``cfg.quantization`` is set (merging adapters).

    Raises:
        ConfigError: naming ``decoder.model`` when the model cannot be loaded.
    """
    from transformers import AutoModelForImageTextToText

    source = str(path if path is not None else cfg.model)
    try:
        quant = bnb_config(cfg, source) if quantize else None
    except OSError as e:
        raise ConfigError(
            f"model '{source}' cannot be loaded ({e})",
            key="decoder.model",
            expected="a local model folder, or a hub id reachable from here",
        ) from e
    precision = resolve_precision(cfg.precision)
    if quant is not None:
        dtype = compute_dtype(cfg)
    elif precision in ("fp16", "bf16") and not (training and cfg.finetune == "full"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    else:
        dtype = torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": _device_index()})
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError as e:
        raise ConfigError(
            f"model '{source}' cannot be loaded ({e})",
            key="decoder.model",
            expected="a local model folder, or a hub id reachable from here",
        ) from e
    logger.info(
        "loaded %s (%s) in %s%s",
        source,
        type(model).__name__,
        str(dtype).removeprefix("torch."),
        " with 4-bit weights"
        if cfg.quantization.load_in_4bit and quant is not None
        else " with 8-bit weights"
        if quant is not None
        else "",
    )
    return model


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# the image encoder's attribute in the VLM families transformers has (PaliGemma/LLaVA, Mllama, Qwen-VL)
_VISION_MODULES = ("vision_tower", "vision_model", "visual")


@torch.no_grad()
def embed_images(model: Any, fmt: PromptFormat, images: Sequence[Any]) -> torch.Tensor:
    """[B, D] unit-norm image embeddings in the VLM's own space, for the out-of-distribution score: the output
    tokens of its image encoder, averaged, captured while the model reads a user turn holding the image alone.

    The image encoder's output is what every VLM family has in common (Mllama's language model only sees the
    image through gated cross-attention, which a fine-tune may leave closed); it is read with a forward hook,
    since each family calls its encoder with its own inputs (tiles, aspect ratios).
    """
    vision = next((m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in _VISION_MODULES), None)
    if vision is None:
        raise ConfigError(
            f"no image encoder found in {type(model).__name__}",
            expected=f"a VLM with one of the submodules {', '.join(_VISION_MODULES)}",
        )
    turn = [{"role": "user", "content": IMAGE_TOKEN}]
    rows = [fmt.prompt_inputs([load_image(im, grey=False)], turn) for im in images]
    batch = pad_rows(rows, fmt.tokenizer.pad_token_id, side="left")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    captured: list[torch.Tensor] = []

    def keep(module, args, output) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = vision.register_forward_hook(keep)
    try:
        model(**batch)
    finally:
        handle.remove()
    tokens = captured[0].float()
    return F.normalize(tokens.reshape(len(images), -1, tokens.shape[-1]).mean(1), dim=-1)  # [B, D]


@dataclass
class VLMGenerator:
    """Reports from a decoder folder written by ``train_vlm`` (adapters, merged or fully fine-tuned weights)."""

    model: Any
    fmt: PromptFormat
    system: str | None = None
    generation: GenerationConfig | None = None  # the folder's generation_config.json: the default decoding
    reads_prompts = True  # each row's prompt (a VQA question) goes into the chat turn

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> VLMGenerator:
        """Load the folder's model and processor; adapters are applied to the base model named in its config."""
        path = Path(path)
        info = json.loads((path / "medlens.json").read_text())
        cfg = from_dict(DecoderConfig, info["config"], source=str(path / "medlens.json"), prefix="config")
        if info["weights"] == "adapter":
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_vlm(cfg, training=False), str(path))
        else:
            model = load_vlm(cfg, training=False, path=path, quantize=False)
        if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
            model = model.to(_device())
        from medlens.models.generation import read_generation_config

        return cls(
            model.eval(), PromptFormat(load_processor(path)), info.get("system"), read_generation_config(path)
        )

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """[B, D] image embeddings of the out-of-distribution score (:func:`embed_images`)."""
        return embed_images(self.model, self.fmt, images)

    def _messages(self, prompt: str | None) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": IMAGE_TOKEN + (prompt or "").replace(IMAGE_TOKEN, "")}]

    @torch.no_grad()
    def generate_ids(
        self, images: Sequence[Any], prompts: Sequence[str | None], generation: GenerationConfig
    ) -> torch.Tensor:
        """Token ids generated after the prompts of one batch: [B, new tokens], padded after each stop."""
        tok = self.fmt.tokenizer
        rows = [
            self.fmt.prompt_inputs([load_image(im, grey=False)], self._messages(p))
            for im, p in zip(images, prompts, strict=True)
        ]
        batch = pad_rows(
            rows, tok.pad_token_id, side="left"
        )  # decoder-only generation continues the right edge
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        ids = self.model.generate(
            **batch,
            **generation.generate_kwargs(),
            do_sample=False,
            eos_token_id=[*self.fmt.stop_token_ids, tok.eos_token_id],
            pad_token_id=tok.pad_token_id,
        )
        return ids[:, batch["input_ids"].shape[1] :]

    def generate(
        self,
        images: Sequence[Any],
        prompts: Sequence[str] | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """Generate one report per image (a path, bytes or PIL image) after its prompt (the user turn).

        Args:
            images: one image per report.
            prompts: the user turn of each conversation (``<image>`` marks are optional); None asks nothing.
            generation: decoding settings (greedy or beam search, length and repetition controls); None: the
                folder's.
            batch_size: conversations per ``generate`` call.

        Returns:
            The generated answers, without the prompt or special tokens.
        """
        generation = generation or self.generation or GenerationConfig()
        prompts = list(prompts) if prompts is not None else [None] * len(images)
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            ids = self.generate_ids(
                images[start : start + batch_size], prompts[start : start + batch_size], generation
            )
            out.extend(t.strip() for t in self.fmt.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out
