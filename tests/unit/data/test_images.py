"""prepare_image: the one preprocessing step that prepare_datasets and the medlens command share."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.dicom import write_dicom
from medlens.data.images import encode_image, load_image, prepare_image
from medlens.data.prepare import _process
from medlens.data.sources import RawRecord
from medlens.errors import DataError


def _png16(path, size=(90, 60)) -> None:
    ramp = np.linspace(0, 60000, size[0] * size[1], dtype=np.float64).reshape(size[1], size[0])
    Image.fromarray(ramp.astype(np.uint16)).save(path)


def test_xray_modalities_decode_grey_and_photographs_rgb(tmp_path):
    _png16(tmp_path / "x.png")
    Image.new("RGB", (50, 40), (200, 30, 10)).save(tmp_path / "skin.jpg", quality=95)
    assert Image.open(tmp_path / "x.png").mode == "I;16"
    xray = prepare_image(tmp_path / "x.png", modality="chest_xray", store_size=64)
    photo = prepare_image(tmp_path / "skin.jpg", modality="dermatology", store_size=64)
    assert (xray.mode, photo.mode) == ("L", "RGB")
    assert xray.size == (64, 43)  # 90x60 shrunk to a longest side of 64
    assert photo.size == (50, 40)  # never enlarged
    assert (
        np.asarray(xray).max() == 255 and np.asarray(xray).min() == 0
    )  # 16-bit windowed to the full 8-bit range


def test_prepare_dataset_stores_exactly_what_prepare_image_returns(tmp_path):
    _png16(tmp_path / "x.png", size=(300, 200))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
        tmp_path / "p.jpg"
    )
    for name, modality in (("x.png", "chest_xray"), ("p.jpg", "dermatology")):
        rec = RawRecord(native_id=name, image=str(tmp_path / name), text="a report", modality=modality)
        _, stored, width, height, reason, _ = _process((rec, 96))
        assert reason is None
        expected = prepare_image(tmp_path / name, modality=modality, store_size=96)
        assert stored == encode_image(expected)
        assert (width, height) == expected.size


def test_unreadable_input_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="bad.png"):
        prepare_image(tmp_path / "bad.png", modality="chest_xray", store_size=64)
    with pytest.raises(DataError, match="gone.png: image file not found"):
        prepare_image(tmp_path / "gone.png", modality="chest_xray", store_size=64)
    # was "image file not found" for a folder that is there (`medlens classify --model m scans/`)
    (tmp_path / "scans").mkdir()
    with pytest.raises(DataError, match="scans: a folder, not an image file; expected an image file"):
        prepare_image(tmp_path / "scans", modality="chest_xray", store_size=64)


def test_bytes_and_paths_give_the_same_image(tmp_path):
    Image.new("L", (70, 70), 120).save(tmp_path / "a.png")
    from_path = prepare_image(tmp_path / "a.png", modality="knee_xray", store_size=32)
    from_bytes = prepare_image((tmp_path / "a.png").read_bytes(), modality="knee_xray", store_size=32)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert load_image(encode_image(from_path), grey=False).size == (32, 32)


def test_dicom_12_bit_is_windowed_to_8_bit_and_monochrome1_inverted(tmp_path):
    pixels = np.tile(np.linspace(100, 4000, 48).astype(np.uint16), (32, 1))  # a left-to-right ramp
    write_dicom(tmp_path / "m2.dcm", pixels)
    write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    m2, m1 = (np.asarray(load_image(tmp_path / f"{n}.dcm")) for n in ("m2", "m1"))
    assert m2.dtype == np.uint8 and m2.shape == (32, 48)
    assert m2[0, 0] == 0 and m2[0, -1] == 255 and np.all(np.diff(m2[0].astype(int)) >= 0)
    assert np.array_equal(m1, 255 - m2)  # MONOCHROME1 stores dark as high values
    rgb = load_image(tmp_path / "m2.dcm", grey=False)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb)[..., 0], m2)
    # a negative rescale slope stores the values inverted: the modality's values are the ramp reversed
    write_dicom(tmp_path / "slope.dcm", pixels, rescale=(-1, 4095))
    assert np.array_equal(np.asarray(load_image(tmp_path / "slope.dcm")), 255 - m2)
    stored = prepare_image(tmp_path / "m2.dcm", modality="chest_xray", store_size=24)
    assert max(stored.size) == 24  # the prepare path reads DICOM through the same function


def test_a_dcm_file_that_is_not_dicom_names_the_file(tmp_path):
    pytest.importorskip("pydicom", reason="DICOM input needs pydicom (the test extra installs it)")
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(DataError) as err:
        load_image(bad)
    assert err.value.file == str(bad) and "DICOM" in str(err.value)


def test_an_image_with_nan_pixels_is_a_data_error_not_a_black_image(tmp_path):
    # one such file among many used to stop medlens classify/embed/generate with a raw ValueError
    for name, fill in (("half.tif", 20), ("all.tif", 40)):
        arr = np.ones((40, 40), np.float32)
        arr[:fill] = np.nan
        Image.fromarray(arr, mode="F").save(tmp_path / name)
        with pytest.raises(
            DataError,
            match=rf"{name}: image cannot be decoded \(ValueError: image holds "
            rf"{fill * 40} NaN or infinite pixel values of 1600\)",
        ):
            load_image(tmp_path / name)


def _png(
    path, arr: np.ndarray, colour_type: int, bit_depth: int = 16, orientation: int | None = None
) -> None:
    """A PNG written byte by byte (Pillow cannot write 16-bit colour), unfiltered rows, optional EXIF orientation."""
    h = arr.shape[0]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", arr.shape[1], h, bit_depth, colour_type, 0, 0, 0)
    exif = b"II*\x00" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, orientation or 1, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + (chunk(b"eXIf", exif) if orientation else b"")
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_colour_and_grey_alpha_pngs_are_windowed_like_16_bit_grey_not_crushed(tmp_path):
    # 12-bit data in 16-bit samples: Pillow keeps the high byte, 0..15, which was stored as a black image
    ramp = np.linspace(0, 4095, 40 * 30).reshape(30, 40).astype(np.uint16)
    opaque = np.full_like(ramp, 65535)
    _png(tmp_path / "l16.png", ramp, 0)
    _png(tmp_path / "rgb48.png", np.stack([ramp] * 3, -1), 2)
    _png(tmp_path / "la32.png", np.stack([ramp, opaque], -1), 4)
    _png(tmp_path / "rgba64.png", np.stack([ramp, ramp, ramp, opaque], -1), 6)
    grey = np.asarray(load_image(tmp_path / "l16.png"))
    assert grey.min() == 0 and grey.max() == 255
    for name in ("rgb48", "la32", "rgba64"):
        assert np.array_equal(np.asarray(load_image(tmp_path / f"{name}.png")), grey), name
        colour = np.asarray(load_image(tmp_path / f"{name}.png", grey=False))
        assert colour.shape == (30, 40, 3) and all(np.array_equal(colour[..., c], grey) for c in range(3)), (
            name
        )
    from_bytes = load_image((tmp_path / "rgb48.png").read_bytes())
    assert np.array_equal(np.asarray(from_bytes), grey)


def test_a_half_transparent_16_bit_grey_alpha_png_is_composited_over_black(tmp_path):
    ramp = np.linspace(0, 4095, 40 * 30).reshape(30, 40).astype(np.uint16)
    alpha = np.full_like(ramp, 65535)
    alpha[:, :20] = 0  # the left half fully transparent
    _png(tmp_path / "la.png", np.stack([ramp, alpha], -1), 4)
    out = np.asarray(load_image(tmp_path / "la.png"))
    assert (out[:, :20] == 0).all() and out[:, 20:].max() == 255


def test_a_multi_frame_dicom_is_a_rejected_image_not_a_crash(tmp_path):
    # was a raw TypeError ("Cannot handle this data type: (1, 1, 32)") that stopped the whole dataset
    frame = np.tile(np.linspace(100, 4000, 16).astype(np.uint16), (12, 1))
    write_dicom(tmp_path / "mf.dcm", np.stack([frame, frame[::-1]]), frames=2)
    with pytest.raises(DataError) as err:
        load_image(tmp_path / "mf.dcm")
    assert str(err.value) == (
        f"{tmp_path / 'mf.dcm'}: DICOM holds 2 frames; expected a single-frame DICOM (one radiograph); "
        "export the frame to use as its own file"
    )
    rec = RawRecord(native_id="mf", image=str(tmp_path / "mf.dcm"), text="a report", modality="chest_xray")
    decoded = _process((rec, 64))
    assert (decoded.reason, decoded.detail) == ("unreadable image", str(err.value))


def test_a_dicom_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    import pydicom

    write_dicom(tmp_path / "big.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(tmp_path / "big.dcm")
    ds.Rows, ds.Columns = 30_000, 30_000  # 900 M pixels declared, 128 bytes of data
    ds.save_as(tmp_path / "big.dcm")
    monkeypatch.setattr(
        pydicom.dataset.Dataset, "pixel_array", property(lambda self: pytest.fail("pixels decoded"))
    )
    with pytest.raises(
        DataError,
        match=r"big.dcm: image is too large \(1 frame\(s\) of 30000x30000\); expected at most 64,000,000 pixels",
    ):
        load_image(tmp_path / "big.dcm")
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4000, 4000, 5  # each frame allowed, 80 M pixels in all
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(DataError, match=r"too large \(5 frame\(s\) of 4000x4000\)"):
        load_image(tmp_path / "big.dcm")


def test_rgb_and_ybr_dicoms_are_read_and_a_dicom_is_known_by_its_bytes_not_its_name(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (12, 1))
    rgb = np.stack([ramp, ramp, ramp], -1)
    write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
    write_dicom(
        tmp_path / "ybr.dcm",
        np.stack([ramp, np.full_like(ramp, 128), np.full_like(ramp, 128)], -1),
        "YBR_FULL",
    )
    for name in ("rgb", "ybr"):  # "Invalid mode for data type" before
        img = load_image(tmp_path / f"{name}.dcm", grey=False)
        assert img.mode == "RGB" and np.abs(np.asarray(img).astype(int) - rgb).max() <= 1, name
        assert np.abs(np.asarray(load_image(tmp_path / f"{name}.dcm")).astype(int) - ramp).max() <= 1, name
    write_dicom(tmp_path / "m2.dcm", np.tile(np.linspace(100, 4000, 16).astype(np.uint16), (12, 1)))
    expected = np.asarray(load_image(tmp_path / "m2.dcm"))
    (tmp_path / "IM0001").write_bytes((tmp_path / "m2.dcm").read_bytes())  # a DICOMDIR member has no suffix
    assert np.array_equal(np.asarray(load_image(tmp_path / "IM0001")), expected)
    assert np.array_equal(np.asarray(load_image((tmp_path / "m2.dcm").read_bytes())), expected)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_a_multi_frame_gif_or_tiff_is_refused_not_read_as_its_first_frame(tmp_path, fmt):
    frames = [Image.new("L", (20, 20), v) for v in (10, 200, 90)]
    path = tmp_path / f"stack.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(DataError) as err:
        load_image(path)
    assert str(err.value) == (
        f"{path}: {fmt} image holds 3 frames; expected a single-frame image (one radiograph or photograph per file)"
    )
    frames[0].save(tmp_path / f"one.{fmt.lower()}", format=fmt)
    assert np.asarray(load_image(tmp_path / f"one.{fmt.lower()}")).max() == 10


def test_a_postscript_file_named_png_is_refused_and_nothing_is_run(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    eps = tmp_path / "scan.png"
    eps.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n%%EOF\n"
    )
    assert Image.open(eps).format == "EPS"  # what an unrestricted open makes of it: Ghostscript renders it
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript was run"))
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: pytest.fail("a program was run"))
    with pytest.raises(DataError) as err:
        load_image(eps)
    assert err.value.file == str(eps) and "cannot identify image file" in str(err.value)
    assert str(err.value).endswith("expected a readable PNG/JPEG/TIFF/DICOM")


def _tiff48(path, arr: np.ndarray) -> None:
    """An uncompressed 16-bit-per-channel RGB TIFF written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    # tag, type (3 short, 4 long), count, value; 258 and 273 point past the directory
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2)]
    entries += [(273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data))]
    bits_at = 8 + 2 + len(entries) * 12 + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 273: bits_at + 6}.get(tag, value)
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    Path(path).write_bytes(
        b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 4 + struct.pack("<3H", 16, 16, 16) + data
    )


def test_a_16_bit_colour_tiff_is_refused_not_crushed_to_its_high_byte(tmp_path):
    ramp = np.linspace(0, 4095, 20 * 10).reshape(10, 20).astype(np.uint16)
    _tiff48(tmp_path / "rgb48.tif", np.stack([ramp] * 3, -1))
    assert np.asarray(Image.open(tmp_path / "rgb48.tif")).max() == 15  # what Pillow reads: 0..15
    with pytest.raises(DataError) as err:
        load_image(tmp_path / "rgb48.tif")
    assert str(err.value) == (
        f"{tmp_path / 'rgb48.tif'}: 16-bit colour TIFF image (raw mode RGB;16L): only 8 of its 16 bits could be "
        "read; expected a 16-bit grey image, a 16-bit colour PNG or an 8-bit colour image"
    )


def test_a_16_bit_colour_png_is_turned_by_its_exif_orientation_like_other_images(tmp_path):
    ramp = np.linspace(0, 4095, 40 * 30).reshape(30, 40).astype(np.uint16)
    _png(tmp_path / "l16.png", ramp, 0)
    _png(
        tmp_path / "rgb48.png", np.stack([ramp] * 3, -1), 2, orientation=6
    )  # stored rotated: turn 90 clockwise
    upright = np.asarray(load_image(tmp_path / "rgb48.png"))
    assert upright.shape == (40, 30)
    assert np.array_equal(upright, np.rot90(np.asarray(load_image(tmp_path / "l16.png")), k=-1))
