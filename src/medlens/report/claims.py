"""The seed systems' own claimed figures (``resources/report/seed_claims.yaml``) set beside medlens's.

A claim names where medlens's comparable number lives (``<source>:<path>``); :func:`compare_claims`
reads it from one collected experiment. A number medlens does not measure stays ``None`` and the
report shows it as missing, with the claim's note saying why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from medlens.config import dig
from medlens.errors import ConfigError
from medlens.resources import resource_path

__all__ = ["load_seed_claims", "list_seed_claims", "compare_claims", "measured_value", "SOURCES"]

# source in `measured: <source>:<path>` -> key of the collected experiment it reads
SOURCES = {
    "encoder_eval": "encoder_eval",
    "decoder_eval": "decoder_eval",
    "encoder_curves": "encoder_curves",
    "decoder_curves": "decoder_curves",
}
_CLAIM_KEYS = {"figure", "claimed", "seed", "quote", "measured", "note"}
_ENTRY_KEYS = {"system", "seeds", "claims", "note"}


def _default_path() -> Path:
    return resource_path("report", "seed_claims.yaml")


def _check_measured(ref: Any, file: str, key: str) -> None:
    if ref is None:
        return
    expected = f"null or <source>:<path> with source one of {', '.join(SOURCES)}"
    if not isinstance(ref, str) or ":" not in ref:
        raise ConfigError(f"measured {ref!r}", file=file, key=key, expected=expected)
    source, path = ref.split(":", 1)
    if source not in SOURCES or not path:
        raise ConfigError(f"measured {ref!r}", file=file, key=key, expected=expected)
    if source.endswith("_curves") and not path.endswith(("@first", "@last")):
        raise ConfigError(
            f"measured {ref!r}", file=file, key=key, expected="<metrics.csv column>@first or @last"
        )


def _read(path: str | os.PathLike | None) -> tuple[dict[str, Any], str]:
    path = Path(path) if path is not None else _default_path()
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            "not a mapping of seed systems", file=str(path), expected="<name>: {system, seeds, claims}"
        )
    return data, str(path)


def list_seed_claims(path: str | os.PathLike | None = None) -> list[str]:
    """Names an experiment may give as ``report.seed_claims``."""
    return sorted(_read(path)[0])


def load_seed_claims(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """One seed system's entry, checked.

    Args:
        name: the entry, i.e. an experiment's ``report.seed_claims``.
        path: the claims file; ``resources/report/seed_claims.yaml`` when None.

    Returns:
        ``{"name", "system", "seeds", "claims": [{figure, claimed, seed, quote, measured, note}], "note"}``.

    Raises:
        ConfigError: unknown name, unknown keys, a claim without a number, or a malformed ``measured``.
    """
    data, file = _read(path)
    if name not in data:
        raise ConfigError(
            f"unknown seed system '{name}'",
            file=file,
            key="report.seed_claims",
            expected=f"one of {', '.join(sorted(data))}",
        )
    entry = data[name]
    if not isinstance(entry, dict) or set(entry) - _ENTRY_KEYS or "system" not in entry:
        raise ConfigError(
            "malformed entry",
            file=file,
            key=name,
            expected=f"a mapping with system and optionally {', '.join(sorted(_ENTRY_KEYS - {'system'}))}",
        )
    claims = entry.get("claims") or []
    for i, claim in enumerate(claims):
        key = f"{name}.claims[{i}]"
        if (
            not isinstance(claim, dict)
            or set(claim) - _CLAIM_KEYS
            or not {"figure", "claimed", "seed"} <= set(claim)
        ):
            raise ConfigError(
                "malformed claim",
                file=file,
                key=key,
                expected=f"figure, claimed, seed and optionally quote, measured, note; got {claim!r}",
            )
        if isinstance(claim["claimed"], bool) or not isinstance(claim["claimed"], int | float):
            raise ConfigError(
                f"claimed {claim['claimed']!r}", file=file, key=f"{key}.claimed", expected="a number"
            )
        _check_measured(claim.get("measured"), file, f"{key}.measured")
    return {
        "name": name,
        "system": entry["system"],
        "seeds": list(entry.get("seeds") or []),
        "note": entry.get("note"),
        "claims": [{"quote": None, "measured": None, "note": None, **c} for c in claims],
    }


def measured_value(exp: dict[str, Any], ref: str | None) -> float | None:
    """The number ``ref`` (``<source>:<path>``) points to in a collected experiment, or None when absent."""
    if ref is None:
        return None
    source, path = ref.split(":", 1)
    data = exp.get(SOURCES[source])
    if source.endswith("_curves"):
        column, which = path.rsplit("@", 1)
        values = [row[column] for row in data or [] if column in row]
        if not values:
            return None
        return values[0] if which == "first" else values[-1]
    value = dig(data or {}, path)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def compare_claims(claims: dict[str, Any], exp: dict[str, Any]) -> list[dict[str, Any]]:
    """Each claim with medlens's number beside it (``measured`` None when missing) and their difference."""
    rows = []
    for claim in claims["claims"]:
        measured = measured_value(exp, claim["measured"])
        rows.append(
            {
                **claim,
                "measured_ref": claim["measured"],
                "measured": measured,
                "difference": None if measured is None else measured - claim["claimed"],
            }
        )
    return rows
