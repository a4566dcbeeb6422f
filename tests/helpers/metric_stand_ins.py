"""Tiny, randomly initialised stand-ins of the Hub artefacts that radeval's and radgraph's metrics load.

Each function saves files laid out as the package expects them (a BERT or RoBERTa folder, CheXbert's
``chexbert.pth``, RadGraph's ``radgraph-xl.tar.gz``), so tests run the packages' own loading and scoring
code offline. The scores mean nothing: the weights are random.
"""

from __future__ import annotations

import json
import string
import tarfile
import tempfile
from pathlib import Path

import torch

from helpers.bpe import byte_level_bpe

SPECIAL_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# common words of chest radiograph reports, lower case
REPORT_TEXT = (
    "no acute cardiopulmonary process abnormality there is a the of and with without in on at to or "
    "are be been seen evidence small moderate large mild severe right left bilateral lower upper "
    "lobe lung lungs heart size normal enlarged cardiomegaly pleural effusion effusions pneumothorax "
    "consolidation opacity opacities atelectasis edema pulmonary vascular congestion pneumonia focal "
    "airspace disease mediastinal contours silhouette stable unchanged since prior previous exam "
    "study compared chest radiograph frontal lateral views tube catheter line tip terminates above "
    "below carina svc atrium clear otherwise unremarkable hiatal hernia fracture rib osseous "
    "structures intact likely represent may possible suggestive findings base bases apex "
    "retrocardiac"
)
REPORT_WORDS = REPORT_TEXT.split()
REPORT_SENTENCES = [
    "No acute cardiopulmonary process.",
    "There is a small left pleural effusion with adjacent atelectasis.",
    "Heart size is normal. The lungs are clear.",
    "Moderate cardiomegaly with mild pulmonary edema, unchanged since the prior exam.",
    "Endotracheal tube terminates 2 cm above the carina.",
    "Right lower lobe consolidation may represent pneumonia.",
    "No pneumothorax or focal airspace disease; osseous structures are intact.",
]
# label vocabularies of the two DyGIE models: RadGraph-XL names the RadGraph classes in full
NER_LABELS = {
    "radgraph": ["ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA"],
    "radgraph-xl": [
        "Anatomy::definitely present",
        "Observation::definitely present",
        "Observation::uncertain",
        "Observation::definitely absent",
    ],
}
RELATION_LABELS = ["modify", "located_at", "suggestive_of"]


def bert_vocab(words: list[str] | None = None) -> list[str]:
    """A WordPiece vocabulary: BERT's special tokens, lower-cased words, single characters and ``##`` pieces."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = [w.lower() for w in (REPORT_WORDS if words is None else words)]
    vocab = SPECIAL_BERT + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + words
    return list(dict.fromkeys(vocab))


# the published models' sizes, for benchmarks/bench_report_metrics.py (random weights, same compute)
BASE = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}


def save_tiny_bert(folder: Path, words: list[str] | None = None, **sizes) -> Path:
    """Save a tiny random stand-in of ``bert-base-uncased`` (config, WordPiece tokenizer, weights);
    ``sizes`` override the config (``**BASE, num_hidden_layers=12``: the real size)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,  # CheXbert pads and truncates to 512 tokens
    ).to_dict()
    config = BertConfig.from_dict(config | sizes)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def save_tiny_roberta(
    folder: Path, n_layers: int = 6, corpus: list[str] | None = None, bpe_size: int = 400, **sizes
) -> Path:
    """Save a tiny random stand-in of ``distilroberta-base`` (byte-level BPE tokenizer, trained on ``corpus``
    or a few report sentences, weights); ``sizes`` override the config."""
    from tokenizers import processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = byte_level_bpe(corpus or REPORT_SENTENCES + [" ".join(REPORT_WORDS)], specials, bpe_size)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    fast = RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    fast.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ).to_dict()
    config = RobertaConfig.from_dict(config | sizes)
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


# RaTE-NER's BIO labels over RaTEScore's five entity types (its affinity matrix names them)
RATE_LABELS = [
    f"{bio}-{kind}"
    for kind in ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
    for bio in ("B", "I")
] + ["O"]


def save_tiny_rate_ner(
    folder: Path, bert_folder: Path, label: str | None = "B-ABNORMALITY", config: dict | None = None
) -> Path:
    """A stand-in of ``Angelakeke/RaTE-NER-Deberta``: a token classifier with RaTE's labels and the BERT's
    tokenizer (its [CLS]/[SEP], which RaTEScore's post-processing skips, as DeBERTa's). By default the tiny
    BERT itself, its head's bias tagging every token ``label`` (with ``B-`` each token is an entity of its
    own: identical reports then have identical entities); ``config`` (a transformers config as a dict, with
    its ``model_type``): a random model of that architecture instead (the benchmark's DeBERTa-v3-base);
    ``label=None``: the head left random."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    labels = {"id2label": dict(enumerate(RATE_LABELS)), "label2id": {n: i for i, n in enumerate(RATE_LABELS)}}
    torch.manual_seed(0)
    if config is None:
        model = AutoModelForTokenClassification.from_pretrained(
            bert_folder, config=AutoConfig.from_pretrained(bert_folder, **labels)
        )
    else:
        config = dict(config)
        model_config = AutoConfig.for_model(config.pop("model_type"), **config, **labels)
        model = AutoModelForTokenClassification.from_config(model_config)
    if label is not None:
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[RATE_LABELS.index(label)] = 10.0
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(bert_folder).save_pretrained(folder)
    return Path(folder)


def chexbert_state(bert_folder: Path, head_bias: float = 0.0) -> dict:
    """The state dict of a CheXbert labeler (``bert.*``, 13 four-way heads and one two-way head)."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(bert_folder)
    hidden = bert.config.hidden_size
    state = {f"bert.{k}": v for k, v in bert.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for i in range(14):
        out = 4 if i < 13 else 2
        state[f"linear_heads.{i}.weight"] = torch.randn(out, hidden, generator=generator) * 0.02
        bias = torch.zeros(out)
        bias[1] = head_bias  # class 1 = "positive": a large bias makes every label positive
        state[f"linear_heads.{i}.bias"] = bias
    return state


def save_chexbert_checkpoint(path: Path, bert_folder: Path, head_bias: float = 0.0) -> Path:
    """Save ``chexbert.pth`` as CheXbert ships it: DataParallel ``module.`` keys under ``model_state_dict``."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v for k, v in chexbert_state(bert_folder, head_bias).items()}
    torch.save({"epoch": 1, "model_state_dict": state}, path)
    return path


def radgraph_config(bert_model_name: str) -> dict:
    """The DyGIE++ (allennlp) ``config.json`` RadGraph reads, with small module sizes."""
    bert = {"type": "pretrained_transformer_mismatched", "model_name": bert_model_name, "max_length": 512}
    return {
        "dataset_reader": {"type": "dygie", "token_indexers": {"bert": bert}, "max_span_width": 8},
        "vocabulary": {},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": bert}},
            "initializer": {"regexes": [["_span_width_embedding.weight", {"type": "xavier_normal"}]]},
            "module_initializer": {"regexes": [[".*weight", {"type": "xavier_normal"}]]},
            "feature_size": 8,
            "max_span_width": 8,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 2, "hidden_dims": 16, "dropout": 0.4},
            "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "modules": {
                "coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0},
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 1.0, "arguments": 1.0},
                },
            },
        },
    }


def write_radgraph_vocabulary(folder: Path, model_type: str) -> Path:
    """Write the allennlp ``vocabulary/`` folder: the NER and relation label namespaces of ``model_type``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "non_padded_namespaces.txt").write_text("*tags\n*labels\n")
    # the NER null label "" must be index 0 (NERTagger asserts it); relations have no null label
    (folder / f"{model_type}__ner_labels.txt").write_text("\n".join(["", *NER_LABELS[model_type]]) + "\n")
    (folder / f"{model_type}__relation_labels.txt").write_text("\n".join(RELATION_LABELS) + "\n")
    return folder


class _MismatchedBertLayout(torch.nn.Module):
    """The parameter layout of allennlp's ``PretrainedTransformerMismatchedEmbedder``, without its tokenizer.

    The archive names its BERT by a Hub id the test serves later; the weights are laid out from a local
    folder holding the same BERT.
    """

    def __init__(self, model_name: str) -> None:
        super().__init__()
        from transformers import AutoModel

        self._matched_embedder = torch.nn.Module()
        self._matched_embedder.transformer_model = AutoModel.from_pretrained(model_name)

    def get_output_dim(self) -> int:
        return self._matched_embedder.transformer_model.config.hidden_size


def build_radgraph_model(model_dir: Path, bert_folder: Path | None = None):
    """Build the DyGIE model of ``model_dir`` (config.json, vocabulary/) as ``RadGraph.__init__`` does."""
    from dotmap import DotMap

    from medlens.evaluate.radeval_compat import vendored_radgraph

    vendored_radgraph()  # the alias its modules' `RadEval.` imports need
    from radeval.metrics.radgraph._vendor.allennlp.data import Vocabulary
    from radeval.metrics.radgraph._vendor.allennlp.modules import text_field_embedders
    from radeval.metrics.radgraph._vendor.dygie.models import dygie

    config = DotMap(json.loads((Path(model_dir) / "config.json").read_text()))
    vocab = Vocabulary.from_files(str(Path(model_dir) / "vocabulary"), None, None)
    bert = _MismatchedBertLayout(str(bert_folder or config.model.embedder.token_embedders.bert.model_name))
    embedder = text_field_embedders.BasicTextFieldEmbedder({"bert": bert})
    model_dict = config.model
    for name in ["type", "embedder", "initializer", "module_initializer"]:
        del model_dict[name]
    return dygie.DyGIE(vocab=vocab, embedder=embedder, **model_dict)


def save_radgraph_archive(
    path: Path,
    bert_model_name: str,
    model_type: str = "radgraph-xl",
    *,
    bert_folder: Path | None = None,
    ner_bias: float = 0.0,
) -> Path:
    """Save the ``<model_type>.tar.gz`` RadGraph downloads: config.json, vocabulary/ and weights.th.

    ``ner_bias`` is added to the NER scores of every entity label: a large one makes every candidate
    span an entity, so annotations (and rewards of identical reports) do not hang on the random weights.
    ``bert_folder``: a local copy of the BERT ``bert_model_name`` names (when that is a Hub id).
    """

    if model_type not in NER_LABELS:
        raise ValueError(f"no stand-in for RadGraph model type {model_type!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        (model_dir / "config.json").write_text(json.dumps(radgraph_config(bert_model_name), indent=2))
        write_radgraph_vocabulary(model_dir / "vocabulary", model_type)
        torch.manual_seed(0)
        model = build_radgraph_model(model_dir, bert_folder)
        with torch.no_grad():
            for scorer in model._ner._ner_scorers.values():
                scorer[-1]._module.bias += ner_bias  # Sequential(FeedForward, Linear), each TimeDistributed
        torch.save(model.state_dict(), model_dir / "weights.th")
        with tarfile.open(path, "w:gz") as tar:
            for item in ["config.json", "vocabulary", "weights.th"]:
                tar.add(model_dir / item, arcname=item)
    return path


def install_radgraph_archive(archive: Path, model_cache_dir: Path, model_type: str = "radgraph-xl") -> Path:
    """Extract ``archive`` where ``RadGraph(model_type, model_cache_dir=...)`` looks before downloading."""
    model_dir = Path(model_cache_dir) / model_type
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


__all__ = [
    "build_radgraph_model",
    "install_radgraph_archive",
    "save_chexbert_checkpoint",
    "save_radgraph_archive",
    "save_tiny_bert",
    "save_tiny_rate_ner",
    "save_tiny_roberta",
]


def save_tiny_llama(folder: Path, words: list[str] | None = None, *, eos_first: bool = True) -> Path:
    """A Llama causal LM and a fast tokenizer (word level, ``</s>`` as end of sequence), as GREEN loads them.

    ``eos_first``: the final norm is zeroed, so every logit is 0 and greedy decoding picks token 0, ``</s>``:
    generation stops at once (a CPU test need not wait for 2,048 tokens of noise).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["</s>", "<s>", "<unk>", *dict.fromkeys(words or REPORT_WORDS)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if eos_first:
        with torch.no_grad():
            model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    return folder
