"""Drawing canonical outlines into soft masks, and the few array helpers the renderer needs.

PIL's polygon and line drawing (in C) does the rasterising and its blur softens edges; numpy only
adds weighted masks. That split is what keeps a 320-pixel phantom at a few milliseconds: no
per-pixel Python, and few full-image array operations per layer.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medlens.data.phantom.anatomy import Frame, Geometry

__all__ = ["Canvas", "REFERENCE_SIZE", "upsample2", "unsharpen"]

REFERENCE_SIZE = 320  # line widths and blur radii are given for this image side and scaled from it
_COARSE_RADIUS = 2.0  # blur radii (grid pixels) from which polygons are blurred on a quarter-size grid


class Canvas:
    """Soft masks of canonical shapes on a ``pixels`` x ``pixels`` grid, for one study's geometry.

    Args:
        geo: the study's outlines.
        frame: canonical -> pixel mapping of this grid.
        pixels: side of the grid (``ceil(frame.size)`` by default).
        unsharp: detector unsharpness in reference pixels, added (in quadrature) to every blur.
    """

    def __init__(self, geo: Geometry, frame: Frame, pixels: int | None = None, unsharp: float = 0.0):
        self.geo, self.frame, self.unsharp = geo, frame, unsharp
        self.size = pixels or int(np.ceil(frame.size))
        self.k = frame.size / REFERENCE_SIZE

    def flat(self, pts: np.ndarray) -> list[float]:
        """Canonical (N, 2) points as PIL's flat pixel list."""
        return self.frame.px(pts).ravel().tolist()

    def flat_many(self, shapes: list[np.ndarray]) -> list[list[float]]:
        """:meth:`flat` of many shapes with one transform (one call per shape costs more than drawing them)."""
        flat = self.frame.px(np.concatenate(shapes)).ravel().tolist()
        out, start = [], 0
        for shape in shapes:
            end = start + 2 * len(shape)
            out.append(flat[start:end])
            start = end
        return out

    def width(self, units: float, minimum: int = 1) -> int:
        """A canonical length as a PIL line width."""
        return max(minimum, int(round(self.frame.length(units))))

    def new(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.size, self.size), 0)
        return img, ImageDraw.Draw(img)

    def finish(self, img: Image.Image, blur: float = 0.0) -> np.ndarray:
        """float32 mask in [0, 1]; ``blur`` is a Gaussian radius in reference pixels.

        Radii under 0.6 pixels of this grid are skipped: PIL's blur costs as much at any radius, and
        upsampling a coarse grid softens edges by about a pixel anyway.
        """
        radius = float(np.hypot(blur, self.unsharp)) * self.k
        if radius >= 0.6:
            img = img.filter(ImageFilter.GaussianBlur(radius))
        return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)

    def polygons(self, polys: list[np.ndarray], blur: float = 0.0, fill: int = 255) -> np.ndarray:
        """Filled polygons; wide blurs are done on a quarter-size grid and resized, at a tenth of the cost."""
        if blur * self.k < _COARSE_RADIUS:
            img, draw = self.new()
            for flat in self.flat_many(polys):
                draw.polygon(flat, fill=fill)
            return self.finish(img, blur)
        small = Canvas(self.geo, replace(self.frame, size=self.frame.size / 4), math.ceil(self.size / 4) + 1)
        img, draw = small.new()
        for flat in small.flat_many(polys):
            draw.polygon(flat, fill=fill)
        img = img.filter(ImageFilter.GaussianBlur(blur * small.k))
        img = img.resize(
            (self.size, self.size), Image.Resampling.BILINEAR, box=(0, 0, self.size / 4, self.size / 4)
        )
        return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)

    def lines(
        self,
        paths: list[np.ndarray],
        width_units: float,
        blur: float = 0.0,
        fill: int = 255,
        minimum: int = 1,
    ) -> np.ndarray:
        img, draw = self.new()
        self.draw_lines(draw, paths, width_units, fill, minimum)
        return self.finish(img, blur)

    def draw_lines(
        self,
        draw: ImageDraw.ImageDraw,
        paths: list[np.ndarray],
        width_units: float,
        fill: int = 255,
        minimum: int = 1,
    ) -> None:
        w = self.width(width_units, minimum)
        for flat in self.flat_many(paths):
            draw.line(flat, fill=fill, width=w, joint="curve" if len(flat) > 4 else None)

    def smooth_noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Low-frequency noise of about unit scale: a ``cells`` x ``cells`` grid resized bicubically.

        The grid goes through an 8-bit image because PIL resizes those fastest and reads them back
        cheaply; a small matrix product would call BLAS, whose threads stall on a busy machine.
        """
        grid = np.clip(128.0 + 40.0 * rng.standard_normal((cells, cells)), 0, 255).astype(np.uint8)
        img = Image.fromarray(grid, mode="L").resize((self.size, self.size), Image.Resampling.BICUBIC)
        return (np.asarray(img, dtype=np.float32) - 128.0) * np.float32(1.0 / 40.0)


def unsharpen(a: np.ndarray, sigma: float) -> np.ndarray:
    """Blur ``a`` in place with a 3-tap kernel of standard deviation ``sigma`` (at most 0.7) pixels."""
    w = np.float32(min(0.25, 0.5 * sigma * sigma))
    if w > 0:
        a[1:-1] += w * (a[:-2] + a[2:] - 2 * a[1:-1])
        a[:, 1:-1] += w * (a[:, :-2] + a[:, 2:] - 2 * a[:, 1:-1])
    return a


def upsample2(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear 2x upsampling with pixel centres aligned (edges held), cropped to ``size`` x ``size``.

    Shifted differences in numpy: PIL resizes float images quickly, but reading them back costs more
    than the whole interpolation.
    """
    h, w = a.shape
    rows = np.empty((2 * h, w), dtype=np.float32)
    d = 0.25 * (a[1:] - a[:-1])
    rows[0], rows[-1] = a[0], a[-1]
    rows[1:-1:2] = a[:-1] + d
    rows[2::2] = a[1:] - d
    out = np.empty((2 * h, 2 * w), dtype=np.float32)
    d = 0.25 * (rows[:, 1:] - rows[:, :-1])
    out[:, 0], out[:, -1] = rows[:, 0], rows[:, -1]
    out[:, 1:-1:2] = rows[:, :-1] + d
    out[:, 2::2] = rows[:, 1:] - d
    return out[:size, :size]
