"""Locating the shipped assets in the repository's ``resources/`` folder (prompts, phrase lists, templates).

medlens is a pipeline repository installed in editable mode (``make`` does this), so the folder is
found next to ``src/``; ``MEDLENS_RESOURCES`` points elsewhere when needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from medlens.errors import ConfigError

__all__ = ["resource_path", "RESOURCES_DIR"]

RESOURCES_DIR = Path(os.environ.get("MEDLENS_RESOURCES", Path(__file__).resolve().parents[2] / "resources"))


def resource_path(*parts: str) -> Path:
    """Path of a shipped asset, e.g. ``resource_path("prompts", "chexzero.yaml")``.

    Raises:
        ConfigError: when a part is not a plain name (a user's value must not walk out of resources/), or
            when the asset does not exist, listing what its resources/ folder holds.
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise ConfigError(
                f"'{part}' is not the name of a shipped resource",
                expected="a plain name such as 'chexzero' (or a path to a .yaml file of your own)",
            )
    path = RESOURCES_DIR.joinpath(*parts)
    if not path.exists():
        parent = path.parent
        have = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        raise ConfigError(
            f"resource '{'/'.join(parts)}' not found in {RESOURCES_DIR}",
            expected=f"one of {', '.join(have)}" if have else "a file under resources/",
        )
    return path
