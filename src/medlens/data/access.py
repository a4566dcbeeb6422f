"""Whether a dataset can be read at all, answered when the DAG is built (a dry run included), not when a
job that waited for a GPU starts.

Checked without touching the data: a ``path`` source names its adapter; the folder of a ``path`` or
``manifest`` source exists (a placeholder ``/path/to/...`` left in ``config/config.yaml`` is named as such)
and holds its manifest; a ``kaggle`` source that has not been downloaded yet has credentials the client will
find. Only the standard library
and medlens's light modules are imported: this runs on every Snakemake start.
"""

from __future__ import annotations

import typing
from pathlib import Path

from medlens.config import AdapterName, DatasetConfig
from medlens.errors import ConfigError

__all__ = ["dataset_problems"]


def dataset_problems(name: str, cfg: DatasetConfig, raw_dir: Path, *, source: str) -> list[ConfigError]:
    """What keeps dataset ``name`` from being read, each problem naming the config file and key.

    Args:
        name: the dataset's name under ``datasets:``.
        cfg: its definition.
        raw_dir: ``results/raw/<name>``: a download that already completed needs no credentials.
        source: the config file, for the messages.
    """
    key = f"datasets.{name}"
    if cfg.source == "path" and cfg.adapter is None:  # a kaggle slug may name its adapter; a folder cannot
        return [
            ConfigError(
                "a path source needs an adapter",
                file=source,
                key=f"{key}.adapter",
                expected=f"the layout of its files, one of {', '.join(typing.get_args(AdapterName))} "
                "(docs/sources.md)",
            )
        ]
    if cfg.source in ("path", "manifest"):
        if not cfg.path:
            return [
                ConfigError(
                    "no folder given", file=source, key=f"{key}.path", expected="the dataset's folder"
                )
            ]
        folder = Path(cfg.path).expanduser()
        if not folder.is_dir():
            placeholder = "/path/to/" in cfg.path
            problem = f"'{cfg.path}' is {'still the placeholder' if placeholder else 'not a folder'}"
            return [
                ConfigError(
                    problem,
                    file=source,
                    key=f"{key}.path",
                    expected="the folder holding your copy of the dataset (docs/sources.md says what it "
                    "contains and where to get it)",
                )
            ]
        if cfg.source == "manifest" and not (folder / cfg.manifest).is_file():
            return [
                ConfigError(
                    f"'{folder / cfg.manifest}' does not exist",
                    file=source,
                    key=f"{key}.manifest",
                    expected="a CSV with the columns image and text inside the dataset's folder",
                )
            ]
    if cfg.source == "kaggle" and not (Path(raw_dir) / ".complete").is_file():
        from medlens.data.kaggle import (
            find_credentials,
            resolve_slug,
        )  # imported when a Kaggle source is used
        from medlens.data.sources import get_adapter

        try:
            # a slug no adapter reads, or a malformed one, would otherwise be found after a download of
            # up to 42 GB (the adapter) or by the Kaggle client (the slug)
            get_adapter(cfg, dataset=name)
            resolve_slug(cfg, name)
        except ConfigError as e:
            return [ConfigError(e.problem, file=source, key=e.key, expected=e.expected)]
        try:
            find_credentials()
        except ConfigError as e:
            return [
                ConfigError(
                    f"downloading it needs Kaggle credentials: {e.problem}",
                    file=source,
                    key=key,
                    expected=e.expected,
                )
            ]
    return []
