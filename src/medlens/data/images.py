"""Decoding and storing images: the one function every stage (prepare, training, inference) uses.

``load_image`` turns whatever a source holds (8/16-bit PNG, JPEG with EXIF rotation, float TIFF,
CMYK, palette, RGBA, DICOM when pydicom is installed) into an 8-bit ``L`` or ``RGB`` PIL image.
Keeping it in one place is what guarantees that training and inference never drift apart.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medlens.errors import DataError

__all__ = [
    "load_image",
    "fit_longest_side",
    "encode_image",
    "prepare_image",
    "MAX_PIXELS",
    "GREY_MODALITIES",
    "MODALITIES",
]

# Decompression-bomb guard: the largest real inputs (MIMIC, CheXpert full-res) are ~4k x 4k.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Modalities stored as single-channel PNG; everything else (photographs) as RGB JPEG.
GREY_MODALITIES = frozenset({"chest_xray", "knee_xray", "xray", "ct", "mri"})
# Every modality medlens knows: the grey ones and the photographs. A manifest's modality must be one of
# them, or an X-ray spelled `CXR` would be decoded as a colour photograph and left out of chest metrics.
MODALITIES = GREY_MODALITIES | frozenset({"dermatology"})

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def _window_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max window a 16-bit or float array to 8 bits (as MIMIC-CXR-JPG was made from DICOM)."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    # a pixel with no value: windowing would make it black and pass the image on as sound
    if not finite.all():
        raise ValueError(f"image holds {int((~finite).sum())} NaN or infinite pixel values of {arr.size}")
    lo, hi = np.percentile(arr[finite], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
    scaled = np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.nan_to_num(scaled * 255.0).round().astype(np.uint8)


def _from_dicom(path: Path) -> Image.Image:
    try:
        import pydicom
    except ImportError as e:
        raise DataError(
            "DICOM input needs pydicom",
            file=str(path),
            expected="`pip install pydicom` (the medlens[dicom] extra)",
        ) from e
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float64)
    except (
        pydicom.errors.InvalidDicomError,
        AttributeError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as e:
        # not DICOM, no pixel data, or a compressed transfer syntax without its decoder plugin
        raise DataError(
            f"DICOM cannot be decoded ({type(e).__name__}: {e})",
            file=str(path),
            expected="a DICOM file with pixel data pydicom can decode",
        ) from e
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr  # MONOCHROME1 stores inverted grey levels
    return Image.fromarray(_window_to_uint8(arr), mode="L")


def _normalise_mode(img: Image.Image, grey: bool) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(_window_to_uint8(np.asarray(img)), mode="L")
    elif img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if grey else (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if grey:
        return img if img.mode == "L" else img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _open(src) -> Image.Image:
    # PIL warns between 1x and 2x its limit; medlens checks the declared size itself and raises
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(src)


def load_image(src: ImageSource, *, grey: bool = True, draft_size: int | None = None) -> Image.Image:
    """Decode an image into 8-bit ``L`` (``grey=True``) or ``RGB``.

    Args:
        src: a path, encoded bytes, a PIL image or a numpy array (H, W) / (H, W, 3).
        grey: return a single-channel image (X-rays) instead of RGB (photographs).
        draft_size: when given, let the JPEG decoder skip detail below this size (much faster
            for large JPEGs that will be shrunk anyway).

    Returns:
        The decoded image with EXIF orientation applied and pixels fully loaded.

    Raises:
        DataError: naming the file when it is missing, empty, truncated, too large or undecodable.
    """
    name = str(src) if isinstance(src, str | os.PathLike) else "<bytes>"
    try:
        if isinstance(src, np.ndarray):
            arr = src
            img = Image.fromarray(arr if arr.dtype == np.uint8 else _window_to_uint8(arr))
        elif isinstance(src, Image.Image):
            img = src
        else:
            if isinstance(src, str | os.PathLike):
                path = Path(src)
                if not path.is_file():
                    raise DataError("image file not found", file=name, expected="an existing file")
                if path.stat().st_size == 0:
                    raise DataError("image file is empty (0 bytes)", file=name, expected="an encoded image")
                if path.suffix.lower() == ".dcm":
                    return _normalise_mode(_from_dicom(path), grey)
                img = _open(path)
            else:
                if len(src) == 0:
                    raise DataError("image bytes are empty", file=name, expected="an encoded image")
                img = _open(io.BytesIO(src))
            # checked on the declared size, before any pixel is decoded (PIL only errors above 2x the limit)
            if img.width * img.height > MAX_PIXELS:
                raise DataError(
                    f"image is too large ({img.width}x{img.height})",
                    file=name,
                    expected=f"at most {MAX_PIXELS:,} pixels",
                )
            if draft_size and img.format == "JPEG":
                img.draft("L" if grey else "RGB", (draft_size, draft_size))
            img = ImageOps.exif_transpose(img)
            img.load()
        if img.width * img.height > MAX_PIXELS:
            raise DataError(
                f"image is too large ({img.width}x{img.height})",
                file=name,
                expected=f"at most {MAX_PIXELS:,} pixels",
            )
        return _normalise_mode(img, grey)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(
            f"image is too large ({e})", file=name, expected=f"at most {MAX_PIXELS:,} pixels"
        ) from e
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        struct.error,
    ) as e:  # PIL's corrupt-file errors
        raise DataError(
            f"image cannot be decoded ({type(e).__name__}: {e})",
            file=name,
            expected="a readable PNG/JPEG/TIFF/DICOM",
        ) from e


def fit_longest_side(img: Image.Image, size: int) -> Image.Image:
    """Shrink so the longest side is at most ``size`` (never enlarges); Lanczos keeps fine lines."""
    if max(img.size) <= size:
        return img
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def prepare_image(src: ImageSource, *, modality: str, store_size: int) -> Image.Image:
    """What ``prepare_datasets`` makes of one source image; inference calls it too, so they cannot drift.

    The image is decoded single-channel for the X-ray modalities (``GREY_MODALITIES``) and RGB for
    photographs, then shrunk so its longest side is at most ``store_size``. Store it with
    :func:`encode_image`; training decodes those bytes with ``load_image(..., grey=False)``.

    Args:
        src: anything :func:`load_image` accepts.
        modality: the dataset's modality, e.g. ``chest_xray`` or ``dermatology``.
        store_size: the dataset's ``store_size`` (longest side in pixels).

    Returns:
        An 8-bit ``L`` or ``RGB`` image, at most ``store_size`` on its longest side.

    Raises:
        DataError: naming the file when it cannot be read (see :func:`load_image`).
    """
    grey = modality in GREY_MODALITIES
    return fit_longest_side(load_image(src, grey=grey, draft_size=store_size), store_size)


def encode_image(img: Image.Image) -> bytes:
    """PNG for single-channel images (lossless, fast zlib level), JPEG q95 for photographs."""
    buf = io.BytesIO()
    if img.mode == "L":
        # zlib level 1: ~3x faster than the default 6 for ~15% larger files on real radiographs, and
        # encoding was the largest cost of prepare_datasets (docs/benchmarks.md)
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()
