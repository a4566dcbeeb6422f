"""Sampling the phantom population: patients, their studies, and what each study shows.

Everything follows from ``SyntheticConfig.seed`` through independent random streams
(``numpy.random.default_rng([seed, stream, patient, study])``), so a study does not depend on the
order in which studies are rendered, on the number of workers, or on how many studies come after it.

A patient keeps one body plan (:class:`~medlens.data.phantom.anatomy.Anatomy`) and the chronic
findings (:data:`~medlens.data.phantom.vocabulary.PATIENT_FINDINGS`: heart size and lung lesions)
in every study; acute findings, devices and the acquisition change from study to study. Each finding
carries what the report says about it (side, size, lobe, millimetres), so the report, the labels and
the pixels are three views of one record.
"""
# long: one random stream per decision, and every finding's sampling beside the report details it carries

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medlens.config import SyntheticConfig
from medlens.data.phantom.anatomy import Acquisition, Anatomy
from medlens.data.phantom.vocabulary import (
    AP_MAGNIFICATION,
    CTR_MARGIN,
    CTR_RANGE,
    LABELS,
    MM_PER_UNIT,
    PATIENT_FINDINGS,
    SAMPLED_FINDINGS,
    check_synthetic_config,
    resolved_co_occurrence,
    resolved_prevalence,
)

__all__ = [
    "Effusion",
    "Lesion",
    "Consolidation",
    "Pneumothorax",
    "Edema",
    "Atelectasis",
    "Device",
    "Findings",
    "Study",
    "sample_studies",
    "study_labels",
    "conditional_probabilities",
    "LOBE_REGIONS",
]

# Where each lobe projects on a frontal film, as (u, v) ranges of Geometry.lung_point:
# u runs medial (0) to lateral (1), v apex (0) to dome (1). The middle lobe borders the right heart
# border, the lower lobes the domes; the left upper lobe includes the lingula.
LOBE_REGIONS = {
    "right upper lobe": ((0.25, 0.8), (0.1, 0.35)),
    "right middle lobe": ((0.12, 0.5), (0.55, 0.72)),
    "right lower lobe": ((0.35, 0.8), (0.72, 0.88)),
    "left upper lobe": ((0.25, 0.8), (0.1, 0.45)),
    "left lower lobe": ((0.4, 0.8), (0.68, 0.88)),
}

# Share of the lung height (costophrenic angle to apex) that the fluid reaches at the chest wall.
_EFFUSION_HEIGHT = {"small": (0.12, 0.17), "moderate": (0.24, 0.32), "large": (0.40, 0.52)}
# Distance of the visceral pleural edge from the chest wall, in canonical units (1 = 400 mm).
_PNEUMOTHORAX_RIM = {"small": (0.04, 0.05), "moderate": (0.06, 0.08), "large": (0.09, 0.12)}
_CARDIOMEGALY_SPAN = 0.14  # enlarged ratios reach this far above the threshold
_NORMAL_SPAN = 0.08  # normal ratios lie in a band this wide below the threshold


@dataclass(frozen=True)
class Effusion:
    side: str  # "right" or "left"
    size: str  # small / moderate / large
    height: float  # fluid height at the chest wall, as a share of the lung height


@dataclass(frozen=True)
class Lesion:
    side: str
    lobe: str
    size_mm: int  # diameter
    u: float  # position in the lung field (Geometry.lung_point)
    v: float
    lobulated: bool  # drawn with an irregular outline

    @property
    def kind(self) -> str:
        """A mass is a lesion larger than 3 cm (Fleischner glossary); smaller ones are nodules."""
        return "mass" if self.size_mm > 30 else "nodule"


@dataclass(frozen=True)
class Consolidation:
    side: str
    lobe: str
    u: float  # centre of the opacity in the lung field
    v: float
    radius: float  # canonical units
    pneumonia: bool  # the impression calls it pneumonia
    seed: int  # shape of the patches


@dataclass(frozen=True)
class Pneumothorax:
    side: str
    size: str  # small / moderate / large
    rim: float  # distance of the visceral pleural edge from the chest wall, canonical units

    @property
    def rim_mm(self) -> int:
        return int(round(self.rim * MM_PER_UNIT))


@dataclass(frozen=True)
class Edema:
    severity: str  # mild / moderate
    septal_lines: bool  # Kerley B lines at the lung bases


@dataclass(frozen=True)
class Atelectasis:
    sides: tuple[str, ...]  # ("right",), ("left",) or ("right", "left")
    zone: str  # "lower" (at the lung base) or "mid"
    kind: str  # plate-like / linear / subsegmental
    v: float  # height of the band in the lung field
    tilt: float  # degrees; bands run almost horizontally
    elevation: float  # volume loss raises the hemidiaphragm of a basal band by this much (canonical units)

    def dome_raise(self) -> tuple[float, float]:
        """(right, left) elevation of the hemidiaphragms."""
        return tuple(self.elevation if s in self.sides else 0.0 for s in ("right", "left"))


@dataclass(frozen=True)
class Device:
    kind: str  # "endotracheal tube", "central venous catheter" or "enteric tube"
    side: str | None = None  # central venous catheter: the side of the vein it enters
    route: str | None = None  # central venous catheter: "internal jugular" or "subclavian"
    tip_cm: int | None = None  # endotracheal tube: tip distance above the carina


@dataclass(frozen=True)
class Findings:
    ctr: float  # the rendered cardiothoracic ratio (AP magnification included)
    cardiomegaly: str | None  # severity (mild / moderate / marked) of an enlarged heart, None when normal
    effusions: tuple[Effusion, ...] = ()
    consolidation: Consolidation | None = None
    lesions: tuple[Lesion, ...] = ()
    pneumothorax: Pneumothorax | None = None
    edema: Edema | None = None
    atelectasis: Atelectasis | None = None
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True)
class Study:
    """One radiograph: who, how it was taken, and what it shows."""

    study_id: str
    patient_id: str
    anatomy: Anatomy
    acquisition: Acquisition
    findings: Findings
    phrasing_seed: int  # choice of report phrasings

    @property
    def labels(self) -> list[str]:
        return study_labels(self.findings)


def study_labels(f: Findings) -> list[str]:
    """CheXpert names of what the study shows, in :data:`LABELS` order (No Finding by the CheXpert rule)."""
    present = {
        "Cardiomegaly": f.cardiomegaly is not None,
        "Lung Lesion": bool(f.lesions),
        "Edema": f.edema is not None,
        "Consolidation": f.consolidation is not None,
        "Pneumonia": f.consolidation is not None and f.consolidation.pneumonia,
        "Atelectasis": f.atelectasis is not None,
        "Pneumothorax": f.pneumothorax is not None,
        "Pleural Effusion": bool(f.effusions),
        "Support Devices": bool(f.devices),
    }
    present["No Finding"] = not any(v for k, v in present.items() if k != "Support Devices")
    return [name for name in LABELS if present[name]]


def conditional_probabilities(
    prevalence: dict[str, float], co_occurrence: dict[str, tuple[str, float]]
) -> dict[str, tuple[float, float]]:
    """finding -> (P(finding | parent present), P(finding | parent absent)).

    The lift raises the probability given the parent; the probability without the parent is lowered
    so that the overall prevalence stays as configured, as far as probabilities in [0, 1] allow.
    A finding without a parent gets its prevalence twice.
    """
    out = {}
    for name in SAMPLED_FINDINGS:
        p = prevalence[name]
        if name not in co_occurrence:
            out[name] = (p, p)
            continue
        parent, lift = co_occurrence[name]
        q = prevalence[parent]
        with_parent = min(1.0, lift * p)
        without = p if q >= 1.0 else min(1.0, max(0.0, (p - q * with_parent) / (1.0 - q)))
        out[name] = (with_parent, without)
    return out


def sample_studies(cfg: SyntheticConfig) -> list[Study]:
    """The whole population of ``cfg``: ``n_images`` studies of ``n_patients`` patients, in a fixed order.

    Args:
        cfg: the phantom settings (checked with
            :func:`~medlens.data.phantom.vocabulary.check_synthetic_config` first).

    Returns:
        Studies ordered by patient, then by study; ids are ``p00012`` and ``p00012-s1``.

    Raises:
        ConfigError: when ``cfg`` holds a value out of range.
    """
    check_synthetic_config(cfg)
    probs = conditional_probabilities(resolved_prevalence(cfg), resolved_co_occurrence(cfg))
    parents = {child: parent for child, (parent, _) in resolved_co_occurrence(cfg).items()}
    extra = np.random.default_rng([cfg.seed, 0]).integers(0, cfg.n_patients, cfg.n_images - cfg.n_patients)
    counts = 1 + np.bincount(extra, minlength=cfg.n_patients)
    width = max(5, len(str(cfg.n_patients - 1)))
    studies = []
    for p in range(cfg.n_patients):
        rng = np.random.default_rng([cfg.seed, 1, p])
        chronic = _draw_present(rng, probs, parents, {}, only=PATIENT_FINDINGS)
        anatomy = _sample_anatomy(rng, _sample_ctr(rng, chronic["Cardiomegaly"], cfg.cardiomegaly_ctr))
        lesions = _sample_lesions(rng) if chronic["Lung Lesion"] else ()
        pid = f"p{p:0{width}d}"
        for k in range(int(counts[p])):
            srng = np.random.default_rng([cfg.seed, 2, p, k])
            acq = _sample_acquisition(srng, cfg.ap_fraction)
            present = _draw_present(
                srng, probs, parents, chronic, only=tuple(n for n in SAMPLED_FINDINGS if n not in chronic)
            )
            ctr = (
                anatomy.heart_ctr
                if acq.view == "PA"
                else min(anatomy.heart_ctr * AP_MAGNIFICATION, CTR_RANGE[1])
            )
            findings = _sample_findings(
                srng, present, ctr, cfg.cardiomegaly_ctr, lesions, cfg.pneumonia_fraction
            )
            studies.append(Study(f"{pid}-s{k}", pid, anatomy, acq, findings, int(srng.integers(2**31))))
    return studies


def _draw_present(
    rng: np.random.Generator,
    probs: dict[str, tuple[float, float]],
    parents: dict[str, str],
    known: dict[str, bool],
    only: tuple[str, ...],
) -> dict[str, bool]:
    """``known`` plus a draw for each name in ``only``, in order, each conditioned on its parent."""
    present = dict(known)
    for name in only:
        with_parent, without = probs[name]
        parent = parents.get(name)
        p = with_parent if parent is not None and present.get(parent, False) else without
        present[name] = bool(rng.random() < p)
    return present


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sample_anatomy(rng: np.random.Generator, ctr: float) -> Anatomy:
    w = _uniform(rng, 0.31, 0.355)
    apex = _uniform(rng, 0.12, 0.155)
    dome_r = _uniform(rng, 0.69, 0.74)
    return Anatomy(
        cx=_uniform(rng, 0.49, 0.51),
        half_width=(w * _uniform(rng, 0.98, 1.03), w * _uniform(rng, 0.97, 1.02)),
        apex_y=apex,
        dome_y=(dome_r, dome_r + _uniform(rng, 0.01, 0.03)),  # the right dome sits higher (the liver)
        cp_drop=_uniform(rng, 0.04, 0.06),
        medial=_uniform(rng, 0.045, 0.06),
        heart_ctr=ctr,
        heart_aspect=_uniform(rng, 0.85, 1.0),
        heart_tilt=_uniform(rng, 12.0, 25.0),
        heart_right_share=_uniform(rng, 0.3, 0.38),
        rib_spacing=(dome_r - apex) / _uniform(rng, 9.0, 10.5),
        rib_width=_uniform(rng, 0.018, 0.024),
        clavicle_y=apex + _uniform(rng, 0.02, 0.05),
        soft_tissue=_uniform(rng, 0.03, 0.06),
        tissue=_uniform(rng, 0.92, 1.08),
        breasts=bool(rng.random() < 0.45),
        texture_seed=int(rng.integers(2**31)),
    )


def _sample_ctr(rng: np.random.Generator, enlarged: bool, threshold: float) -> float:
    """The patient's ratio on a PA film, kept clear of the threshold on PA and AP films alike."""
    if enlarged:
        lo = threshold + CTR_MARGIN
        return _uniform(rng, lo, min(threshold + _CARDIOMEGALY_SPAN, CTR_RANGE[1]))
    hi = (threshold - CTR_MARGIN) / AP_MAGNIFICATION
    return _uniform(rng, max(CTR_RANGE[0], hi - _NORMAL_SPAN), hi)


def _sample_acquisition(rng: np.random.Generator, ap_fraction: float) -> Acquisition:
    view = "AP" if rng.random() < ap_fraction else "PA"
    lo = _uniform(rng, 0.0, 0.04)
    return Acquisition(
        view=view,
        scale=_uniform(rng, 0.96, 1.02) * (1.02 if view == "AP" else 1.0),
        rotation=_uniform(rng, -2.0, 2.0),
        shift=(_uniform(rng, -0.012, 0.012), _uniform(rng, -0.012, 0.012)),
        inspiration=_uniform(rng, -0.02, 0.02),
        gain=_uniform(rng, 0.93, 1.07),
        window=(lo, lo + _uniform(rng, 0.66, 0.76)),
        gamma=_uniform(rng, 0.85, 1.2),
        noise=_uniform(rng, 0.008, 0.025),
        blur=_uniform(rng, 0.4, 1.0),
        gastric_bubble=bool(rng.random() < 0.7),
        seed=int(rng.integers(2**31)),
    )


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    weights = np.array([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _point_in(rng: np.random.Generator, lobe: str) -> tuple[float, float]:
    (u0, u1), (v0, v1) = LOBE_REGIONS[lobe]
    return _uniform(rng, u0, u1), _uniform(rng, v0, v1)


def _side_of(lobe: str) -> str:
    return lobe.split()[0]


def _sample_lesions(rng: np.random.Generator) -> tuple[Lesion, ...]:
    """One to five nodules or masses, most often in the upper lobes (as primary lung cancer is)."""
    n = int(rng.choice([1, 2, 3, 4, 5], p=[0.3, 0.2, 0.2, 0.15, 0.15]))
    out = []
    for _ in range(n):
        lobe = _pick(
            rng,
            {
                "right upper lobe": 4,
                "right middle lobe": 1,
                "right lower lobe": 1.5,
                "left upper lobe": 4,
                "left lower lobe": 1.5,
            },
        )
        u, v = _point_in(rng, lobe)
        # 5-40 mm, weighted towards larger lesions so that most stay visible at 64 pixels
        size = int(round(5.0 + 35.0 * float(rng.random()) ** 0.35))
        out.append(Lesion(_side_of(lobe), lobe, size, u, v, lobulated=bool(size > 20 and rng.random() < 0.6)))
    return tuple(sorted(out, key=lambda x: -x.size_mm))


def _sample_effusions(rng: np.random.Generator) -> tuple[Effusion, ...]:
    sides = {"right": ("right",), "left": ("left",), "bilateral": ("right", "left")}[
        _pick(rng, {"right": 0.4, "left": 0.3, "bilateral": 0.3})
    ]
    out = []
    for side in sides:
        size = _pick(rng, {"small": 0.35, "moderate": 0.4, "large": 0.25})
        out.append(Effusion(side, size, _uniform(rng, *_EFFUSION_HEIGHT[size])))
    return tuple(out)


def _sample_devices(rng: np.random.Generator) -> tuple[Device, ...]:
    out = []
    if rng.random() < 0.5:
        out.append(Device("endotracheal tube", tip_cm=int(rng.integers(3, 7))))
    if rng.random() < 0.6 or not out:
        out.append(
            Device(
                "central venous catheter",
                side=_pick(rng, {"right": 0.7, "left": 0.3}),
                route=_pick(rng, {"internal jugular": 0.6, "subclavian": 0.4}),
            )
        )
    if rng.random() < 0.4:
        out.append(Device("enteric tube"))
    return tuple(out)


def _sample_findings(
    rng: np.random.Generator,
    present: dict[str, bool],
    ctr: float,
    threshold: float,
    lesions: tuple[Lesion, ...],
    pneumonia_fraction: float,
) -> Findings:
    effusions = _sample_effusions(rng) if present["Pleural Effusion"] else ()
    wet = {e.side: e.height for e in effusions}
    consolidation = None
    if present["Consolidation"]:
        # lower lobes most often, as with aspiration and most community-acquired pneumonia
        lobe = _pick(
            rng,
            {
                "right upper lobe": 0.12,
                "right middle lobe": 0.15,
                "right lower lobe": 0.3,
                "left upper lobe": 0.13,
                "left lower lobe": 0.3,
            },
        )
        u, v = _point_in(rng, lobe)
        consolidation = Consolidation(
            _side_of(lobe),
            lobe,
            u,
            v,
            _uniform(rng, 0.095, 0.125),
            pneumonia=bool(rng.random() < pneumonia_fraction),
            seed=int(rng.integers(2**31)),
        )
    pneumothorax = None
    if present["Pneumothorax"]:
        # on the dry side when only one side holds fluid: a hydropneumothorax is another picture
        dry = [s for s in ("right", "left") if s not in wet] or ["right", "left"]
        side = dry[int(rng.integers(len(dry)))]
        size = _pick(rng, {"small": 0.3, "moderate": 0.4, "large": 0.3})
        pneumothorax = Pneumothorax(side, size, _uniform(rng, *_PNEUMOTHORAX_RIM[size]))
    edema = None
    if present["Edema"]:
        edema = Edema(_pick(rng, {"mild": 0.5, "moderate": 0.5}), septal_lines=bool(rng.random() < 0.5))
    atelectasis = None
    if present["Atelectasis"]:
        if effusions and rng.random() < 0.7:  # compressive atelectasis lies next to the fluid
            sides = tuple(e.side for e in effusions)
        else:
            sides = {"right": ("right",), "left": ("left",), "bilateral": ("right", "left")}[
                _pick(rng, {"right": 0.3, "left": 0.25, "bilateral": 0.45})
            ]  # bibasilar is the commonest
        # a band under the fluid would be invisible: above a moderate or large effusion it moves up
        zone = "mid" if max((wet.get(s, 0.0) for s in sides), default=0.0) > 0.2 else "lower"
        v = _uniform(rng, 0.62, 0.72) if zone == "lower" else _uniform(rng, 0.3, 0.4)
        atelectasis = Atelectasis(
            sides,
            zone,
            _pick(rng, {"plate-like": 1, "linear": 1, "subsegmental": 1}),
            v,
            _uniform(rng, -8.0, 8.0),
            _uniform(rng, 0.035, 0.05) if zone == "lower" else 0.0,
        )
    devices = _sample_devices(rng) if present["Support Devices"] else ()
    severity = None
    if present["Cardiomegaly"]:
        excess = ctr - threshold
        severity = "mild" if excess < 0.06 else "moderate" if excess < 0.11 else "marked"
    return Findings(
        ctr=round(ctr, 4),
        cardiomegaly=severity,
        effusions=effusions,
        consolidation=consolidation,
        lesions=lesions,
        pneumothorax=pneumothorax,
        edema=edema,
        atelectasis=atelectasis,
        devices=devices,
    )
