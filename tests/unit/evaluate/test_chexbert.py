"""CheXbert labeler: loading CheXbert-layout checkpoints of a tiny random BERT saved by the test, offline."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from medlens.errors import ConfigError
from medlens.evaluate.chexbert import (
    CHEXBERT_CONDITIONS,
    CheXbertLabeler,
    CheXbertModel,
    bert_config_from_state,
)
from medlens.evaluate.clinical import clinical_efficacy

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "no",
    "pleural",
    "effusion",
    "heart",
    "is",
    "enlarged",
    "the",
    ".",
]


def _tiny_model(seed: int = 0) -> CheXbertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    return CheXbertModel(cfg).eval()


def _save(folder, model: CheXbertModel, *, extra: dict | None = None, vocab: bool = True) -> str:
    """Save as CheXbert does: nn.DataParallel keys ("module.") under "model_state_dict"."""
    folder.mkdir(parents=True, exist_ok=True)
    if vocab:
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state.update(extra or {})
    path = folder / "chexbert.pth"
    torch.save(
        {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}},
        path,
    )
    return str(path)


def test_config_is_read_from_the_weights():
    model = _tiny_model()
    cfg = bert_config_from_state(dict(model.state_dict()))
    assert (
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.intermediate_size,
        cfg.max_position_embeddings,
        cfg.num_attention_heads,
    ) == (len(VOCAB), 32, 2, 37, 64, 1)
    assert (
        bert_config_from_state(
            {
                "bert.embeddings.word_embeddings.weight": torch.zeros(30522, 768),
                "bert.embeddings.position_embeddings.weight": torch.zeros(512, 768),
                "bert.embeddings.token_type_embeddings.weight": torch.zeros(2, 768),
                "bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(3072, 768),
                "bert.encoder.layer.11.output.dense.weight": torch.zeros(768, 3072),
            }
        ).num_attention_heads
        == 12
    )  # bert-base-uncased


def test_heads_map_to_labels_in_chexbert_order(tmp_path):
    model = _tiny_model()
    # zero every head's weights and pick each head's class through its bias
    wanted = [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 1]  # 13 four-way heads, then No Finding
    with torch.no_grad():
        for head, cls in zip(model.linear_heads, wanted, strict=True):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[cls] = 5.0
    labeler = CheXbertLabeler(_save(tmp_path, model), device="cpu")
    labels = labeler.label_texts(["No pleural effusion.", ""])
    expected = {c: {1: 1, 2: 0, 3: -1}[k] for c, k in zip(CHEXBERT_CONDITIONS, wanted, strict=True) if k}
    assert labels == [expected, expected]
    assert expected["Enlarged Cardiomediastinum"] == 1 and expected["Cardiomegaly"] == 0
    assert expected["Lung Opacity"] == -1 and "Lung Lesion" not in expected and expected["No Finding"] == 1


def test_labels_follow_the_loaded_weights(tmp_path):
    model = _tiny_model(seed=1)
    labeler = CheXbertLabeler(_save(tmp_path, model), batch_size=2, device="cpu")
    texts = ["No pleural effusion.", "The heart is enlarged.", "the heart", "pleural effusion ."]
    enc = labeler.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(enc["input_ids"], enc["attention_mask"])
    classes = torch.stack([h.argmax(dim=1) for h in logits], dim=1).tolist()
    expected = [
        {c: {1: 1, 2: 0, 3: -1}[k] for c, k in zip(CHEXBERT_CONDITIONS, row, strict=True) if k}
        for row in classes
    ]
    assert labeler.label_texts(texts) == expected  # batches of 2, padded per batch


def test_old_position_ids_buffer_is_accepted(tmp_path):
    model = _tiny_model()
    path = _save(tmp_path, model, extra={"module.bert.embeddings.position_ids": torch.arange(64)[None]})
    assert CheXbertLabeler(path, device="cpu").label_texts(["no"])


def test_clinical_efficacy_reports_the_checkpoint(tmp_path):
    path = _save(tmp_path, _tiny_model())
    out = clinical_efficacy(
        ["No pleural effusion."], ["The heart is enlarged."], labeler=f"chexbert:{path}", n_resamples=10
    )
    assert out["labeler"] == f"chexbert:{path}"
    assert out["labeler_info"]["checkpoint"] == path and len(out["labeler_info"]["checkpoint_sha256"]) == 64


def test_missing_head_is_a_config_error(tmp_path):
    model = _tiny_model()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("linear_heads.13")}
    path = tmp_path / "chexbert.pth"
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB))
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(ConfigError, match="missing.*linear_heads.13"):
        CheXbertLabeler(path, device="cpu")


def test_not_a_bert_checkpoint_is_a_config_error(tmp_path):
    path = tmp_path / "chexbert.pth"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ConfigError, match="no BERT weight"):
        CheXbertLabeler(path, device="cpu")
    path.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        CheXbertLabeler(path, device="cpu")


def test_tokenizer_larger_than_the_model_is_a_config_error(tmp_path):
    path = _save(tmp_path, _tiny_model())
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB + [f"word{i}" for i in range(20)]))
    with pytest.raises(ConfigError, match="tokenizer has"):
        CheXbertLabeler(path, device="cpu")


def test_a_chexbert_checkpoint_pickled_with_code_is_refused_and_never_run(tmp_path):
    # chexbert.pth is a pickle (the published file): read with weights_only, a planted object is refused unrun
    ran = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    path = _save(tmp_path, _tiny_model(), extra={"module.planted": Planted()})
    with pytest.raises(
        ConfigError, match=r"chexbert\.pth: evaluate\.labeler: cannot read .* more than tensors"
    ) as e:
        CheXbertLabeler(path, device="cpu")
    assert not ran.exists() and "trust the source" not in str(
        e.value
    )  # not torch's advice to load it unsafely
