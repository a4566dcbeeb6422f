"""Dataset sources: where data comes from (``source:``) and how its files are read (``adapter:``).

A *source kind* says how the data arrives: ``synthetic_cxr`` renders it, ``manifest`` and ``path``
read a folder the user already has, ``kaggle`` downloads a slug first. An *adapter* knows one
dataset's on-disk format (``../shared/datasets.md``) and yields :class:`RawRecord` objects; the
``prepare`` stage decodes, validates and stores them. Adapters register themselves with
:func:`register_adapter`; a duplicate name is an error. A new adapter's name also goes into
``medlens.config.AdapterName`` and the config schema's enum, so that the config names it before any job
(``tests/unit/test_config.py`` compares them with :func:`list_adapters`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.config import DatasetConfig
from medlens.errors import ConfigError

__all__ = ["RawRecord", "Adapter", "register_adapter", "get_adapter", "list_adapters", "data_root"]

# Modules that define adapters; imported on first lookup so that importing this package stays cheap.
_ADAPTER_MODULES = (
    "synthetic_cxr",
    "manifest",
    "kaggle_pneumonia",
    "nih",
    "iu_xray",
    "mimic_cxr",
    "chexpert",
    "pad_ufes",
    "knee",
    "slake",
)


@dataclass
class RawRecord:
    """One image-text record as a source found it, before decoding and validation.

    ``image`` is anything :func:`medlens.data.images.load_image` accepts, or a zero-argument
    picklable callable returning one (the phantom renderer), so decoding runs in worker processes.
    A source that already knows a record is unusable sets ``reject`` to the reason; the record is
    then written to ``rejected.csv`` instead of being dropped.
    """

    native_id: str  # unique within the dataset
    image: Any
    text: str | None
    labels: list[str] = field(default_factory=list)
    text_source: str = "report"
    modality: str = "chest_xray"
    view: str | None = None
    patient_id: str | None = None
    study_id: str | None = None
    official_split: str | None = None  # train/val/test as the source defines it
    meta: dict[str, Any] = field(default_factory=dict)
    source_ref: str = ""  # file (and row) the record came from, for error messages
    reject: str | None = None
    reject_detail: str = ""  # what exactly was wrong (the value, path or field count), for rejected.csv


RecordsFn = Callable[[DatasetConfig, Path], Iterator[RawRecord]]


@dataclass(frozen=True)
class Adapter:
    name: str
    records: RecordsFn  # (dataset config, data root) -> records
    kaggle_slug: str | None = None  # default slug when used with `source: kaggle`
    description: str = ""


_REGISTRY: dict[str, Adapter] = {}


def register_adapter(name: str, *, kaggle_slug: str | None = None, description: str = ""):
    """Decorator registering ``fn(cfg, root) -> Iterator[RawRecord]`` as adapter ``name``."""

    def wrap(fn: RecordsFn) -> RecordsFn:
        if name in _REGISTRY:
            raise ValueError(f"adapter '{name}' is already registered")
        _REGISTRY[name] = Adapter(
            name, fn, kaggle_slug, description or (fn.__doc__ or "").strip().split("\n")[0]
        )
        return fn

    return wrap


def _load_all() -> None:
    for module in _ADAPTER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise


def list_adapters() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_adapter(cfg: DatasetConfig, *, dataset: str = "?") -> Adapter:
    """The adapter that reads ``cfg``: its ``adapter`` key, or the source kind itself.

    A ``kaggle`` source without ``adapter`` whose ``slug`` is some adapter's default slug uses that
    adapter, so ``slug: nih-chest-xrays/sample`` alone is enough.

    Raises:
        ConfigError: when the adapter is unknown, or missing for a ``path``/``kaggle`` source.
    """
    _load_all()
    name = cfg.adapter or cfg.source
    if cfg.adapter is None and cfg.source == "kaggle" and cfg.slug:
        name = next((a.name for a in _REGISTRY.values() if a.kaggle_slug == cfg.slug), name)
    if name in ("path", "kaggle"):
        raise ConfigError(
            f"missing required key for source '{cfg.source}'",
            file="config/config.yaml",
            key=f"datasets.{dataset}.adapter",
            expected=f"the format of the files, one of {', '.join(sorted(_REGISTRY))}",
        )
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown adapter '{name}'",
            file="config/config.yaml",
            key=f"datasets.{dataset}.adapter",
            expected=f"one of {', '.join(sorted(_REGISTRY))}",
        )
    return _REGISTRY[name]


def data_root(cfg: DatasetConfig, raw_dir: Path) -> Path:
    """Where the adapter reads from: the user's folder for path/manifest, the download folder otherwise."""
    if cfg.source in ("path", "manifest"):
        return Path(cfg.path).expanduser()
    return Path(raw_dir)
