"""Rendering a study into an 8-bit grey radiograph.

The image is built as a density map (how much the body attenuates along each ray): soft tissue of
the body, air in the lungs and trachea, the heart and mediastinum, bones, vessel markings and the
findings each add their share. The acquisition blurs (detector unsharpness), maps density to grey
levels (gain, window), adds quantum noise and applies the display gamma.

Broad structures are drawn on a coarse grid (half the side from 160 pixels up) and upsampled once;
thin ones (nodules, bands, pleural edge, devices) are drawn at full resolution. Everything is
deterministic given the study; :class:`PhantomImage` is the picklable zero-argument callable that
the ``prepare`` stage calls in its worker processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from medlens.data.phantom import findings as draw
from medlens.data.phantom.anatomy import Frame, Geometry, build_geometry, ellipse, side_sign
from medlens.data.phantom.canvas import Canvas, unsharpen, upsample2
from medlens.data.phantom.sampling import Study
from medlens.data.phantom.vocabulary import SIDES

__all__ = ["render_study", "render_with_masks", "PhantomImage", "vessel_paths", "COARSE_FROM"]

COARSE_FROM = 160  # images at least this large draw their broad structures at half resolution

# Density of each structure (soft tissue of an average build = 0.5).
_BODY, _LUNG_AIR, _HEART, _MEDIASTINUM, _TRACHEA = 0.5, 0.38, 0.36, 0.06, 0.1
_SPINE, _BONE, _VESSEL, _HILUM, _BREAST, _BUBBLE = 0.03, 0.08, 0.1, 0.08, 0.07, 0.16


@dataclass(frozen=True)
class PhantomImage:
    """A study's image, rendered on call (picklable, so ``prepare`` renders it in a worker process)."""

    study: Study
    size: int

    def __call__(self) -> Image.Image:
        return render_study(self.study, self.size)


def render_study(study: Study, size: int) -> Image.Image:
    """The study's radiograph as a ``size`` x ``size`` 8-bit grey PIL image (deterministic)."""
    return _render(study, size, with_masks=False)[0]


def render_with_masks(study: Study, size: int) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """The radiograph and the boolean masks of the structures it was drawn from.

    Args:
        study: what to draw.
        size: side length in pixels.

    Returns:
        (image, masks): masks are ``heart``, ``lung_right``, ``lung_left`` (the lung fields, patient's
        sides) and ``pneumothorax`` (the lucent rim, empty without one), each (size, size) bool.
    """
    return _render(study, size, with_masks=True)


def _render(study: Study, size: int, with_masks: bool) -> tuple[Image.Image, dict[str, np.ndarray]]:
    _keep_freed_memory()
    anat, acq, f = study.anatomy, study.acquisition, study.findings
    geo = build_geometry(anat, acq, f.ctr, f.atelectasis.dome_raise() if f.atelectasis else (0.0, 0.0))
    fine = Canvas(geo, Frame.of(acq, size), unsharp=acq.blur)
    factor = 2 if size >= COARSE_FROM else 1
    cv = (
        Canvas(geo, replace(fine.frame, size=size / factor), pixels=math.ceil(size / factor))
        if factor > 1
        else fine
    )
    rng = np.random.default_rng(acq.seed)

    def full(a: np.ndarray) -> np.ndarray:
        return upsample2(a, size) if factor > 1 else a

    body = cv.polygons([geo.body()], blur=1.0)
    lungs = {side: cv.polygons([geo.lungs[side]]) for side in SIDES}
    lung = lungs["right"] + lungs["left"]
    heart = cv.polygons([geo.heart])
    knob = cv.polygons(geo.mediastinum()[1:])  # the aortic knob bulges into the left lung like the heart
    solid = np.maximum(heart, knob)
    field = {side: lungs[side] * (1.0 - solid) for side in SIDES}  # lung not hidden by the heart
    # air is deepest mid-lung: the chest wall and the domes overlap the edges of the lung fields
    air = _LUNG_AIR * lung * (0.7 + 0.3 * cv.polygons([geo.lungs[s] for s in SIDES], blur=14.0))
    dens = (_BODY * anat.tissue) * body - air * (1.0 - solid)  # heart and knob merge with the abdomen
    dens += _MEDIASTINUM * cv.polygons(geo.mediastinum()[:1])
    dens -= _TRACHEA * cv.polygons(geo.trachea())
    dens += _SPINE * cv.polygons(geo.spine())
    dens += _bones(cv, geo) * body
    if anat.breasts:
        dens += _BREAST * cv.polygons([geo.breast(s) for s in SIDES], blur=10.0) * body
    if acq.gastric_bubble:
        dens -= _BUBBLE * cv.polygons([geo.gastric_bubble()])

    # share of the visible lung's air replaced by fluid, airspace opacity or haze, capped at all of it
    aerated = field["right"] + field["left"]
    fill = np.zeros_like(lung)
    if f.effusions:
        fill += draw.draw_effusions(cv, f.effusions, field)
    if f.consolidation is not None:
        fill += draw.draw_consolidation(cv, f.consolidation, field[f.consolidation.side])
    if f.edema is not None:
        fill += draw.draw_edema(cv, f.edema, field, acq.seed)
    np.minimum(fill, aerated, out=fill)
    dens += fill * air
    aerated -= fill
    # markings (vessels, hila, fine texture) show only in aerated lung, not beyond a pneumothorax's edge
    marked = aerated
    rim = np.zeros_like(lung)
    if f.pneumothorax is not None:
        inc, rim = draw.draw_pneumothorax_rim(cv, f.pneumothorax, lungs[f.pneumothorax.side])
        dens += inc
        marked = np.clip(aerated - rim, 0.0, 1.0)
    texture = _VESSEL * _vessels(cv, geo, anat.texture_seed) + 0.02 * cv.smooth_noise(rng, 24)
    texture += _HILUM * cv.polygons([_hilum(geo, s) for s in SIDES], blur=6.0)
    dens += texture * marked

    dens = full(unsharpen(dens, acq.blur * cv.k) if factor > 1 else dens)
    thin = draw.draw_thin(fine, f, anat.texture_seed)
    if thin is not None:
        dens += thin * full(air * aerated)  # thin findings replace the air that is left
    if f.devices:
        dens += draw.draw_devices(fine, f.devices)

    image = _expose(dens, study, fine, rng)
    if not with_masks:
        return image, {}
    masks = {"heart": heart, "lung_right": lungs["right"], "lung_left": lungs["left"], "pneumothorax": rim}
    return image, {name: full(m) > 0.5 for name, m in masks.items()}


def vessel_paths(geo: Geometry, side: str, seed: int) -> list[np.ndarray]:
    """One lung's vascular tree fanning out from the hilum: per generation, (n, 3, 2) curved segments.

    The tree depends on the patient's ``texture_seed`` and the side only, so it looks the same in
    every study of the patient and follows the hilum when inspiration moves it.
    """
    rng = np.random.default_rng([seed, 0 if side == "right" else 1])
    sg = side_sign(side)
    hx, hy = geo.hilum[side]
    # angles from the lateral direction, negative upwards: five trunks fan over the whole lung
    ang = np.radians(np.array([-75.0, -45.0, -15.0, 15.0, 45.0]) + rng.uniform(-8, 8, 5))
    length = 0.2 * (geo.dome[side] - geo.top) * rng.uniform(0.85, 1.15, 5)
    x, y = np.full(5, hx), np.full(5, hy)
    out = []
    for _ in range(3):  # generations
        bend = ang + np.radians(rng.uniform(-12, 12, len(ang)))  # vessels curve gently, not straight spokes
        xm, ym = x + sg * 0.5 * length * np.cos(ang), y + 0.5 * length * np.sin(ang)
        x1, y1 = xm + sg * 0.5 * length * np.cos(bend), ym + 0.5 * length * np.sin(bend)
        out.append(np.stack([np.stack([x, y], 1), np.stack([xm, ym], 1), np.stack([x1, y1], 1)], axis=1))
        n = 2 * len(ang)
        x, y = np.repeat(x1, 2), np.repeat(y1, 2)
        ang = np.repeat(bend, 2) + np.tile([-1.0, 1.0], n // 2) * np.radians(rng.uniform(12, 30, n))
        length = np.repeat(length, 2) * rng.uniform(0.6, 0.78, n)
    return out


def _vessels(cv: Canvas, geo: Geometry, seed: int) -> np.ndarray:
    img, d = cv.new()
    widths = (0.0075, 0.0055, 0.004)
    trees = [vessel_paths(geo, side, seed) for side in SIDES]
    for gen in range(len(widths)):
        segs = np.concatenate([tree[gen] for tree in trees])
        w, fill = cv.width(widths[gen]), (255, 215, 170)[gen]
        for flat in cv.frame.px(segs.reshape(-1, 2)).reshape(len(segs), -1).tolist():
            d.line(flat, fill=fill, width=w)
    return cv.finish(img, blur=0.7)


def _hilum(geo: Geometry, side: str) -> np.ndarray:
    hx, hy = geo.hilum[side]
    return ellipse(hx, hy, 0.022, 0.045, n=20)


def _bones(cv: Canvas, geo: Geometry) -> np.ndarray:
    """Ribs, clavicles, scapulae and humeral heads in one layer (density already weighted)."""
    a = geo.anat
    img, d = cv.new()
    rib = cv.width(a.rib_width, 1)
    for flat in cv.flat_many([p for s in SIDES for p in geo.anterior_ribs(s)]):
        d.line(flat, fill=90, width=rib)
    for flat in cv.flat_many([geo.scapula(s) for s in SIDES]):
        d.polygon(flat, fill=70)
    for flat in cv.flat_many([p for s in SIDES for p in geo.posterior_ribs(s)]):
        d.line(flat, fill=255, width=rib)
    for flat in cv.flat_many([geo.clavicle(s) for s in SIDES]):
        d.line(flat, fill=255, width=cv.width(a.rib_width * 1.4, 1), joint="curve")
    for flat in cv.flat_many([geo.humeral_head(s) for s in SIDES]):
        d.polygon(flat, fill=255)
    return _BONE * cv.finish(img, blur=1.0)


def _expose(dens: np.ndarray, study: Study, cv: Canvas, rng: np.random.Generator) -> Image.Image:
    """Density -> grey levels: gain and window, quantum noise, then the display gamma (a lookup table)."""
    acq = study.acquisition
    lo, hi = acq.window
    # triangular noise from raw bytes: close enough to Gaussian here, and four times cheaper to draw
    raw = np.frombuffer(rng.bytes(2 * cv.size * cv.size), dtype=np.uint8).reshape(2, cv.size, cv.size)
    grey = raw[0].astype(np.float32)
    grey -= raw[1]
    grey *= np.float32(acq.noise * 255.0 / 104.5)
    grey += dens * np.float32(acq.gain * 255.0 / (hi - lo))
    grey += np.float32(0.5 - lo * 255.0 / (hi - lo))
    np.clip(grey, 0.0, 255.0, out=grey)
    curve = [round(255.0 * (i / 255.0) ** acq.gamma) for i in range(256)]
    return Image.fromarray(grey.astype(np.uint8), mode="L").point(curve)


@functools.cache
def _keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of returning them to the system (once per process).

    A 320-pixel render allocates a few dozen temporary arrays of 0.1-0.5 MB; by default glibc maps
    and unmaps blocks this size, and the page faults of mapping them again took a fifth of the render
    time. A no-op where the C library has no ``mallopt`` (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks below 64 MB come from the heap
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of freed heap
