"""Small generated images in the formats and faults real datasets have (RGB JPEG, 16-bit PNG, CMYK, bombs)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(seed: int, size: tuple[int, int] = (48, 40), channels: int = 1) -> np.ndarray:
    """A seeded (H, W[, C]) uint8 array: a smooth gradient plus noise, distinct for every seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, w)[None, :] + np.linspace(0, 30, h)[:, None]
    arr = ramp[..., None] + rng.normal(0, 25, (h, w, channels))
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr[..., 0] if channels == 1 else arr


def _ready(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_png(path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "L") -> Path:
    """A grey (``L``), ``RGB`` or ``RGBA`` PNG."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    Image.fromarray(pixels(seed, size, channels), mode=mode).save(_ready(path), format="PNG")
    return Path(path)


def write_jpeg(
    path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "L", orientation: int | None = None
) -> Path:
    """A grey, ``RGB`` or ``CMYK`` JPEG, optionally with an EXIF orientation tag."""
    channels = {"L": 1, "RGB": 3, "CMYK": 4}[mode]
    img = Image.fromarray(pixels(seed, size, channels), mode=mode)
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    img.save(_ready(path), format="JPEG", quality=90, **kwargs)
    return Path(path)


def write_png16(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A 16-bit grey PNG using only 1000..5000 of its range (as a DICOM export would)."""
    arr = (pixels(seed, size).astype(np.uint16) * 16 + 1000).astype(np.uint16)
    Image.fromarray(arr).save(_ready(path), format="PNG")
    return Path(path)


def write_truncated_jpeg(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
    """A JPEG cut off halfway through its scan data."""
    tmp = write_jpeg(path, seed, size)
    data = tmp.read_bytes()
    tmp.write_bytes(data[: len(data) // 2])
    return tmp


def write_corrupt(path: Path) -> Path:
    """A file with an image name holding text, not an image."""
    _ready(path).write_bytes(b"this is not an image; the download was an HTML error page\n" * 4)
    return Path(path)


def write_empty(path: Path) -> Path:
    _ready(path).write_bytes(b"")
    return Path(path)


def write_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny valid PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    _ready(path).write_bytes(data)
    return Path(path)
