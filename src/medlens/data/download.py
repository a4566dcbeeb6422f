"""``download``: make a dataset's raw files available under ``results/raw/{dataset}/``.

Each source kind has one function; all end by writing ``.complete`` (the rule's marker output), so
an interrupted download is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from medlens.config import DatasetConfig
from medlens.errors import ConfigError
from medlens.io import atomic_path

__all__ = ["download_dataset"]

logger = logging.getLogger(__name__)


def _check_folder(cfg: DatasetConfig, name: str) -> Path:
    if not cfg.path:
        raise ConfigError(
            "missing required key",
            file="config/config.yaml",
            key=f"datasets.{name}.path",
            expected=f"the folder holding the data for source '{cfg.source}'",
        )
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"folder '{root}' does not exist",
            file="config/config.yaml",
            key=f"datasets.{name}.path",
            expected="an existing folder",
        )
    if cfg.source == "manifest" and not (root / cfg.manifest).is_file():
        raise ConfigError(
            f"manifest '{root / cfg.manifest}' not found",
            file="config/config.yaml",
            key=f"datasets.{name}.manifest",
            expected="a CSV file inside `path`",
        )
    return root.resolve()


def download_dataset(
    cfg: DatasetConfig, name: str, raw_dir: str | os.PathLike, marker: str | os.PathLike
) -> None:
    """Fetch (kaggle), check (path, manifest) or do nothing for (synthetic_cxr) one dataset.

    Args:
        cfg: the dataset definition.
        name: its name in ``config/config.yaml``.
        raw_dir: ``results/raw/{dataset}``.
        marker: the completion marker written last.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    info: dict = {"dataset": name, "source": cfg.source, "adapter": cfg.adapter}
    if cfg.source == "synthetic_cxr":
        logger.info("dataset '%s' is rendered by prepare_datasets; nothing to download", name)
    elif cfg.source in ("path", "manifest"):
        info["path"] = str(_check_folder(cfg, name))
        logger.info("dataset '%s' is read in place from %s", name, info["path"])
    elif cfg.source == "kaggle":
        from medlens.data.kaggle import download_kaggle

        info.update(download_kaggle(cfg, name, raw_dir))
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
