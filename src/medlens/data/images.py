"""Decoding and storing images: the one function every stage (prepare, training, inference) uses.

``load_image`` turns whatever a source holds (8/16-bit PNG, 16-bit colour PNG included, JPEG with EXIF
rotation, float TIFF, CMYK, palette, RGBA, grey or colour DICOM, known by its suffix or its ``DICM``
mark, when pydicom is installed) into an 8-bit ``L`` or ``RGB`` PIL image. Only the formats in
``FORMATS`` are tried, one frame per file, and anything else is a ``DataError`` naming the file.
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
    "IMAGE_SUFFIXES",
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


def _from_dicom(src: Path | io.BytesIO, name: str) -> Image.Image:
    try:
        import pydicom
    except ImportError as e:
        raise DataError(
            "DICOM input needs pydicom",
            file=name,
            expected="`pip install pydicom` (the medlens[dicom] extra)",
        ) from e
    try:
        ds = pydicom.dcmread(src)
        # the header's size, checked before any pixel is decoded: a compressed frame can expand without bound
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if rows * cols * frames > MAX_PIXELS:
            raise DataError(
                f"image is too large ({frames} frame(s) of {cols}x{rows})",
                file=name,
                expected=f"at most {MAX_PIXELS:,} pixels",
            )
        if frames > 1:
            raise DataError(
                f"DICOM holds {frames} frames",
                file=name,
                expected="a single-frame DICOM (one radiograph); export the frame to use as its own file",
            )
        arr = ds.pixel_array
    except DataError:
        raise
    except (
        pydicom.errors.InvalidDicomError,
        AttributeError,
        ValueError,
        TypeError,
        NotImplementedError,
        RuntimeError,
    ) as e:
        # not DICOM, no pixel data, or a compressed transfer syntax without its decoder plugin
        raise DataError(
            f"DICOM cannot be decoded ({type(e).__name__}: {e})",
            file=name,
            expected="a DICOM file with pixel data pydicom can decode",
        ) from e
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB)
        return Image.fromarray(arr if arr.dtype == np.uint8 else _window_to_uint8(arr))
    if arr.ndim != 2:
        raise DataError(
            f"DICOM pixel data has shape {arr.shape} ({ds.get('PhotometricInterpretation', '?')})",
            file=name,
            expected="one grey or RGB frame",
        )
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.x (pyproject allows >= 2.4)
        from pydicom.pixel_data_handlers.util import apply_modality_lut

    # stored values to the modality's own (RescaleSlope/Intercept or a Modality LUT): a negative slope
    # stores the image inverted, which min-max windowing alone would keep
    arr = apply_modality_lut(arr, ds)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr  # MONOCHROME1 stores inverted grey levels
    return Image.fromarray(_window_to_uint8(arr), mode="L")


def _is_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then ``DICM`` (a suffix is not needed)."""
    return head[128:132] == b"DICM"


# 16-bit colour PNGs: Pillow keeps only the high byte of each sample (raw mode ``RGB;16B``), which crushes
# 12-bit data to 0..15. A second decode with the little-endian raw mode reads the low bytes instead (same
# bytes per pixel, so the PNG filters are undone the same way); grey+alpha is decoded as 4 bytes of RGBA.
_PNG16_LOW = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _raw_mode(img: Image.Image) -> str | None:
    """The raw mode of a single-tile image's decoder (``RGB;16B``...), None when it has another shape."""
    if len(img.tile) != 1:
        return None
    args = img.tile[0].args
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else None


def _decode_as(reopen, raw: str) -> np.ndarray:
    img = reopen()
    tile = img.tile[0]
    img.tile = [tile._replace(args=raw)]
    img.load()
    return np.asarray(img).astype(np.uint16)


def _png16(img: Image.Image, reopen, grey: bool, name: str) -> Image.Image | None:
    """A 16-bit colour or grey+alpha image windowed to 8 bits like a 16-bit grey one; None for other images."""
    raw = _raw_mode(img)
    if raw in _PNG16_LOW and img.format == "PNG":
        low = _decode_as(reopen, _PNG16_LOW[raw])
        if raw == "LA;16B":  # bytes L-high, L-low, A-high, A-low
            arr = np.stack([low[..., 0] * 256 + low[..., 1], low[..., 2] * 256 + low[..., 3]], axis=-1)
        else:
            arr = _decode_as(reopen, raw) * 256 + low
        arr = arr.astype(np.float64)
        # composite over black (X-rays) or white (photographs), as 8-bit images with alpha are
        if arr.shape[-1] in (2, 4):
            alpha = arr[..., -1:] / 65535.0
            arr = arr[..., :-1] * alpha + (0.0 if grey else 65535.0) * (1 - alpha)
        if grey and arr.shape[-1] == 3:
            arr = arr @ np.array([0.299, 0.587, 0.114])  # the weights of Pillow's RGB -> L
        arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr  # grey+alpha: the grey channel
        out = Image.fromarray(_window_to_uint8(arr)).convert("L" if grey else "RGB")
        # the EXIF orientation, as exif_transpose applies it to every other image
        orientation = img.getexif().get(0x0112)
        return out.transpose(_ORIENTATION[orientation]) if orientation in _ORIENTATION else out
    if raw and ";16" in raw and img.mode in ("RGB", "RGBA", "RGBX", "LA"):
        raise DataError(
            f"16-bit colour {img.format} image (raw mode {raw}): only 8 of its 16 bits could be read",
            file=name,
            expected="a 16-bit grey image, a 16-bit colour PNG or an 8-bit colour image",
        )
    return None


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


# What medlens decodes besides DICOM. Image.open tries only these, so a file that is really EPS or
# PostScript (whatever its name) is never handed to Ghostscript, nor any other rarely used plugin.
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")  # JPEG includes MPO (a phone's JPEG)
# the file names taken for images (DICOM needs pydicom); other files in a folder are not images
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm"})


def _open(src) -> Image.Image:
    # PIL warns between 1x and 2x its limit; medlens checks the declared size itself and raises
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(src, formats=FORMATS)


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
    # long: its docstring; each kind of source (array, PIL image, path, bytes, DICOM) with the checks made
    # before any pixel is decoded, under the one except that turns a decoder's error into a DataError
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
                if (
                    path.is_dir()
                ):  # `medlens classify ... scans/`: the folder exists, so "not found" would mislead
                    raise DataError("a folder, not an image file", file=name, expected="an image file")
                if not path.is_file():
                    raise DataError("image file not found", file=name, expected="an existing file")
                if path.stat().st_size == 0:
                    raise DataError("image file is empty (0 bytes)", file=name, expected="an encoded image")
                with open(path, "rb") as f:
                    head = f.read(132)
                if path.suffix.lower() == ".dcm" or _is_dicom(head):
                    return _normalise_mode(_from_dicom(path, name), grey)
                img = _open(path)
                reopen = lambda: _open(path)  # noqa: E731
            else:
                if len(src) == 0:
                    raise DataError("image bytes are empty", file=name, expected="an encoded image")
                if _is_dicom(src[:132]):
                    return _normalise_mode(_from_dicom(io.BytesIO(src), name), grey)
                img = _open(io.BytesIO(src))
                reopen = lambda: _open(io.BytesIO(src))  # noqa: E731
            # checked on the declared size, before any pixel is decoded (PIL only errors above 2x the limit)
            if img.width * img.height > MAX_PIXELS:
                raise DataError(
                    f"image is too large ({img.width}x{img.height})",
                    file=name,
                    expected=f"at most {MAX_PIXELS:,} pixels",
                )
            # a radiograph is one frame (an MPO's further frames are a phone's previews)
            if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
                raise DataError(
                    f"{img.format} image holds {img.n_frames} frames",
                    file=name,
                    expected="a single-frame image (one radiograph or photograph per file)",
                )
            if (wide := _png16(img, reopen, grey, name)) is not None:
                return wide
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
        TypeError,  # Image.fromarray and decoders on data of a shape they do not handle
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
