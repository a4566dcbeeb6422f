"""A minimal uncompressed DICOM, as a modality writes it, for the image decoding tests."""

from __future__ import annotations

import numpy as np
import pytest


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", *, frames: int = 1, rescale=None):
    """A minimal uncompressed 16-bit CR image, as a modality writes it (8-bit colour for RGB/YBR)."""
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
    colour = photometric.startswith(("RGB", "YBR"))
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", photometric, 3 if colour else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    if colour:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PlanarConfiguration = 0
        ds.PixelData = pixels.astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).pixel_array.shape == pixels.shape
