"""prepare_image: the one preprocessing step that prepare_datasets and the medlens command share."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

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


def test_bytes_and_paths_give_the_same_image(tmp_path):
    Image.new("L", (70, 70), 120).save(tmp_path / "a.png")
    from_path = prepare_image(tmp_path / "a.png", modality="knee_xray", store_size=32)
    from_bytes = prepare_image((tmp_path / "a.png").read_bytes(), modality="knee_xray", store_size=32)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert load_image(encode_image(from_path), grey=False).size == (32, 32)


def _write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2"):
    """A minimal uncompressed 16-bit CR image, as a modality writes it."""
    pydicom = pytest.importorskip("pydicom", reason="DICOM input needs pydicom (the test extra installs it)")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SecondaryCaptureImageStorage,
        generate_uid(),
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = (
        meta,
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", photometric, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).pixel_array.shape == pixels.shape


def test_dicom_12_bit_is_windowed_to_8_bit_and_monochrome1_inverted(tmp_path):
    pixels = np.tile(np.linspace(100, 4000, 48).astype(np.uint16), (32, 1))  # a left-to-right ramp
    _write_dicom(tmp_path / "m2.dcm", pixels)
    _write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    m2, m1 = (np.asarray(load_image(tmp_path / f"{n}.dcm")) for n in ("m2", "m1"))
    assert m2.dtype == np.uint8 and m2.shape == (32, 48)
    assert m2[0, 0] == 0 and m2[0, -1] == 255 and np.all(np.diff(m2[0].astype(int)) >= 0)
    assert np.array_equal(m1, 255 - m2)  # MONOCHROME1 stores dark as high values
    rgb = load_image(tmp_path / "m2.dcm", grey=False)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb)[..., 0], m2)
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
