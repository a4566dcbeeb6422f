"""Every pretrained artefact an experiment loads from the Hugging Face Hub, fetched before any GPU job starts.

Compute nodes of most clusters reach no internet, and gated models (PaliGemma, Llama 3.2 Vision) need an
accepted licence and a token: a job that finds out after waiting for a GPU wastes the wait. The
``prefetch_weights`` rule runs :func:`prefetch` on the submit host (a Snakemake ``localrule``) into the
standard Hugging Face cache; the GPU jobs then run with the hub offline and load from that cache.

:func:`hub_artefacts` reads the experiment's resolved config the way the loaders do: a VLM's model id
(weights, processor and tokenizer live in one repository), the captioner's tokenizer, an open_clip
``hf-hub:`` or pretrained tag, a timm tag of a vision tower, a Hugging Face tokenizer of a text tower.
Local paths are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.config import DecoderConfig, EncoderConfig, ExperimentConfig, from_dict
from medlens.errors import ConfigError

__all__ = [
    "HubArtefact",
    "hub_artefacts",
    "fetch_and_record",
    "fetch_artefact",
    "needs_prefetch",
    "prefetch",
    "prefetch_experiment",
    "scored_metrics",
]

logger = logging.getLogger(__name__)

# copies of the weights no medlens loader reads: Meta's original checkpoints (Llama 3.2 Vision's 20 GB
# original/), TensorFlow, Flax, ONNX, Rust and GGUF exports
IGNORE_PATTERNS = [
    "original/*",
    "onnx/*",
    "*.msgpack",
    "*.h5",
    "*.onnx",
    "*.onnx_data",
    "*.gguf",
    "*.ot",
    "tf_model*",
    "flax_model*",
    "rust_model*",
]


@dataclass(frozen=True)
class HubArtefact:
    """One Hub repository a stage of the experiment loads."""

    repo_id: str  # e.g. google/paligemma-3b-pt-224
    key: str  # the config key that names it, e.g. decoder.model
    optional: bool = False  # a load that falls back when it is missing (the captioner's GPT-2 tokenizer)
    filename: str | None = None  # one file of the repository (a metric's checkpoint), else all of it
    cache_dir: str | None = None  # a package's own cache folder (RadGraph's), else the standard cache
    # what the fetched file names in turn (the BERT of a RadGraph archive), fetched next
    follow: Callable[[Path], list[HubArtefact]] | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


def fetch_artefact(a: HubArtefact, *, offline: bool, cache_dir: str | None = None) -> Path:
    """The cached path of ``a`` (a file, or the repository's snapshot folder), fetched unless ``offline``, in
    ``cache_dir`` (default: the standard cache) unless its package keeps its own.

    Raises:
        huggingface_hub's errors, or OSError, when it cannot be had.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    if a.filename:
        return Path(
            hf_hub_download(
                a.repo_id, a.filename, cache_dir=a.cache_dir or cache_dir, local_files_only=offline
            )
        )

    def snapshot(ignore: list[str]) -> Path:
        return Path(
            snapshot_download(
                a.repo_id,
                cache_dir=a.cache_dir or cache_dir,
                local_files_only=offline,
                ignore_patterns=ignore,
            )
        )

    duplicates = None if offline else _duplicate_weights(a.repo_id)
    if duplicates is not None:
        return snapshot(IGNORE_PATTERNS + duplicates)
    # offline or no file list, which copy was fetched is not known: huggingface_hub checks the snapshot is complete for the
    # patterns given, so first without the pickles, then with them where there are no safetensors
    path = snapshot(IGNORE_PATTERNS + _PICKLES)
    return path if any(path.rglob("*.safetensors")) else snapshot(IGNORE_PATTERNS)


_PICKLES = ["pytorch_model*.bin"]


def _duplicate_weights(repo_id: str) -> list[str] | None:
    """The PyTorch pickles of a repository that also has safetensors weights, which transformers loads
    instead: not fetched (a 7B model would otherwise be downloaded twice, 28 GB). None where the Hub cannot
    be reached or refuses the file list (an expired token, a rate limit, a 5xx): then snapshot_download
    decides, with the cache where the repository is there, else with its own error (gated, missing...)."""
    import httpx2  # huggingface_hub's HTTP client: its connection errors are the ones snapshot_download absorbs
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import OfflineModeIsEnabled

    try:
        info = HfApi().model_info(repo_id, revision="main")
    except (httpx2.TransportError, OfflineModeIsEnabled, HfHubHTTPError) as e:
        logger.warning("%s: the Hub cannot list its files (%s); the cache decides", repo_id, e)
        return None
    files = [s.rfilename for s in info.siblings or []]
    return _PICKLES if any(f.endswith(".safetensors") for f in files) else []


def _is_local(value: str | None) -> bool:
    return value is None or value.startswith("local-dir:") or Path(value).expanduser().exists()


def needs_prefetch(exp: ExperimentConfig) -> bool:
    """Whether any stage names something outside the local disk (decided without importing open_clip or timm)."""
    enc, dec = exp.encoder, exp.decoder
    named = []
    if "encoder" in exp.stages:
        named += [enc.pretrained, enc.pretrained_image, enc.pretrained_text, enc.tokenizer]
    if "decoder" in exp.stages:
        named += [dec.model if dec.kind == "vlm" else dec.tokenizer]
    return any(not _is_local(v) for v in named)


def scored_metrics(exp: ExperimentConfig) -> list[str]:
    """The report-generation metrics the experiment scores (only an experiment with a decoder writes reports)."""
    return list(exp.evaluate.report_metrics) if "decoder" in exp.stages else []


def _open_clip_repo(model: str, tag: str) -> str | None:
    """The Hub repository of an open_clip pretrained tag (``openai`` for ``ViT-B-32-quickgelu``...)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    hub = cfg.get("hf_hub")
    return hub.strip("/") if hub else None


def _timm_repo(tag: str) -> str | None:
    """The Hub repository of a timm weights tag (``vit_base_patch16_dinov3.lvd1689m``)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(tag)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _hub_id(value: str) -> str:
    return value.removeprefix("hf-hub:")


def hub_artefacts(stages: list[str], enc: EncoderConfig, dec: DecoderConfig) -> list[HubArtefact]:
    """The Hub repositories an experiment's stages will load, in stage order, each once.

    Raises:
        ConfigError: a pretrained tag neither open_clip nor timm knows, naming its key.
    """
    found: list[HubArtefact] = []
    if "encoder" in stages:
        if not _is_local(enc.pretrained):
            repo = (
                _hub_id(enc.pretrained)
                if enc.pretrained.startswith("hf-hub:")
                else _open_clip_repo(enc.model, enc.pretrained)
            )
            found.append(
                HubArtefact(_known(repo, "encoder.pretrained", enc.pretrained), "encoder.pretrained")
            )
        if not _is_local(enc.pretrained_image):
            value = enc.pretrained_image
            repo = _hub_id(value) if value.startswith("hf-hub:") else _timm_repo(value)
            found.append(
                HubArtefact(_known(repo, "encoder.pretrained_image", value), "encoder.pretrained_image")
            )
        if not _is_local(enc.pretrained_text):
            value, model = enc.pretrained_text, enc.pretrained_text_model or enc.model
            repo = _hub_id(value) if value.startswith("hf-hub:") else _open_clip_repo(model, value)
            found.append(
                HubArtefact(_known(repo, "encoder.pretrained_text", value), "encoder.pretrained_text")
            )
        if not _is_local(enc.tokenizer):
            found.append(HubArtefact(_hub_id(enc.tokenizer), "encoder.tokenizer"))
    if "decoder" in stages:
        if dec.kind == "vlm" and not _is_local(dec.model):
            found.append(HubArtefact(_hub_id(dec.model), "decoder.model"))
        elif dec.kind == "captioner" and not _is_local(dec.tokenizer):
            found.append(HubArtefact(_hub_id(dec.tokenizer), "decoder.tokenizer", optional=True))
    return list({a.repo_id: a for a in reversed(found)}.values())[::-1]  # first mention wins


def _known(repo: str | None, key: str, value: str) -> str:
    if not repo:
        raise ConfigError(
            f"'{value}' is not a pretrained tag open_clip or timm can fetch",
            key=key,
            expected="hf-hub:<org>/<repo>, a tag of the model (open_clip.list_pretrained()), or a file",
        )
    return repo


def prefetch(
    artefacts: list[HubArtefact], *, cache_dir: str | None = None, offline: bool = False
) -> list[dict[str, Any]]:
    """Download each artefact's repository into the Hugging Face cache (what is cached already is not fetched).

    Args:
        artefacts: from :func:`hub_artefacts`.
        cache_dir: the cache (default: the standard one, ``HF_HOME``/``HF_HUB_CACHE``).
        offline: check the cache only (a workflow run with ``HF_HUB_OFFLINE=1`` by its user).

    Returns:
        One record per artefact: ``repo_id``, ``key``, ``revision`` (the commit cached), ``path`` (the
        snapshot folder), or ``missing`` with the reason for an optional one that could not be fetched.

    Raises:
        ConfigError: naming the config key when a repository is gated and the licence is not accepted or
            no token is set, when it does not exist, or when the Hub cannot be reached.
    """
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
    )

    records, queue = [], list(artefacts)
    while queue:
        a = queue.pop(0)
        try:
            path = fetch_artefact(a, offline=offline, cache_dir=cache_dir)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
            if a.optional:
                logger.warning("%s: %s could not be fetched (%s); its stage falls back", a.key, a.repo_id, e)
                records.append({"repo_id": a.repo_id, "key": a.key, "missing": str(e)})
                continue
            raise _fetch_error(a, e, offline) from e
        logger.info("%s: %s at %s", a.key, a.repo_id, path)
        revision = path.parent.name if a.filename else path.name  # .../snapshots/<commit>[/<file>]
        records.append({"repo_id": a.repo_id, "key": a.key, "revision": revision, "path": str(path)})
        if a.follow is not None:
            queue[:0] = a.follow(path)
    return records


def _fetch_error(a: HubArtefact, e: Exception, offline: bool) -> ConfigError:
    """What a failed fetch means for the user, naming the config key that asked for it."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return ConfigError(
            f"'{a.repo_id}' is gated and this account may not download it yet",
            key=a.key,
            expected=f"the licence accepted at https://huggingface.co/{a.repo_id} with the account whose token "
            "is set here (`hf auth login`, or HF_TOKEN), then this rule rerun",
        )
    if isinstance(e, RepositoryNotFoundError):
        return ConfigError(
            f"no Hub repository '{a.repo_id}' (or it is private)",
            key=a.key,
            expected="an existing repository id, or a local folder",
        )
    where = "is not in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "cannot be fetched"
    return ConfigError(
        f"'{a.repo_id}' {where} ({type(e).__name__}: {e})",
        key=a.key,
        expected="the Hugging Face Hub reachable from this host (run the workflow from a login node), or the "
        "repository already in the cache",
    )


def prefetch_experiment(
    params: dict[str, Any], out_json: str, *, offline: bool = False
) -> list[dict[str, Any]]:
    """The ``prefetch_weights`` rule: fetch what ``params`` (``prefetch_params`` in ``common.smk``: the stages
    and the keys that name artefacts) needs, and record each artefact's cached revision in ``out_json``."""
    enc = from_dict(EncoderConfig, params["encoder"], prefix="encoder")
    dec = from_dict(DecoderConfig, params["decoder"], prefix="decoder")
    return fetch_and_record(hub_artefacts(params["stages"], enc, dec), out_json, offline)


def fetch_and_record(artefacts: list[HubArtefact], out_json: str, offline: bool) -> list[dict[str, Any]]:
    """:func:`prefetch` the artefacts and write their records to ``out_json``."""
    import json

    from medlens.io import atomic_path

    logger.info("%d Hub artefact(s) to fetch: %s", len(artefacts), ", ".join(a.repo_id for a in artefacts))
    records = prefetch(artefacts, offline=offline)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(records, indent=2) + "\n")
    return records
