"""Chest anatomy of the phantoms: the patient's body plan, the study's acquisition, and their outlines.

Geometry lives in a canonical frame: ``x`` and ``y`` are fractions of the image side, ``x`` to
the image right, ``y`` down. The patient's right is on the image left (standard frontal display,
PA and AP alike). One canonical unit is :data:`~medlens.data.phantom.vocabulary.MM_PER_UNIT` mm.
The acquisition's :class:`Frame` (scale, small rotation, shift) maps canonical points to pixels, so
every outline is built once and drawn at any size.

The cardiothoracic ratio (CTR) is exact by construction: the heart outline is scaled so that its
widest horizontal extent is ``ctr`` times the sum of the two internal thoracic half-widths (the
widest extent of the lung fields).
"""
# long: one geometric model of the chest: body plan, acquisition frame and every outline, built on each other

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Anatomy",
    "Acquisition",
    "Frame",
    "Geometry",
    "build_geometry",
    "side_sign",
    "row_extent",
    "ellipse",
    "bezier",
    "smooth_outline",
]


@dataclass(frozen=True)
class Anatomy:
    """A patient's body plan; it stays the same in every study of the patient."""

    cx: float  # midline
    half_width: tuple[float, float]  # (right, left) internal thoracic half-widths from the midline
    apex_y: float  # top of the lung apices
    dome_y: tuple[float, float]  # (right, left) tops of the hemidiaphragm domes
    cp_drop: float  # the costophrenic angles lie this far below the domes
    medial: float  # half-width of the mediastinum where it meets the lungs
    heart_ctr: float  # the patient's cardiothoracic ratio on a PA film (an AP film magnifies it)
    heart_aspect: float  # height / width of the heart outline before tilting
    heart_tilt: float  # degrees; the long axis points down to the patient's left
    heart_right_share: float  # share of the heart width on the patient's right of the midline
    rib_spacing: float  # vertical distance between posterior ribs
    rib_width: float
    clavicle_y: float  # height of the clavicles' sternal ends
    soft_tissue: float  # chest-wall thickness outside the ribs
    tissue: float  # attenuation of the body relative to an average build
    breasts: bool  # adds the lower soft-tissue shadows of breasts
    texture_seed: int  # the patient's vascular tree


@dataclass(frozen=True)
class Acquisition:
    """How one study was taken: projection, positioning and exposure."""

    view: str  # "PA" or "AP"
    scale: float  # magnification of the whole chest on the detector
    rotation: float  # degrees, positive clockwise on the image
    shift: tuple[float, float]  # canonical units
    inspiration: float  # + lowers both domes (deeper breath)
    gain: float  # attenuation -> detector signal
    window: tuple[float, float]  # signal range mapped to black..white
    gamma: float  # display curve
    noise: float  # standard deviation of quantum noise, in grey levels / 255
    blur: float  # unsharpness radius in pixels of a 320-pixel image
    gastric_bubble: bool  # air in the stomach under the left dome
    seed: int  # noise and fine parenchymal texture


def side_sign(side: str) -> int:
    """-1 for the patient's right (image left), +1 for the patient's left (image right)."""
    return -1 if side == "right" else 1


@dataclass(frozen=True)
class Frame:
    """Maps canonical points to pixel coordinates of a ``size`` x ``size`` image.

    ``size`` may be fractional: a half-resolution grid of an odd-sized image has side ``size / 2``.
    """

    size: float
    scale: float
    rotation: float
    shift: tuple[float, float]

    @classmethod
    def of(cls, acq: Acquisition, size: int) -> Frame:
        return cls(size, acq.scale, acq.rotation, acq.shift)

    def px(self, pts: np.ndarray) -> np.ndarray:
        """Canonical (N, 2) -> pixel (N, 2); pixel centres sit at integer coordinates (PIL's convention)."""
        k = self.scale * self.size
        c, s = k * math.cos(math.radians(self.rotation)), k * math.sin(math.radians(self.rotation))
        d = np.asarray(pts, dtype=np.float64) - 0.5
        out = np.empty_like(d)
        out[:, 0] = c * d[:, 0] - s * d[:, 1] + ((0.5 + self.shift[0]) * self.size - 0.5)
        out[:, 1] = s * d[:, 0] + c * d[:, 1] + ((0.5 + self.shift[1]) * self.size - 0.5)
        return out

    def length(self, units: float) -> float:
        """A canonical length in pixels."""
        return units * self.scale * self.size


def row_extent(poly: np.ndarray, y: float) -> tuple[float, float] | None:
    """Leftmost and rightmost crossing of the horizontal line ``y`` with a closed polygon."""
    a, b = poly, np.roll(poly, -1, axis=0)
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    hit = (lo <= y) & (y < hi)
    if not hit.any():
        return None
    a, b = a[hit], b[hit]
    xs = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return float(xs.min()), float(xs.max())


def smooth_outline(poly: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Chaikin corner cutting: rounds off a closed polygon's corners (shoulders, axillae)."""
    for _ in range(rounds):
        nxt = np.roll(poly, -1, axis=0)
        poly = np.stack([0.75 * poly + 0.25 * nxt, 0.25 * poly + 0.75 * nxt], axis=1).reshape(-1, 2)
    return poly


@functools.lru_cache(maxsize=64)
def _bezier_weights(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], axis=1)  # (n, 3)


def bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """``n`` points of the quadratic Bezier curve from ``p0`` to ``p2`` pulled towards ``p1``.

    Control points of shape (2,) give (n, 2); stacks of shape (k, 2) give k curves, (k, n, 2).
    """
    w = _bezier_weights(n)
    p0, p1, p2 = (np.asarray(p, dtype=np.float64)[..., None, :] for p in (p0, p1, p2))
    return w[:, :1] * p0 + w[:, 1:2] * p1 + w[:, 2:] * p2


@functools.lru_cache(maxsize=64)
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, tilt: float = 0.0) -> np.ndarray:
    """Polygon of an ellipse centred at (cx, cy) with radii (rx, ry), turned ``tilt`` degrees."""
    cos, sin = _circle(n)
    x, y = rx * cos, ry * sin
    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


class Geometry:
    """Outlines of one study's anatomy in canonical coordinates (built by :func:`build_geometry`)."""

    def __init__(
        self, anat: Anatomy, acq: Acquisition, ctr: float, elevation: tuple[float, float] = (0.0, 0.0)
    ):
        self.anat, self.acq, self.ctr = anat, acq, ctr
        lift = (
            0.02 if acq.view == "AP" else 0.0
        )  # AP films are usually taken supine, at shallower inspiration
        self.dome = {
            side: anat.dome_y[i] + acq.inspiration - lift - elevation[i]
            for i, side in enumerate(("right", "left"))
        }
        self.half_width = {"right": anat.half_width[0], "left": anat.half_width[1]}
        self.thorax_width = anat.half_width[0] + anat.half_width[1]
        self.top = anat.apex_y
        self.heart = self._heart()
        hx0, hx1 = self.heart[:, 0].min(), self.heart[:, 0].max()
        self.heart_box = (
            float(hx0),
            float(self.heart[:, 1].min()),
            float(hx1),
            float(self.heart[:, 1].max()),
        )
        self.lungs = {side: self._lung(side) for side in ("right", "left")}
        self.carina = (anat.cx + 0.004, self.heart_box[1] - 0.035)
        self.hilum = {
            side: (
                anat.cx + side_sign(side) * (anat.medial + 0.035),
                self.top + 0.47 * (self.dome[side] - self.top),
            )
            for side in ("right", "left")
        }

    # ---- heart and lungs

    def _heart(self) -> np.ndarray:
        a = self.anat
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        # A rounded left-ventricular bulge (lower image right) and a flatter right-atrial border.
        r = 1.0 + 0.06 * np.cos(t - 0.6) - 0.03 * np.cos(2 * t)
        pts = np.stack([r * np.cos(t), a.heart_aspect * r * np.sin(t)], axis=1)
        c, s = math.cos(math.radians(a.heart_tilt)), math.sin(math.radians(a.heart_tilt))
        pts = pts @ np.array([[c, s], [-s, c]])
        width = self.ctr * self.thorax_width
        pts *= width / (pts[:, 0].max() - pts[:, 0].min())
        pts[:, 0] += a.cx - a.heart_right_share * width - pts[:, 0].min()
        pts[:, 1] += (
            self.dome["left"] + 0.03 - pts[:, 1].max()
        )  # the heart sits on the diaphragm, below its dome
        return pts

    def cp_angle(self, side: str) -> tuple[float, float]:
        """The costophrenic angle: where the lateral chest wall meets the diaphragm."""
        sg = side_sign(side)
        return self.anat.cx + sg * 0.965 * self.half_width[side], self.dome[side] + self.anat.cp_drop

    def _lateral(self, side: str, n: int = 24) -> np.ndarray:
        """Lateral border from just below the apex down to the costophrenic angle."""
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        y0, (_, ycp) = self.top + 0.035, self.cp_angle(side)
        t = np.linspace(0.0, 1.0, n)
        prof = np.where(
            t <= 0.78,
            0.42 + 0.58 * np.sin(np.minimum(t / 0.78, 1.0) * math.pi / 2) ** 0.7,
            1.0 - 0.035 * ((t - 0.78) / 0.22) ** 2,
        )
        return np.stack([a.cx + sg * w * prof, y0 + t * (ycp - y0)], axis=1)

    def _diaphragm(self, side: str, n: int = 20) -> np.ndarray:
        """Hemidiaphragm from the costophrenic angle to the cardiophrenic angle."""
        a, sg = self.anat, side_sign(side)
        xcp, ycp = self.cp_angle(side)
        xmed, ymed = a.cx + sg * a.medial, self.dome[side] + 0.03
        xpk = xmed + 0.5 * (xcp - xmed)
        x = np.linspace(xcp, xmed, n)
        lateral = (x - xpk) / (xcp - xpk)
        medial = (x - xpk) / (xmed - xpk)
        y = np.where(
            np.abs(x - a.cx) >= np.abs(xpk - a.cx),
            self.dome[side] + (ycp - self.dome[side]) * np.clip(lateral, 0, 1) ** 2.4,
            self.dome[side] + (ymed - self.dome[side]) * np.clip(medial, 0, 1) ** 2,
        )
        return np.stack([x, y], axis=1)

    def _lung(self, side: str) -> np.ndarray:
        a, sg = self.anat, side_sign(side)
        lateral, dia = self._lateral(side), self._diaphragm(side)
        x_med = a.cx + sg * a.medial
        medial = np.stack([np.full(8, x_med), np.linspace(dia[-1, 1], self.top + 0.05, 8)], axis=1)[1:-1]
        # Apex: a dome from the medial top over to the lateral border's first point.
        xm, xl = x_med, lateral[0, 0]
        t = np.linspace(math.pi, 0, 12) if sg > 0 else np.linspace(0, math.pi, 12)
        xc, rx = (xm + xl) / 2, abs(xl - xm) / 2
        apex = np.stack([xc + rx * np.cos(t), self.top + 0.045 - 0.045 * np.sin(t)], axis=1)
        return np.concatenate([apex, lateral[1:], dia[1:], medial])

    def lung_point(self, side: str, u: float, v: float) -> tuple[float, float]:
        """A point of the visible lung field: ``u`` medial (0) to lateral (1), ``v`` apex (0) to dome (1)."""
        sg = side_sign(side)
        y = self.top + 0.03 + v * (self.dome[side] - self.top - 0.03)
        lung = row_extent(self.lungs[side], y)
        if lung is None:
            return self.hilum[side]
        inner, outer = (lung[1], lung[0]) if sg < 0 else (lung[0], lung[1])
        heart = row_extent(self.heart, y)
        if heart is not None:
            inner = min(inner, heart[0]) if sg < 0 else max(inner, heart[1])
        return inner + u * (outer - inner), y

    def lung_height(self, side: str) -> float:
        return self.cp_angle(side)[1] - self.top

    # ---- the rest of the chest

    def body(self) -> np.ndarray:
        a = self.anat
        half = max(self.half_width.values()) + a.soft_tissue
        shoulder = a.clavicle_y - 0.01
        right = [
            (a.cx - 0.085, -0.05),
            (a.cx - 0.095, shoulder - 0.07),
            (a.cx - 0.2, shoulder - 0.035),
            (a.cx - half - 0.07, shoulder),
            (a.cx - half - 0.1, shoulder + 0.05),
            (a.cx - half - 0.095, shoulder + 0.2),
            (a.cx - half - 0.02, shoulder + 0.24),
            (a.cx - half, 0.6),
            (a.cx - half + 0.02, 0.95),
            (a.cx - half + 0.035, 1.06),
        ]
        left = [(2 * a.cx - x, y) for x, y in reversed(right)]
        return smooth_outline(np.array(right + left))

    def mediastinum(self) -> list[np.ndarray]:
        """Superior mediastinum down to the heart, with the aortic knob on the patient's left."""
        a = self.anat
        top_heart = self.heart_box[1] + 0.03
        band = np.array(
            [
                (a.cx - a.medial, -0.05),
                (a.cx + a.medial, -0.05),
                (a.cx + a.medial, top_heart),
                (a.cx - a.medial, top_heart),
            ]
        )
        knob = ellipse(a.cx + a.medial - 0.015, self.heart_box[1] - 0.05, 0.032, 0.045)
        return [band, knob]

    def trachea(self) -> list[np.ndarray]:
        a = self.anat
        xc, yc = self.carina
        w = 0.022
        trunk = np.array([(a.cx - w, -0.05), (a.cx + w, -0.05), (xc + w * 0.9, yc), (xc - w * 0.9, yc)])
        bronchi = []
        for sg, dx, dy in ((-1, 0.045, 0.05), (1, 0.06, 0.045)):
            bronchi.append(
                np.array(
                    [
                        (xc - 0.012, yc - 0.012),
                        (xc + 0.012, yc - 0.012),
                        (xc + sg * dx + 0.011, yc + dy),
                        (xc + sg * dx - 0.011, yc + dy),
                    ]
                )
            )
        return [trunk, *bronchi]

    def spine(self) -> list[np.ndarray]:
        """Vertebral bodies separated by disc spaces."""
        a, step = self.anat, 0.048
        out = []
        for i in range(-2, 22):
            y0 = self.top - 0.12 + i * step
            out.append(
                np.array(
                    [
                        (a.cx - 0.034, y0),
                        (a.cx + 0.034, y0),
                        (a.cx + 0.036, y0 + step - 0.01),
                        (a.cx - 0.036, y0 + step - 0.01),
                    ]
                )
            )
        return out

    def posterior_ribs(self, side: str) -> np.ndarray:
        """(10, n, 2): from the spine up and out, then curving down along the lateral chest wall."""
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        i = np.arange(10)[:, None]
        y = self.top - 0.02 + i * a.rib_spacing
        one = np.ones_like(y)
        return bezier(
            np.hstack([(a.cx + sg * 0.035) * one, y]),
            np.hstack([(a.cx + sg * 0.55 * w) * one, y - 0.055]),
            np.hstack([(a.cx + sg * (w + 0.015)) * one, y + 0.045 + 0.004 * i]),
        )

    def anterior_ribs(self, side: str) -> np.ndarray:
        """(6, 8, 2): faint, from the lateral wall down and in towards the sternum."""
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        y = self.top + 0.06 + np.arange(6)[:, None] * a.rib_spacing * 1.15
        one = np.ones_like(y)
        return bezier(
            np.hstack([(a.cx + sg * (w + 0.01)) * one, y]),
            np.hstack([(a.cx + sg * 0.65 * w) * one, y + 0.02]),
            np.hstack([(a.cx + sg * 0.25 * w) * one, y + 0.1]),
            n=8,
        )

    def clavicle(self, side: str) -> np.ndarray:
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        y = a.clavicle_y - (0.035 if self.acq.view == "AP" else 0.0)  # AP projects the clavicles higher
        return bezier(
            (a.cx + sg * 0.03, y + 0.012),
            (a.cx + sg * 0.5 * w, y + 0.03),
            (a.cx + sg * (w + a.soft_tissue + 0.04), y - 0.02),
            n=10,
        )

    def scapula(self, side: str) -> np.ndarray:
        """In PA the scapulae are rotated off the lungs; in AP their medial borders overlie the lung edges."""
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        inner = w - (0.09 if self.acq.view == "AP" else 0.015)
        y = a.clavicle_y
        pts = [(inner, y + 0.02), (w + 0.06, y - 0.005), (w + 0.05, y + 0.2), (inner + 0.02, y + 0.28)]
        return np.array([(a.cx + sg * x, yy) for x, yy in pts])

    def humeral_head(self, side: str) -> np.ndarray:
        a, sg = self.anat, side_sign(side)
        half = self.half_width[side] + a.soft_tissue
        return ellipse(a.cx + sg * (half + 0.065), a.clavicle_y + 0.03, 0.045, 0.05)

    def gastric_bubble(self) -> np.ndarray:
        a = self.anat
        return ellipse(a.cx + 0.5 * self.half_width["left"], self.dome["left"] + 0.05, 0.05, 0.025)

    def breast(self, side: str) -> np.ndarray:
        a, sg, w = self.anat, side_sign(side), self.half_width[side]
        return ellipse(a.cx + sg * 0.62 * w, self.dome[side] - 0.01, 0.17, 0.1, n=36)


def build_geometry(
    anat: Anatomy, acq: Acquisition, ctr: float, elevation: tuple[float, float] = (0.0, 0.0)
) -> Geometry:
    """Outlines of the study.

    Args:
        anat: the patient's body plan.
        acq: the study's acquisition.
        ctr: the rendered cardiothoracic ratio (AP magnification included).
        elevation: how far the (right, left) hemidiaphragm is raised by volume loss, canonical units.
    """
    return Geometry(anat, acq, ctr, elevation)
