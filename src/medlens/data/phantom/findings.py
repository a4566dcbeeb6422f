"""Drawing each finding into the pixels.

Parenchymal and pleural findings are drawn as the *share of the lung's air they replace* (0 =
aerated lung, 1 = soft-tissue density), not as an added density: the renderer sums the shares,
caps them at 1 and multiplies by the local air. So overlapping fluid, consolidation and edema never
become whiter than soft tissue, a nodule inside a consolidation is hidden as it would be, and a
finding is exactly as dense as the tissue it stands for. Broad findings (fluid, airspace opacity,
haze, the pneumothorax rim) are drawn on the renderer's coarse grid, thin ones (nodules, bands,
pleural edge, septal lines) and devices on the full grid. Sizes are made to survive down-sampling to
64 pixels: what a report states must still be visible to the tiny models of the ``demo`` experiment.
"""

from __future__ import annotations

import math

import numpy as np

from medlens.data.phantom.anatomy import bezier, ellipse, side_sign
from medlens.data.phantom.canvas import Canvas
from medlens.data.phantom.sampling import (
    Atelectasis,
    Consolidation,
    Device,
    Edema,
    Effusion,
    Findings,
    Pneumothorax,
)
from medlens.data.phantom.vocabulary import MM_PER_UNIT

__all__ = [
    "draw_effusions",
    "draw_consolidation",
    "draw_pneumothorax_rim",
    "draw_edema",
    "draw_thin",
    "draw_devices",
    "lesion_outlines",
    "collapsed_lung",
    "septal_lines",
    "atelectasis_bands",
]

# Share of the air replaced.
_FLUID, _AIRSPACE, _BAND, _SEPTAL, _PLEURAL_EDGE = 0.95, 0.95, 1.0, 0.45, 0.4
_EDEMA = {"mild": 0.4, "moderate": 0.58}
# Density (soft tissue = 0.5): radio-opaque stripes and catheters are denser than bone.
_DEVICE, _TUBE = 0.55, 0.1


def draw_effusions(cv: Canvas, effusions: tuple[Effusion, ...], field: dict[str, np.ndarray]) -> np.ndarray:
    """Fluid in the dependent lung with a meniscus: highest at the chest wall, lower medially.

    The fluid hides the hemidiaphragm and blunts the costophrenic angle because it fills the lung
    field below its surface.
    """
    geo, a = cv.geo, cv.geo.anat
    out = np.zeros((cv.size, cv.size), np.float32)
    for eff in effusions:
        sg = side_sign(eff.side)
        _, y_cp = geo.cp_angle(eff.side)
        height = geo.lung_height(eff.side)
        top = y_cp - eff.height * height
        x_wall, x_mid = a.cx + sg * (geo.half_width[eff.side] + 0.03), a.cx
        t = np.linspace(0.0, 1.0, 16)
        depth = 0.45 * eff.height * height + 0.02
        surface = np.stack([x_wall + t * (x_mid - x_wall), top + depth * np.sqrt(t)], axis=1)
        poly = np.concatenate([surface, [(x_mid, 1.2), (x_wall, 1.2)]])
        out += cv.polygons([poly], blur=2.5) * field[eff.side]
    return _FLUID * out


def draw_consolidation(cv: Canvas, c: Consolidation, field: np.ndarray) -> np.ndarray:
    """Patchy airspace opacity around a point of the lobe, with a few air bronchograms."""
    rng = np.random.default_rng(c.seed)
    x, y = cv.geo.lung_point(c.side, c.u, c.v)
    r = c.radius
    blobs = [
        ellipse(
            x + rng.normal(0, 0.45 * r),
            y + rng.normal(0, 0.4 * r),
            r * rng.uniform(0.45, 0.75),
            r * rng.uniform(0.4, 0.65),
            n=24,
            tilt=float(rng.uniform(0, 180)),
        )
        for _ in range(7)
    ]
    mask = cv.polygons(blobs, blur=4.0)
    patchy = 0.85 + 0.15 * cv.smooth_noise(rng, 12)
    hx, hy = cv.geo.hilum[c.side]
    bronchi = []
    for _ in range(3):  # air-filled bronchi running from the hilum into the opacity
        ang = math.atan2(y - hy, x - hx) + rng.uniform(-0.5, 0.5)
        start = (x - 0.6 * r * math.cos(ang), y - 0.6 * r * math.sin(ang))
        bronchi.append(
            np.array([start, (start[0] + 1.1 * r * math.cos(ang), start[1] + 1.1 * r * math.sin(ang))])
        )
    air = cv.lines(bronchi, 0.004, blur=0.6)
    return np.clip(_AIRSPACE * patchy - 0.4 * air, 0.0, 1.0) * mask * field


def lesion_outlines(cv: Canvas, lesions: tuple, seed: int) -> list[np.ndarray]:
    """Round nodules and lobulated masses of the stated diameter."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    shapes = []
    for les in lesions:
        x, y = cv.geo.lung_point(les.side, les.u, les.v)
        r = les.size_mm / MM_PER_UNIT / 2
        bumps = 0.12 * np.sin(3 * t + rng.uniform(0, 6.3)) + 0.08 * np.sin(5 * t + rng.uniform(0, 6.3))
        rr = r * (1.0 + bumps) if les.lobulated else np.full_like(t, r)
        shapes.append(np.stack([x + rr * np.cos(t), y + rr * np.sin(t)], axis=1))
    return shapes


def collapsed_lung(cv: Canvas, ptx: Pneumothorax) -> tuple[np.ndarray, np.ndarray]:
    """Outline of the partly deflated lung, and its moved part (the visceral pleural edge).

    The apical and lateral border move towards the hilum by the rim width; the medial border and
    the base, held by the hilum and the pulmonary ligament, stay in place.
    """
    geo, a = cv.geo, cv.geo.anat
    poly = geo.lungs[ptx.side]
    hx, hy = geo.hilum[ptx.side]
    _, y_cp = geo.cp_angle(ptx.side)
    height = geo.lung_height(ptx.side)
    lateral = np.clip((np.abs(poly[:, 0] - a.cx) - a.medial) / (0.25 * geo.half_width[ptx.side]), 0.0, 1.0)
    upper = np.clip((y_cp - 0.1 * height - poly[:, 1]) / (0.4 * height), 0.0, 1.0)
    apex = np.clip(1.0 - (poly[:, 1] - geo.top) / 0.08, 0.0, 1.0)
    weight = np.maximum(lateral * upper, apex)
    to_hilum = np.array([hx, hy]) - poly
    unit = to_hilum / np.maximum(np.linalg.norm(to_hilum, axis=1, keepdims=True), 1e-6)
    moved = poly + unit * (ptx.rim * weight)[:, None]
    keep = weight > 0.15
    return moved, moved[np.argmax(keep) : len(keep) - np.argmax(keep[::-1])]


def draw_pneumothorax_rim(cv: Canvas, ptx: Pneumothorax, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(density increment, rim mask): pleural air is more lucent than lung; the deflated lung is denser.

    Unlike the other findings this one adds air, so it is a density change; the caller removes the
    vessel markings where the rim mask is set.
    """
    inner = cv.polygons([collapsed_lung(cv, ptx)[0]], blur=0.6)
    rim = np.clip(lung - inner, 0.0, 1.0)
    return -0.1 * rim + 0.06 * inner * lung, rim


def draw_edema(cv: Canvas, e: Edema, field: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Bilateral perihilar haze fading towards the periphery (the "bat wing" of alveolar edema)."""
    geo = cv.geo
    rng = np.random.default_rng(seed)
    wings = [ellipse(geo.hilum[s][0] + side_sign(s) * 0.05, geo.hilum[s][1], 0.11, 0.17, n=32) for s in field]
    haze = cv.polygons(wings, blur=18.0) * (field["right"] + field["left"])
    return _EDEMA[e.severity] * haze * (0.85 + 0.15 * cv.smooth_noise(rng, 8))


def septal_lines(cv: Canvas, seed: int) -> list[np.ndarray]:
    """Kerley B lines: short horizontal lines reaching the lateral pleura at both lung bases."""
    geo, a = cv.geo, cv.geo.anat
    rng = np.random.default_rng(seed)
    lines = []
    for side in ("right", "left"):
        sg = side_sign(side)
        for v in np.linspace(0.72, 0.9, 5):
            x_in, y = geo.lung_point(side, 0.86, float(v))
            lines.append(
                np.array([(x_in, y), (a.cx + sg * geo.half_width[side], y + rng.uniform(-0.004, 0.004))])
            )
    return lines


def atelectasis_bands(cv: Canvas, at: Atelectasis) -> list[np.ndarray]:
    """Centre lines of the bands: across the lung, nearly horizontal, slightly bowed."""
    slope = math.tan(math.radians(at.tilt))
    bands = []
    for side in at.sides:
        x0, y0 = cv.geo.lung_point(side, 0.12, at.v)
        x1, y1 = cv.geo.lung_point(side, 0.9, at.v)
        half = slope * (x1 - x0) / 2
        bands.append(bezier((x0, y0 - half), ((x0 + x1) / 2, y0 - 0.01), (x1, y1 + half), n=8))
    return bands


def draw_thin(cv: Canvas, f: Findings, seed: int) -> np.ndarray | None:
    """Nodules, atelectatic bands, septal lines and the visceral pleural edge in one layer (one blur).

    Returns the share of air replaced, or None when the study has none of these.
    """
    septal = f.edema is not None and f.edema.septal_lines
    if not (f.lesions or f.atelectasis or septal or f.pneumothorax):
        return None
    img, draw = cv.new()
    if f.pneumothorax is not None:
        cv.draw_lines(draw, [collapsed_lung(cv, f.pneumothorax)[1]], 0.003, fill=round(255 * _PLEURAL_EDGE))
    if septal:
        cv.draw_lines(draw, septal_lines(cv, seed), 0.0035, fill=round(255 * _SEPTAL))
    if f.atelectasis is not None:
        width = {"plate-like": 0.03, "linear": 0.022, "subsegmental": 0.026}[f.atelectasis.kind]
        cv.draw_lines(draw, atelectasis_bands(cv, f.atelectasis), width, fill=round(255 * _BAND), minimum=2)
    if f.lesions:
        for flat in cv.flat_many(lesion_outlines(cv, f.lesions, seed)):
            draw.polygon(flat, fill=255)  # a solid nodule replaces the air along its whole thickness
    return cv.finish(img, blur=1.0)


def _device_path(cv: Canvas, dev: Device) -> tuple[np.ndarray, float]:
    """(path, width in canonical units) of one device."""
    geo, a = cv.geo, cv.geo.anat
    xc, yc = geo.carina
    svc_tip = (a.cx - a.medial * 0.6, geo.heart_box[1] + 0.01)  # superior vena cava, above the right atrium
    if dev.kind == "endotracheal tube":
        tip_y = yc - dev.tip_cm * 10.0 / MM_PER_UNIT
        return np.array([(a.cx, -0.05), (a.cx + (xc - a.cx) * 0.8, tip_y)]), 0.007
    if dev.kind == "enteric tube":
        dome = geo.dome["left"]
        stomach = (a.cx + 0.45 * geo.half_width["left"], dome + 0.07)
        return np.concatenate(
            [
                np.array([(a.cx + 0.006, -0.05), (a.cx + 0.012, yc + 0.05)]),
                bezier((a.cx + 0.018, dome - 0.05), (a.cx + 0.03, dome + 0.09), stomach, n=10),
            ]
        ), 0.006
    sg, clav = side_sign(dev.side), a.clavicle_y
    if dev.route == "internal jugular":
        start = [(a.cx + sg * 0.085, -0.05), (a.cx + sg * 0.07, clav + 0.01)]
    else:
        lateral = a.cx + sg * (geo.half_width[dev.side] + a.soft_tissue)
        start = [
            (lateral, clav + 0.02),
            (a.cx + sg * 0.5 * geo.half_width[dev.side], clav + 0.035),
            (a.cx + sg * 0.09, clav + 0.045),
        ]
    if sg > 0:  # a left-sided catheter crosses the midline in the brachiocephalic vein
        start.append((a.cx + 0.01, clav + 0.07))
    path = np.concatenate(
        [np.array(start), bezier(start[-1], (a.cx - a.medial * 0.7, clav + 0.08), svc_tip, n=8)]
    )
    return path, 0.006


def draw_devices(cv: Canvas, devices: tuple[Device, ...]) -> np.ndarray:
    """Density of tubes and catheters; an endotracheal tube is a faint wide tube with a dense stripe."""
    img, draw = cv.new()
    tubes = [_device_path(cv, dev) for dev in devices]
    for dev, (path, _) in zip(devices, tubes, strict=True):
        if dev.kind == "endotracheal tube":
            cv.draw_lines(draw, [path], 0.02, fill=round(255 * _TUBE / _DEVICE), minimum=2)
    for path, width in tubes:
        cv.draw_lines(draw, [path], width, minimum=2)
    return _DEVICE * cv.finish(img, blur=0.6)
