"""A rule-based CheXpert-style report labeler: 14 observations as positive (1), negative (0) or uncertain (-1).

It follows the stages of stanfordmlgroup/chexpert-labeler (../shared/datasets.md section 10): find the
mentions of each observation from phrase lists, classify every mention (pre-negation uncertainty, then
negation, then post-negation uncertainty, otherwise positive), aggregate the mentions of a report
(positive wins over uncertain, uncertain over negative), and derive "No Finding" (1 only when nothing
but support devices is positive or uncertain). CheXpert finds negation and hedging cues on a
dependency parse; no parser ships offline, so cues are found as phrases with NegEx-style scopes
(window, clause end, terminators). The phrase lists live in ``resources/labeler/`` so they can be
reviewed and extended without touching code.
"""
# long: a rules file's validation, phrase index, negation cues and labeling pass share one structure

from __future__ import annotations

import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medlens.config import FINDINGS
from medlens.errors import ConfigError, DataError
from medlens.resources import resource_path

__all__ = ["RuleLabeler", "load_rule_labeler", "label_report", "label_reports", "tokenize_report"]

NO_FINDING, SUPPORT_DEVICES = "No Finding", "Support Devices"
_CATEGORIES = ("pre_negation_uncertainty", "negation", "uncertainty")  # CheXpert's order of classification
_RESULT = {"pre_negation_uncertainty": -1, "negation": 0, "uncertainty": -1}
_DIRECTIONS = ("before", "after", "both")
_SENTENCE_END = {".", ";", "!"}
_POLARITY = {"positive": 1, "negative": 0, "uncertain": -1}
# Shorthand that would otherwise be split at the slash: expanded before tokenising.
_ABBREVIATIONS = (
    (r"\bw/o\b", " without "),
    (r"\bw/", " with "),
    (r"\bs/p\b", " status post "),
    (r"\br/o\b", " rule out "),
    (r"\band/or\b", " or "),
)
_SIBILANTS = ("s", "x", "z", "ch", "sh")
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?|[^\sa-z0-9]")


def tokenize_report(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens; hyphens between words and apostrophes are dropped."""
    t = text.lower()
    for pattern, repl in _ABBREVIATIONS:
        t = re.sub(pattern, repl, t)
    t = re.sub(r"(?<=[a-z0-9])-(?=[a-z0-9])", " ", t.replace("'", "").replace("\u2019", ""))
    return _TOKEN.findall(t)


@dataclass(frozen=True)
class _Span:
    start: int  # first token
    end: int  # one past the last token
    payload: Any


class _PhraseIndex:
    """Finds phrases (see resources/labeler/mentions.yaml for the syntax) in a token list."""

    def __init__(self, entries: Iterable[tuple[str, Any]]):
        self._exact: dict[str, list[tuple[tuple[str, ...], Any]]] = defaultdict(list)
        self._stems: list[tuple[tuple[str, ...], Any]] = []
        for phrase, payload in entries:
            words = tuple(tokenize_report(phrase.replace("*", " STEMMARK ")))
            words = tuple(_merge_stem_marks(words))
            (self._stems if words[0].endswith("*") else self._exact[words[0]]).append((words, payload))

    def find(self, tokens: list[str]) -> list[_Span]:
        found = []
        for i, tok in enumerate(tokens):
            forms = {tok, tok[:-1] if tok.endswith("s") else tok, tok[:-2] if tok.endswith("es") else tok}
            candidates = [c for f in forms for c in self._exact.get(f, ())]
            candidates += [c for c in self._stems if tok.startswith(c[0][0][:-1])]
            for words, payload in candidates:
                if i + len(words) <= len(tokens) and all(
                    _word_matches(tokens[i + k], w) for k, w in enumerate(words)
                ):
                    found.append(_Span(i, i + len(words), payload))
        return found


def _merge_stem_marks(words: tuple[str, ...]) -> Iterable[str]:
    """Re-attach the ``*`` of a stem, which tokenising split off as "stemmark"."""
    out: list[str] = []
    for w in words:
        if w == "stemmark" and out:
            out[-1] += "*"
        else:
            out.append(w)
    return out


def _word_matches(token: str, word: str) -> bool:
    if word.endswith("*"):
        return token.startswith(word[:-1])
    # English plurals: +es only after a sibilant, so "not" never matches "notes"
    return token == word or token == word + ("es" if word.endswith(_SIBILANTS) else "s")


def _longest_first(spans: list[_Span]) -> list[_Span]:
    """Non-overlapping spans, longer ones winning (so "cannot be ruled out" beats "ruled out").

    Spans with the same extent are all kept: one phrase may be listed with several roles (a cue that
    applies before and after the mention).
    """
    kept: list[_Span] = []
    taken: set[int] = set()
    extents: set[tuple[int, int]] = set()
    for s in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
        if (s.start, s.end) in extents or not taken.intersection(range(s.start, s.end)):
            kept.append(s)
            taken.update(range(s.start, s.end))
            extents.add((s.start, s.end))
    return sorted(kept, key=lambda s: s.start)


def _words_between(tokens: list[str], start: int, end: int) -> int:
    """Words between two positions; a comma counts as one (it separates "opacity, likely atelectasis")."""
    return sum(1 for t in tokens[start:end] if t[0].isalnum() or t == ",")


@dataclass(frozen=True)
class _Cue:
    category: str  # pseudo, terminator, or one of _CATEGORIES
    direction: str  # before, after, both
    window: int | None  # most words between cue and mention; None: the whole clause


@dataclass(frozen=True)
class _Mention:
    observation: str  # a FINDINGS name, "__other__" or "__implied__"
    span: _Span
    fixed: int | None = None  # label set by an anatomy attribute that is negative or uncertain
    implies: tuple[str, int] | None = None  # (observation, label) added when this mention holds


class RuleLabeler:
    """The rule-based labeler built from ``resources/labeler/{mentions,modifiers}.yaml``.

    Args:
        mentions: the parsed ``mentions.yaml``.
        modifiers: the parsed ``modifiers.yaml``.
        source: where they came from (for messages and the protocol).
        sha256: digest of the files they were read from (for the protocol).

    Raises:
        ConfigError: when a phrase list names an unknown observation or anatomy group, or a cue group
            has an unknown direction or a bad window.
    """

    name = "rules"

    def __init__(
        self,
        mentions: dict[str, Any],
        modifiers: dict[str, Any],
        *,
        source: str = "<dict>",
        sha256: str | None = None,
    ):
        # long: validation of a rules file, each error naming its key, in the file's order
        self.source, self.sha256 = source, sha256
        observations = _require(mentions, "observations", dict, source)
        allowed = [f for f in FINDINGS if f != NO_FINDING]
        mention_entries: list[tuple[str, Any]] = []
        unmention_entries: list[tuple[str, Any]] = []
        self._anatomy_of: dict[str, list[str]] = defaultdict(list)
        for obs, spec in observations.items():
            if obs not in allowed or not isinstance(spec, dict):
                raise ConfigError(
                    f"unknown observation '{obs}' or no phrases",
                    file=source,
                    key=f"observations.{obs}",
                    expected=f"one of {', '.join(allowed)} (No Finding "
                    "is derived), each a mapping with mention/unmention/anatomy",
                )
            mention_entries += [(p, obs) for p in _phrases(spec, "mention", f"observations.{obs}", source)]
            unmention_entries += [
                (p, obs) for p in _phrases(spec, "unmention", f"observations.{obs}", source)
            ]
            if spec.get("anatomy"):
                self._anatomy_of[spec["anatomy"]].append(obs)
        mention_entries += [(p, "__other__") for p in _phrases(mentions, "other_findings", "", source)]
        for i, rule in enumerate(mentions.get("implied", [])):
            if rule.get("adds") not in allowed or rule.get("label") not in (-1, 0, 1):
                raise ConfigError(
                    f"bad rule {rule!r}",
                    file=source,
                    key=f"implied[{i}]",
                    expected="adds: an observation name, label: -1, 0 or 1",
                )
            mention_entries += [
                (p, ("__implied__", rule["adds"], rule["label"]))
                for p in _phrases(rule, "phrases", f"implied[{i}]", source)
            ]
        self._mentions = _PhraseIndex(mention_entries)
        self._unmentions = _PhraseIndex(unmention_entries)

        anatomy = mentions.get("anatomy", {})
        for group in self._anatomy_of:
            if group not in anatomy:
                raise ConfigError(
                    f"unknown anatomy group '{group}'",
                    file=source,
                    key="observations.*.anatomy",
                    expected=f"one of {', '.join(anatomy) or '(none defined)'}",
                )
        self._terms = _PhraseIndex(
            (p, g) for g, spec in anatomy.items() for p in _phrases(spec, "terms", f"anatomy.{g}", source)
        )
        self._attributes = _PhraseIndex(
            (p, (g, pol))
            for g, spec in anatomy.items()
            for pol in _POLARITY
            for p in _phrases(spec, pol, f"anatomy.{g}", source)
        )
        window = mentions.get("anatomy_window")
        if not (
            isinstance(window, dict)
            and all(isinstance(window.get(k), int) and window[k] >= 0 for k in ("before", "after"))
        ):
            raise ConfigError(
                f"anatomy_window is {window!r}",
                file=source,
                key="anatomy_window",
                expected="{before: <words>, after: <words>}, integers >= 0",
            )
        self._anatomy_window = (window["before"], window["after"])

        cue_entries = [(p, _Cue("pseudo", "both", 0)) for p in _phrases(modifiers, "pseudo", "", source)]
        cue_entries += [
            (p, _Cue("terminator", "both", 0)) for p in _phrases(modifiers, "terminators", "", source)
        ]
        for category in _CATEGORIES:
            for i, group in enumerate(_require(modifiers, category, list, source)):
                window = group.get("window")
                if group.get("direction") not in _DIRECTIONS or not (
                    window is None or (isinstance(window, int) and window >= 0)
                ):
                    raise ConfigError(
                        f"bad cue group {dict(group, phrases='...')!r}",
                        file=source,
                        key=f"{category}[{i}]",
                        expected=f"direction in {_DIRECTIONS}, window null or an integer >= 0",
                    )
                cue = _Cue(category, group["direction"], window)
                cue_entries += [(p, cue) for p in _phrases(group, "phrases", f"{category}[{i}]", source)]
        self._cues = _PhraseIndex(cue_entries)

    def label(self, text: str) -> dict[str, int]:
        """Labels of one report: ``{observation: 1 | 0 | -1}`` for the observations it mentions.

        Observations the report does not mention are left out. "No Finding" is 1 when no observation
        other than Support Devices (and no other abnormality such as emphysema) is positive or
        uncertain, and left out otherwise (CheXpert never labels it 0).

        Raises:
            DataError: when ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise DataError(f"report of type {type(text).__name__}", column="text", expected="a string")
        found: dict[str, list[int]] = defaultdict(list)
        blocked = False
        for sentence in _sentences(tokenize_report(text)):
            for mention, value in self._label_sentence(sentence):
                if mention.observation == "__other__":
                    blocked |= value != 0
                elif mention.implies is not None:
                    if value != 0:
                        found[mention.implies[0]].append(mention.implies[1])
                else:
                    found[mention.observation].append(value)
        labels = {obs: 1 if 1 in values else -1 if -1 in values else 0 for obs, values in found.items()}
        if not blocked and not any(v != 0 for obs, v in labels.items() if obs != SUPPORT_DEVICES):
            labels[NO_FINDING] = 1
        return {obs: labels[obs] for obs in FINDINGS if obs in labels}

    def describe(self) -> dict[str, Any]:
        """What produced the labels, for the protocol of every number computed from them."""
        return {
            "name": "medlens rule-based CheXpert-style labeler",
            "phrases": self.source,
            "phrases_sha256": self.sha256,
        }

    def label_texts(self, texts: Iterable[str]) -> list[dict[str, int]]:
        """:meth:`label` of each text."""
        return [self.label(t) for t in texts]

    def _label_sentence(self, tokens: list[str]) -> list[tuple[_Mention, int]]:
        cues = _longest_first(self._cues.find(tokens))
        terminators = [c.start for c in cues if c.payload.category == "terminator"]
        active = [c for c in cues if c.payload.category in _CATEGORIES]
        unmentions = self._unmentions.find(tokens)
        mentions = [
            _Mention(s.payload, s)
            if isinstance(s.payload, str)
            else _Mention("__implied__", s, implies=(s.payload[1], s.payload[2]))
            for s in self._mentions.find(tokens)
        ]
        mentions += self._anatomy_mentions(tokens, terminators)
        out = []
        for m in mentions:
            if any(
                u.payload == m.observation and u.start < m.span.end and m.span.start < u.end
                for u in unmentions
            ):
                continue
            value = m.fixed if m.fixed is not None else _classify(m.span, active, terminators, tokens)
            out.append((m, value))
        return out

    def _anatomy_mentions(self, tokens: list[str], terminators: list[int]) -> list[_Mention]:
        """Anatomy terms with their nearest attribute ("heart size is normal", "enlarged cardiac silhouette")."""
        terms = self._terms.find(tokens)
        attributes = self._attributes.find(tokens)
        before, after = self._anatomy_window
        out = []
        # each group resolves its own overlaps: "normal" is an attribute of the heart and of the mediastinum
        for term in [
            t for g in self._anatomy_of for t in _longest_first([t for t in terms if t.payload == g])
        ]:
            best: tuple[int, _Span] | None = None
            for attr in _longest_first([a for a in attributes if a.payload[0] == term.payload]):
                if attr.end <= term.start:
                    gap, lo, hi, limit = (
                        _words_between(tokens, attr.end, term.start),
                        attr.end,
                        term.start,
                        before,
                    )
                elif attr.start >= term.end:
                    gap, lo, hi, limit = (
                        _words_between(tokens, term.end, attr.start),
                        term.end,
                        attr.start,
                        after,
                    )
                else:
                    continue
                # punctuation between the two adds to the distance, so "normal heart, enlarged
                # mediastinum" gives each term its own attribute
                distance = hi - lo
                if (
                    gap <= limit
                    and not any(lo <= t < hi for t in terminators)
                    and (best is None or distance < best[0])
                ):
                    best = (distance, attr)
            if best is None:
                continue
            attr = best[1]
            span = _Span(min(term.start, attr.start), max(term.end, attr.end), term.payload)
            polarity = _POLARITY[attr.payload[1]]
            for obs in self._anatomy_of.get(term.payload, []):
                out.append(_Mention(obs, span, fixed=None if polarity == 1 else polarity))
        return out


def _classify(span: _Span, cues: list[_Span], terminators: list[int], tokens: list[str]) -> int:
    """CheXpert's order: pre-negation uncertainty, negation, post-negation uncertainty, else positive."""
    for category in _CATEGORIES:
        if any(c.payload.category == category and _governs(c, span, terminators, tokens) for c in cues):
            return _RESULT[category]
    return 1


def _governs(cue: _Span, span: _Span, terminators: list[int], tokens: list[str]) -> bool:
    spec: _Cue = cue.payload
    if cue.start >= span.start and cue.end <= span.end:
        return True
    if cue.end <= span.start and spec.direction in ("before", "both"):
        lo, hi = cue.end, span.start
    elif cue.start >= span.end and spec.direction in ("after", "both"):
        lo, hi = span.end, cue.start
    else:
        return False
    if spec.window is not None and _words_between(tokens, lo, hi) > spec.window:
        return False
    return not any(lo <= t < hi for t in terminators)


def _sentences(tokens: list[str]) -> Iterable[list[str]]:
    sentence: list[str] = []
    for tok in tokens:
        if tok in _SENTENCE_END:
            if sentence:
                yield sentence
            sentence = []
        else:
            sentence.append(tok)
    if sentence:
        yield sentence


def _require(d: dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = d.get(key) if isinstance(d, dict) else None
    if not isinstance(value, kind):
        raise ConfigError(
            f"missing or not a {kind.__name__}",
            file=source,
            key=key,
            expected=f"a {kind.__name__} (see resources/labeler/)",
        )
    return value


def _phrases(d: dict[str, Any], key: str, where: str, source: str) -> list[str]:
    """The phrase list ``d[key]`` (empty when absent), checked to hold only non-empty strings."""
    value = d.get(key, [])
    bad = (
        [p for p in value if not isinstance(p, str) or not p.strip()] if isinstance(value, list) else [value]
    )
    if bad:
        raise ConfigError(
            f"not a phrase: {bad[0]!r}",
            file=source,
            key=f"{where}.{key}".lstrip("."),
            expected='a list of non-empty strings (quote words YAML reads as booleans, e.g. "no")',
        )
    return value


@functools.lru_cache(maxsize=4)
def load_rule_labeler(directory: str | None = None) -> RuleLabeler:
    """The labeler from ``mentions.yaml`` and ``modifiers.yaml`` in ``directory`` (default: the shipped lists).

    Raises:
        ConfigError: when a file is missing or malformed.
    """
    paths = (
        [Path(directory) / "mentions.yaml", Path(directory) / "modifiers.yaml"]
        if directory
        else [resource_path("labeler", "mentions.yaml"), resource_path("labeler", "modifiers.yaml")]
    )
    loaded, digest = [], hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise ConfigError(
                "phrase list not found", file=str(path), expected="mentions.yaml and modifiers.yaml"
            )
        raw = path.read_bytes()
        digest.update(raw)
        try:
            loaded.append(yaml.safe_load(raw.decode("utf-8")) or {})
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}", file=str(path)) from e
    return RuleLabeler(
        loaded[0], loaded[1], source=", ".join(str(p) for p in paths), sha256=digest.hexdigest()
    )


def label_report(text: str) -> dict[str, int]:
    """Labels of one report with the shipped phrase lists; see :meth:`RuleLabeler.label`."""
    return load_rule_labeler().label(text)


def label_reports(texts: Iterable[str]) -> list[dict[str, int]]:
    """:func:`label_report` of each text."""
    labeler = load_rule_labeler()
    return [labeler.label(t) for t in texts]
