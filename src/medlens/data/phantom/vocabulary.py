"""Names, defaults and configuration checks of the chest-radiograph phantoms (standard library only).

The finding names are the CheXpert observation names, so the rest of medlens uses one vocabulary.
``Pneumonia`` and ``No Finding`` are derived, never sampled: Pneumonia is a share of the
consolidations (those whose impression says pneumonia), and No Finding follows the CheXpert rule
(present iff no finding other than Support Devices is). ``Lung Opacity``, ``Enlarged
Cardiomediastinum``, ``Pleural Other`` and ``Fracture`` are never drawn and never mentioned.
"""

from __future__ import annotations

from medlens.config import SyntheticConfig
from medlens.errors import ConfigError

__all__ = [
    "SAMPLED_FINDINGS",
    "DERIVED_FINDINGS",
    "PATIENT_FINDINGS",
    "LABELS",
    "SIDES",
    "LOBES",
    "DEFAULT_PREVALENCE",
    "DEFAULT_CO_OCCURRENCE",
    "MM_PER_UNIT",
    "CTR_MARGIN",
    "CTR_RANGE",
    "AP_MAGNIFICATION",
    "check_synthetic_config",
    "resolved_prevalence",
    "resolved_co_occurrence",
]

# Sampling order: a co-occurrence parent must come before its child.
SAMPLED_FINDINGS = (
    "Cardiomegaly",
    "Lung Lesion",
    "Support Devices",
    "Edema",
    "Pleural Effusion",
    "Atelectasis",
    "Consolidation",
    "Pneumothorax",
)
DERIVED_FINDINGS = ("Pneumonia", "No Finding")
# Chronic findings belong to the patient: every study of the patient shows them the same way.
PATIENT_FINDINGS = ("Cardiomegaly", "Lung Lesion")
LABELS = (
    "No Finding",
    "Cardiomegaly",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Support Devices",
)

SIDES = ("right", "left")  # the patient's sides; the patient's left is on the image right
LOBES = {
    "right": ("right upper lobe", "right middle lobe", "right lower lobe"),
    "left": ("left upper lobe", "left lower lobe"),
}

# A population that looks like an inpatient chest X-ray mix (about 45 % normal) while every finding
# keeps enough positives (>= 8 %) for a classifier to learn from a few thousand images.
DEFAULT_PREVALENCE = {
    "Cardiomegaly": 0.15,
    "Lung Lesion": 0.09,
    "Support Devices": 0.12,
    "Edema": 0.10,
    "Pleural Effusion": 0.15,
    "Atelectasis": 0.12,
    "Consolidation": 0.10,
    "Pneumothorax": 0.08,
}
# "Child|Parent": P(child | parent) = lift * P(child); P(child | no parent) is set so that the
# child's overall prevalence stays as configured. One parent per child.
DEFAULT_CO_OCCURRENCE = {
    "Edema|Cardiomegaly": 3.0,  # heart failure: enlarged heart with interstitial edema
    "Pleural Effusion|Cardiomegaly": 2.5,  # effusions accompany cardiomegaly more often
    "Atelectasis|Pleural Effusion": 2.0,  # compressive atelectasis next to an effusion
}

MM_PER_UNIT = 400.0  # the image side spans a 40 cm detector; canonical units are fractions of it
CTR_MARGIN = 0.03  # rendered ratios keep this distance from the threshold, so the label is visible
CTR_RANGE = (0.32, 0.72)  # rendered cardiothoracic ratios stay inside this range
AP_MAGNIFICATION = (
    1.1  # an AP film widens the heart shadow by about a tenth (the heart lies far from the detector)
)
IMAGE_SIZE_RANGE = (48, 4096)
CTR_THRESHOLD_RANGE = (0.42, 0.62)


def check_synthetic_config(cfg: SyntheticConfig, *, key: str = "synthetic", file: str | None = None) -> None:
    """Validate a :class:`SyntheticConfig`; every range the renderer relies on is checked here.

    Args:
        cfg: the settings to check.
        key: dotted key path of ``cfg`` in its file, e.g. ``datasets.demo.synthetic``.
        file: the configuration file, for the message.

    Raises:
        ConfigError: naming the key, the bad value and the allowed range or names.
    """

    def fail(sub: str, problem: str, expected: str) -> None:
        raise ConfigError(problem, file=file, key=f"{key}.{sub}", expected=expected)

    if cfg.n_images < 1:
        fail("n_images", f"{cfg.n_images} is not a positive count", "an integer >= 1")
    if cfg.n_patients < 1:
        fail("n_patients", f"{cfg.n_patients} is not a positive count", "an integer >= 1")
    if cfg.n_patients > cfg.n_images:
        fail(
            "n_patients",
            f"{cfg.n_patients} patients cannot share {cfg.n_images} images",
            f"an integer in [1, n_images={cfg.n_images}] (every patient has at least one study)",
        )
    lo, hi = IMAGE_SIZE_RANGE
    if not lo <= cfg.image_size <= hi:
        fail(
            "image_size", f"{cfg.image_size} is outside [{lo}, {hi}]", f"a side length in [{lo}, {hi}] pixels"
        )
    for name in ("ap_fraction", "pneumonia_fraction"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            fail(name, f"{value} is outside [0, 1]", "a fraction in [0, 1]")
    lo, hi = CTR_THRESHOLD_RANGE
    if not lo <= cfg.cardiomegaly_ctr <= hi:
        fail(
            "cardiomegaly_ctr",
            f"{cfg.cardiomegaly_ctr} is outside [{lo}, {hi}]",
            f"a cardiothoracic ratio in [{lo}, {hi}]",
        )
    allowed = ", ".join(SAMPLED_FINDINGS)
    for name, value in cfg.prevalence.items():
        if name not in SAMPLED_FINDINGS:
            why = " (it is derived from the other findings)" if name in DERIVED_FINDINGS else ""
            fail(f"prevalence.{name}", f"unknown finding '{name}'{why}", f"one of {allowed}")
        if not 0.0 <= value <= 1.0:
            fail(f"prevalence.{name}", f"{value} is outside [0, 1]", "a probability in [0, 1]")
    children: dict[str, str] = {}
    for pair, lift in cfg.co_occurrence.items():
        child, sep, parent = pair.partition("|")
        if not sep or child not in SAMPLED_FINDINGS or parent not in SAMPLED_FINDINGS:
            fail(
                f"co_occurrence.{pair}",
                f"'{pair}' is not 'Child|Parent' with two finding names",
                f"'Child|Parent' with names from {allowed}",
            )
        if SAMPLED_FINDINGS.index(parent) >= SAMPLED_FINDINGS.index(child):
            fail(
                f"co_occurrence.{pair}",
                f"'{parent}' is sampled after '{child}'",
                f"a parent sampled earlier; the order is {allowed}",
            )
        if child in children:
            fail(
                f"co_occurrence.{pair}",
                f"'{child}' already depends on '{children[child]}'",
                "one parent per child",
            )
        children[child] = parent
        if not 0.0 <= lift <= 10.0:
            fail(
                f"co_occurrence.{pair}", f"{lift} is outside [0, 10]", "a lift in [0, 10] (1 is independent)"
            )


def resolved_prevalence(cfg: SyntheticConfig) -> dict[str, float]:
    """The defaults with the configured prevalences on top, in sampling order."""
    return {name: float(cfg.prevalence.get(name, DEFAULT_PREVALENCE[name])) for name in SAMPLED_FINDINGS}


def resolved_co_occurrence(cfg: SyntheticConfig) -> dict[str, tuple[str, float]]:
    """child -> (parent, lift): the defaults, where a configured pair replaces the child's default."""
    out: dict[str, tuple[str, float]] = {}
    for pairs in (DEFAULT_CO_OCCURRENCE, cfg.co_occurrence):
        for pair, lift in pairs.items():
            child, _, parent = pair.partition("|")
            out[child] = (parent, float(lift))
    return out
