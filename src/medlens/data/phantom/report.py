"""Radiology reports of the phantoms: ``FINDINGS:`` and ``IMPRESSION:`` phrased from templates.

The phrasings live in ``resources/phantom/report_templates.yaml`` (several per statement, with the
rules they follow). Every drawn finding is stated with its side, size, lobe or measurement, and some
absent findings are negated, in the order radiologists dictate (devices, heart, lungs, pleura,
bones). A report is returned with its :class:`Statement` list, so tests and other code can check
what it says without parsing English.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, replace
from typing import Any

import yaml

from medlens.config import SyntheticConfig
from medlens.data.phantom.sampling import Findings, Study, sample_studies
from medlens.errors import ConfigError
from medlens.resources import resource_path

__all__ = ["Statement", "Report", "write_report", "load_report_templates", "sample_reports"]

_TEMPLATES = ("phantom", "report_templates.yaml")
_REQUIRED = (
    "technique",
    "devices",
    "device_names",
    "cardiomegaly",
    "consolidation",
    "lung_lesion",
    "pleural_effusion",
    "pneumothorax",
    "pleura_negative",
    "edema",
    "atelectasis",
    "lungs_clear",
    "bones",
    "no_acute",
    "normal_study",
    "devices_impression",
    "numbers",
)
_ADVERB = {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}


@dataclass(frozen=True)
class Statement:
    """One sentence of a report and what it says."""

    labels: tuple[str, ...]  # the CheXpert names it speaks about (none for technique, clear lungs, bones)
    positive: bool  # False for a negation ("No pleural effusion or pneumothorax.")
    section: str  # "findings" or "impression"
    text: str


@dataclass(frozen=True)
class Report:
    text: str  # "FINDINGS: ... IMPRESSION: ..."
    statements: tuple[Statement, ...]


@functools.cache
def load_report_templates() -> dict[str, Any]:
    """The phrasings (``resources/phantom/report_templates.yaml``), read once per process.

    Raises:
        ConfigError: when the file lacks a statement the reports need.
    """
    path = resource_path(*_TEMPLATES)
    data = yaml.safe_load(path.read_text()) or {}
    missing = [key for key in _REQUIRED if not data.get(key)]
    if missing:
        raise ConfigError(
            f"missing phrasings for {', '.join(missing)}",
            file=str(path),
            key=missing[0],
            expected="a non-empty list or mapping of phrasings for every statement",
        )
    return data


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Writer:
    """Collects the statements of one report, drawing phrasings from one random stream."""

    def __init__(self, seed: int):
        self.t = load_report_templates()
        self.rng = random.Random(seed)
        self.out: list[Statement] = []

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def say(
        self, labels: str | tuple[str, ...], positive: bool, section: str, phrasings: list[str], **slots: Any
    ) -> None:
        """Fill one phrasing; ``{Name}`` slots get the capitalised value of ``name``."""
        slots.update({k[:1].upper() + k[1:]: _cap(str(v)) for k, v in list(slots.items())})
        text = _cap(self.rng.choice(phrasings).format(**slots))
        self.out.append(Statement((labels,) if isinstance(labels, str) else labels, positive, section, text))


def write_report(study: Study) -> Report:
    """The study's report, deterministic from its phrasing seed.

    Args:
        study: what the image shows.

    Returns:
        The report text (``FINDINGS: ... IMPRESSION: ...``) and its statements.
    """
    w = _Writer(study.phrasing_seed)
    f = study.findings
    if w.chance(0.5):
        w.say((), True, "findings", w.t["technique"][study.acquisition.view])
    _devices(w, f)
    _heart(w, f)
    _lungs(w, f)
    _pleura(w, f)
    if w.chance(0.4):
        w.say((), False, "findings", w.t["bones"])
    _impression(w, f)
    findings = " ".join(s.text for s in w.out if s.section == "findings")
    impression = " ".join(s.text for s in w.out if s.section == "impression")
    return Report(f"FINDINGS: {findings} IMPRESSION: {impression}", tuple(w.out))


def _device_slots(dev) -> dict[str, Any]:
    return {"side": dev.side or "", "route": dev.route or "", "cm": dev.tip_cm}


def _devices(w: _Writer, f: Findings) -> None:
    for dev in f.devices:
        w.say("Support Devices", True, "findings", w.t["devices"][dev.kind], **_device_slots(dev))


def _heart(w: _Writer, f: Findings) -> None:
    c = w.t["cardiomegaly"]
    if f.cardiomegaly is not None:
        w.say(
            "Cardiomegaly",
            True,
            "findings",
            c["positive"],
            severity=f.cardiomegaly,
            adverb=_ADVERB[f.cardiomegaly],
            ctr=f"{f.ctr:.2f}",
        )
    elif w.chance(0.9):
        w.say("Cardiomegaly", False, "findings", c["negative"])


def _lesion_slots(w: _Writer, f: Findings) -> dict[str, Any]:
    lesions = f.lesions
    kinds = {les.kind for les in lesions}
    plural = "nodules" if kinds == {"nodule"} else "masses" if kinds == {"mass"} else "nodules and masses"
    items = [f"{les.size_mm} mm in the {les.lobe}" for les in lesions]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    big = lesions[0]
    kind = ("lobulated " if big.lobulated else "") + big.kind
    return {
        "mm": big.size_mm,
        "lobe": big.lobe,
        "kind": kind,
        "kinds": plural,
        "list": listed,
        "count": w.t["numbers"][len(lesions)],
    }


def _atelectasis_slots(w: _Writer, at) -> tuple[list[str], dict[str, Any]]:
    a = w.t["atelectasis"]
    both = len(at.sides) == 2
    if at.zone == "lower" and both and w.chance(0.5):
        return a["bibasilar"], {"kind": at.kind}
    where = a["where"][f"{at.zone}_{'both' if both else 'one'}"]
    side = at.sides[0]
    slots = {
        "kind": at.kind,
        "where": w.rng.choice(where).format(side=side),
        "elevated": "both hemidiaphragms" if both else f"the {side} hemidiaphragm",
    }
    phrasings = a["elevation"] if at.elevation > 0 and w.chance(0.5) else a["positive"]
    return phrasings, slots


def _lungs(w: _Writer, f: Findings) -> None:
    t = w.t
    c = f.consolidation
    if c is not None:
        w.say("Consolidation", True, "findings", t["consolidation"]["positive"], lobe=c.lobe)
    if f.lesions:
        key = "one" if len(f.lesions) == 1 else "several"
        w.say("Lung Lesion", True, "findings", t["lung_lesion"][key], **_lesion_slots(w, f))
    if f.edema is not None:
        key = "interstitial" if f.edema.septal_lines else "alveolar"
        w.say("Edema", True, "findings", t["edema"][key], severity=f.edema.severity)
    if f.atelectasis is not None:
        phrasings, slots = _atelectasis_slots(w, f.atelectasis)
        w.say("Atelectasis", True, "findings", phrasings, **slots)
    parenchyma = c is not None or f.lesions or f.edema is not None or f.atelectasis is not None
    clear = not parenchyma and not f.effusions and f.pneumothorax is None and w.chance(0.7)
    if clear:
        w.say((), False, "findings", t["lungs_clear"])
    if c is None and w.chance(0.3 if clear else 0.6):
        w.say("Consolidation", False, "findings", t["consolidation"]["negative"])
    if not f.lesions and w.chance(0.25):
        w.say("Lung Lesion", False, "findings", t["lung_lesion"]["negative"])
    if f.edema is None and w.chance(0.4):
        w.say("Edema", False, "findings", t["edema"]["negative"])
    if f.atelectasis is None and w.chance(0.05):
        w.say("Atelectasis", False, "findings", t["atelectasis"]["negative"])


def _effusion_slots(f: Findings) -> tuple[str, dict[str, Any]]:
    sizes = {e.side: e.size for e in f.effusions}
    if len(sizes) == 1:
        ((side, size),) = sizes.items()
        return "one", {"side": side, "size": size}
    if sizes["right"] == sizes["left"]:
        return "both_same", {"size": sizes["right"]}
    return "both_different", {"right": sizes["right"], "left": sizes["left"]}


def _pleura(w: _Writer, f: Findings) -> None:
    t = w.t
    if f.effusions:
        key, slots = _effusion_slots(f)
        w.say("Pleural Effusion", True, "findings", t["pleural_effusion"][key], **slots)
    p = f.pneumothorax
    if p is not None:
        w.say(
            "Pneumothorax",
            True,
            "findings",
            t["pneumothorax"]["positive"],
            side=p.side,
            size=p.size,
            mm=p.rim_mm,
        )
    if not f.effusions and p is None:
        w.say(("Pleural Effusion", "Pneumothorax"), False, "findings", t["pleura_negative"])
    elif not f.effusions and w.chance(0.8):
        w.say("Pleural Effusion", False, "findings", t["pleural_effusion"]["negative"])
    elif p is None and w.chance(0.9):
        w.say("Pneumothorax", False, "findings", t["pneumothorax"]["negative"])


def _impression(w: _Writer, f: Findings) -> None:
    t = w.t
    before = len(w.out)
    if f.pneumothorax is not None:
        p = f.pneumothorax
        w.say("Pneumothorax", True, "impression", t["pneumothorax"]["impression"], side=p.side, size=p.size)
    c = f.consolidation
    if c is not None:
        if c.pneumonia:
            w.say("Pneumonia", True, "impression", t["consolidation"]["pneumonia"], lobe=c.lobe)
        else:
            w.say("Consolidation", True, "impression", t["consolidation"]["impression"], lobe=c.lobe)
    if f.effusions:
        key, slots = _effusion_slots(f)
        w.say("Pleural Effusion", True, "impression", t["pleural_effusion"][f"impression_{key}"], **slots)
    if f.edema is not None:
        w.say("Edema", True, "impression", t["edema"]["impression"], severity=f.edema.severity)
    if f.cardiomegaly is not None:
        w.say("Cardiomegaly", True, "impression", t["cardiomegaly"]["impression"], severity=f.cardiomegaly)
    if f.lesions:
        key = "impression_one" if len(f.lesions) == 1 else "impression_several"
        w.say("Lung Lesion", True, "impression", t["lung_lesion"][key], **_lesion_slots(w, f))
    if f.atelectasis is not None:
        _, slots = _atelectasis_slots(w, f.atelectasis)
        slots.setdefault("where", "at both lung bases")
        w.say("Atelectasis", True, "impression", t["atelectasis"]["impression"], **slots)
    if f.devices:
        names = [t["device_names"][d.kind].format(**_device_slots(d)) for d in f.devices]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        if len(w.out) == before or w.chance(0.7):
            w.say("Support Devices", True, "impression", t["devices_impression"], devices=joined)
    if all(s.labels == ("Support Devices",) for s in w.out[before:]):
        w.say("No Finding", True, "impression", t["no_acute"] if f.devices else t["normal_study"])


def sample_reports(
    n: int, *, seed: int = 0, cfg: SyntheticConfig | None = None
) -> list[tuple[str, list[str]]]:
    """(report text, labels) of ``n`` phantom studies, without rendering any pixels.

    For code that needs many realistic report/label pairs quickly, e.g. tests of a report labeler.
    The pairs are those the ``synthetic_cxr`` source would write for the same settings.

    Args:
        n: number of studies (and patients, at most ``n``).
        seed: the population's seed, used when ``cfg`` is not given.
        cfg: full phantom settings; ``n_images`` is replaced by ``n``.

    Returns:
        One (text, CheXpert labels) pair per study.
    """
    base = cfg or SyntheticConfig(seed=seed)
    cfg = replace(base, n_images=n, n_patients=min(base.n_patients, n))
    return [(write_report(s).text, s.labels) for s in sample_studies(cfg)]
