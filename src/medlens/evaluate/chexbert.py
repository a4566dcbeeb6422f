"""CheXbert (Smit et al., EMNLP 2020) as the report labeler of clinical efficacy, from a local checkpoint.

The model is stanfordmlgroup/CheXbert's ``bert_labeler``: bert-base-uncased, dropout, and 14 linear
heads on the [CLS] state, 13 with four classes (blank, positive, negative, uncertain) and the last
(No Finding) with two (blank, positive). ``chexbert.pth`` is ``torch.save({"model_state_dict": ...})``
of that model wrapped in ``nn.DataParallel`` (keys start with ``module.``). Reports are tokenised as in
CheXbert's ``tokenize`` (whitespace collapsed, at most 512 tokens). The checkpoint carries no config,
so the BERT shape is read from the weights; the tokenizer is the ``vocab.txt`` (or tokenizer files)
next to the checkpoint when present, otherwise ``bert-base-uncased`` through the Hugging Face cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.errors import ConfigError

__all__ = [
    "CHEXBERT_CONDITIONS",
    "CheXbertLabeler",
    "CheXbertModel",
    "load_chexbert",
    "bert_config_from_state",
]

logger = logging.getLogger(__name__)

# Head order of CheXbert (src/constants.py CONDITIONS); differs from medlens.config.FINDINGS.
CHEXBERT_CONDITIONS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
_CLASS_TO_LABEL = {0: None, 1: 1, 2: 0, 3: -1}  # blank, positive, negative, uncertain
_BERT_HEAD_SIZE = 64  # every released BERT uses 64-dimensional attention heads
_MAX_TOKENS = 512
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json")


class CheXbertModel(nn.Module):
    """``bert_labeler`` of CheXbert, with the same parameter names so its state dict loads as is."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(config)
        self.dropout = nn.Dropout(0.1)
        hidden = config.hidden_size
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]  # [B, H]
        cls = self.dropout(cls)
        return [head(cls) for head in self.linear_heads]  # 13 x [B, 4], then [B, 2]


def bert_config_from_state(state: dict[str, torch.Tensor], *, source: str = "<state dict>") -> Any:
    """A ``BertConfig`` with the sizes of the weights in ``state`` (keys without ``module.``).

    Raises:
        ConfigError: when the weights are not those of a BERT encoder.
    """
    from transformers import BertConfig

    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        types = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as e:
        raise ConfigError(
            f"no BERT weight {e}",
            file=source,
            expected="a CheXbert checkpoint (bert.* and linear_heads.* weights)",
        ) from e
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // _BERT_HEAD_SIZE),
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        type_vocab_size=types,
    )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own message advises loading it unsafely
        raise ConfigError(
            "cannot read as a torch checkpoint: it pickles more than tensors, which medlens never unpickles "
            "(torch.load with weights_only refused it)",
            file=str(path),
            key="evaluate.labeler",
            expected="CheXbert's chexbert.pth",
        ) from e
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise ConfigError(
            f"cannot read as a torch checkpoint: {e}",
            file=str(path),
            key="evaluate.labeler",
            expected="CheXbert's chexbert.pth",
        ) from e
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            "no model_state_dict of tensors",
            file=str(path),
            key="evaluate.labeler",
            expected="CheXbert's chexbert.pth ({'model_state_dict': ...})",
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_tokenizer(checkpoint: Path) -> Any:
    from transformers import BertTokenizer

    local = checkpoint.parent
    source = str(local) if any((local / f).is_file() for f in _TOKENIZER_FILES) else "bert-base-uncased"
    try:
        return BertTokenizer.from_pretrained(source)
    except OSError as e:
        raise ConfigError(
            f"no tokenizer for the CheXbert checkpoint ({e})",
            file=str(checkpoint),
            key="evaluate.labeler",
            expected="bert-base-uncased's vocab.txt next to the checkpoint, "
            "or bert-base-uncased in the Hugging Face cache",
        ) from e


class CheXbertLabeler:
    """Labels reports with a CheXbert checkpoint; the same interface as the rule-based labeler.

    Args:
        checkpoint: path of ``chexbert.pth``.
        batch_size: reports per forward pass.
        device: torch device; default CUDA when available.

    Raises:
        ConfigError: when the file is missing, is not a CheXbert checkpoint, or has no tokenizer.
    """

    def __init__(self, checkpoint: str | Path, *, batch_size: int = 16, device: str | None = None):
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(
                "CheXbert checkpoint not found",
                file=str(path),
                key="evaluate.labeler",
                expected="'chexbert:<path to a local chexbert.pth>'",
            )
        self.name = f"chexbert:{checkpoint}"
        self.path, self.batch_size = path, batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        state = _read_state(path)
        self.model = CheXbertModel(bert_config_from_state(state, source=str(path)))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # position_ids is a buffer that older transformers saved and newer ones rebuild
        missing = [k for k in missing if not k.endswith("position_ids")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ConfigError(
                f"weights do not match CheXbert: missing {missing[:5]}, unexpected {unexpected[:5]}",
                file=str(path),
                key="evaluate.labeler",
                expected="CheXbert's bert_labeler state dict",
            )
        self.model.to(self.device).eval()
        self.tokenizer = _load_tokenizer(path)
        if len(self.tokenizer) > self.model.bert.config.vocab_size:
            raise ConfigError(
                f"tokenizer has {len(self.tokenizer)} tokens, the model {self.model.bert.config.vocab_size}",
                file=str(path),
                key="evaluate.labeler",
                expected="the tokenizer the checkpoint was trained with (bert-base-uncased)",
            )

    @torch.no_grad()
    def label_texts(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """``{observation: 1 | 0 | -1}`` per report; observations CheXbert leaves blank are left out."""
        out: list[dict[str, int]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [" ".join(t.split()) for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(
                batch, truncation=True, max_length=_MAX_TOKENS, padding=True, return_tensors="pt"
            )
            logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1).tolist()  # [B, 14]
            for row in classes:
                labels = {c: _CLASS_TO_LABEL[k] for c, k in zip(CHEXBERT_CONDITIONS, row, strict=True)}
                out.append({c: v for c, v in labels.items() if v is not None})
        return out

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Any:
        """``[N, H]`` float array: the [CLS] state of each report (SembScore's embedding)."""
        import numpy as np

        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [" ".join(t.split()) for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(
                batch, truncation=True, max_length=_MAX_TOKENS, padding=True, return_tensors="pt"
            )
            hidden = self.model.bert(
                enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
            ).last_hidden_state
            out.append(hidden[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.bert.config.hidden_size))

    def describe(self) -> dict[str, Any]:
        """The checkpoint that produced the labels."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return {
            "name": "CheXbert (Smit et al. 2020)",
            "checkpoint": str(self.path),
            "checkpoint_sha256": h.hexdigest(),
            "uncertain_classes": "CheXbert's 4-way heads: blank, positive, negative, uncertain",
        }


@functools.lru_cache(maxsize=1)
def load_chexbert(checkpoint: str) -> CheXbertLabeler:
    """A :class:`CheXbertLabeler`, kept for reuse: evaluate_decoder scores several subsets with it."""
    return CheXbertLabeler(checkpoint)
