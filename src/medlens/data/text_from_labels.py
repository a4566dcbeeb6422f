"""Text synthesised from labels, for sources that have labels but no reports.

ExplainMyXray (``seeds/003``, section 6.1) trains its report generator on short reports built from
the Kaggle pneumonia and NIH labels. medlens does the same with the phrase lists in
``resources/text_templates/<modality>.yaml``: several phrasings per finding, negatives, laterality
and sub-types when the source records them. The choice of phrasing is deterministic: it depends
only on the dataset's ``seed`` and the record id, so a re-run writes byte-identical text.
"""

from __future__ import annotations

import functools
import hashlib
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from medlens.errors import ConfigError
from medlens.resources import resource_path

__all__ = ["synthesize_text", "load_templates", "join_words"]

_FORMATTER = string.Formatter()


@functools.cache
def load_templates(modality: str) -> dict[str, Any]:
    """The phrase lists for one modality (``resources/text_templates/<modality>.yaml``), with aliases resolved.

    Raises:
        ConfigError: when the file is missing or a label entry has no phrasings.
    """
    path = resource_path("text_templates", f"{modality}.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    labels = data.get("labels") or {}
    canonical: dict[str, str] = {}
    for name, entry in labels.items():
        if not isinstance(entry, dict) or "positive" not in entry:
            raise ConfigError(
                "label entry without `positive:` phrasings",
                file=str(path),
                key=f"labels.{name}",
                expected="a mapping with positive (and optional negative, uncertain) lists",
            )
        canonical[name] = name
        for alias in entry.get("aliases", ()):
            canonical[alias] = name
    data["_canonical"] = canonical
    data["_path"] = str(path)
    return data


def join_words(words: Sequence[str], conjunction: str = "and") -> str:
    """``["a"]`` -> ``a``; ``["a", "b", "c"]`` -> ``a, b and c``."""
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _placeholders(phrasing: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(phrasing) if name}


def _choose(phrasings: Sequence[str] | None, values: Mapping[str, str], rng: random.Random) -> str | None:
    """One phrasing whose placeholders are all known, preferring those that use the most of them."""
    usable = [p for p in phrasings or () if _placeholders(p) <= values.keys()]
    if not usable:
        return None
    most = max(len(_placeholders(p)) for p in usable)
    best = [p for p in usable if len(_placeholders(p)) == most]
    return best[rng.randrange(len(best))].format(**values)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] if text else text


def _rng(seed: int, record_id: str) -> random.Random:
    # sha256, not hash(): Python salts str hashes per process, and phrasing must repeat across runs
    # surrogateescape: a file name that is not UTF-8 (its bytes kept as surrogates) must not stop the dataset
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode(errors="surrogateescape")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def synthesize_text(
    labels: Sequence[str],
    *,
    modality: str,
    record_id: str,
    seed: int = 0,
    negatives: Sequence[str] | None = None,
    uncertain: Sequence[str] = (),
    label_context: Mapping[str, Mapping[str, str]] | None = None,
    context: Mapping[str, str | Sequence[str]] | None = None,
) -> str:
    """A short report for one record, built from its labels.

    Args:
        labels: positive findings (template names or their aliases, e.g. NIH ``Effusion``).
        modality: selects ``resources/text_templates/<modality>.yaml``.
        record_id: the record's native id; with ``seed`` it fixes every phrasing choice.
        seed: the dataset's ``seed``.
        negatives: findings the source marks absent (CheXpert ``0.0``); when None a few of the
            template's ``default_negatives`` are stated instead, as a radiologist would.
        uncertain: findings the source marks uncertain (CheXpert ``-1.0``), phrased with hedging.
        label_context: per finding, placeholder values such as ``{"side": "left"}`` or
            ``{"qualifier": "bacterial"}``.
        context: record-level placeholder values (``view``, ``side``, ``site``, ...); list values
            are joined with "and" (or the conjunction the template's ``join:`` gives).

    Returns:
        The text, or ``""`` when there is nothing to say (no positive, uncertain or negative finding).

    Raises:
        ConfigError: when a label has no phrasings in the template file.
    """
    # long: its docstring; the sentence rules run in report order, which splitting would scatter
    tpl = load_templates(modality)
    canonical = tpl["_canonical"]

    def canon(name: str) -> str:
        if name not in canonical:
            raise ConfigError(
                f"no phrasings for label '{name}'",
                file=tpl["_path"],
                key=f"labels.{name}",
                expected="an entry for every label the source emits",
            )
        return canonical[name]

    rng = _rng(seed, record_id)
    joins = tpl.get("join") or {}
    values: dict[str, str] = {}
    for key, value in (context or {}).items():
        if value is None or value == "" or (not isinstance(value, str) and not value):
            continue
        values[key] = value if isinstance(value, str) else join_words(list(value), joins.get(key, "and"))
    if "view" in values:
        view = (tpl.get("views") or {}).get(values["view"])
        values.pop("view") if view is None else values.update(view=view)

    normal_label = tpl.get("normal_label")
    names = list(dict.fromkeys(canon(x) for x in labels))
    is_normal = normal_label is not None and normal_label in names
    positives = [x for x in names if x != normal_label]
    unsure = [x for x in dict.fromkeys(canon(x) for x in uncertain) if x not in positives]
    said = set(positives) | set(unsure) | ({normal_label} if is_normal else set())
    if negatives is not None:
        denied = [
            x for x in dict.fromkeys(canon(x) for x in negatives) if x not in said and x != normal_label
        ]
        limit = int(tpl.get("max_negatives", len(denied)))
        if len(denied) > limit:
            keep = set(rng.sample(denied, limit))
            denied = [x for x in denied if x in keep]
    elif not is_normal and (positives or unsure) and tpl.get("default_negatives"):
        not_with = tpl["default_negatives"].get("not_with") or {}
        related = {r for x in said for r in not_with.get(x, ())}
        pool = [x for x in tpl["default_negatives"]["pool"] if x not in said and x not in related]
        lo, hi = tpl["default_negatives"].get("count", [1, 1])
        denied = sorted(rng.sample(pool, min(len(pool), rng.randint(lo, hi))), key=pool.index)
    else:
        denied = []
    if not (positives or unsure or denied or is_normal):
        return ""

    entries = tpl["labels"]
    sentences = [_choose(tpl.get("opening"), values, rng)]
    if is_normal:
        sentences.append(_choose(tpl.get("normal"), values, rng))
    per_label = {canon(k): {x: y for x, y in v.items() if y} for k, v in (label_context or {}).items()}
    for name in positives:
        sentences.append(_choose(entries[name]["positive"], {**values, **per_label.get(name, {})}, rng))
    for name in unsure:
        sentences.append(_choose(entries[name].get("uncertain"), values, rng))
    for name in denied:
        sentences.append(_choose(entries[name].get("negative"), values, rng))
    for group, phrasings in (tpl.get("context") or {}).items():
        wanted = group in values or any(
            _placeholders(p) and _placeholders(p) <= values.keys() for p in phrasings
        )
        if wanted:
            sentences.append(_choose(phrasings, values, rng))
    impression = tpl.get("impression") or {}
    if positives:
        terms = [entries[x].get("term", x.lower()) for x in positives]
        sentences.append(_choose(impression.get("abnormal"), {**values, "findings": join_words(terms)}, rng))
    elif is_normal:
        sentences.append(_choose(impression.get("normal"), values, rng))
    return " ".join(_sentence(s) for s in sentences if s)
