"""DICOM and NIfTI files written by the tests: small, with known pixels and identifying values to look for."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Identifying values put into every written file; no message, log or repr may contain them.
PATIENT = dict(PatientName="Doe^Jane", PatientID="SECRET-ID-4711", PatientBirthDate="19610203",
               AccessionNumber="ACC-998877")


def dicom_dataset(sop_class=CTImageStorage, modality: str = "CT", **uids) -> Dataset:
    """A dataset with the patient, study, series and equipment attributes DICOM and highdicom expect."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = uids.get("study", generate_uid())
    ds.SeriesInstanceUID = uids.get("series", generate_uid())
    if uids.get("frame_of_reference", True):
        ds.FrameOfReferenceUID = uids.get("frame_of_reference_uid", generate_uid())
        ds.PositionReferenceIndicator = ""
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.PatientSex = "F"
    ds.Modality = modality
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "1", "20200101", "120000", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, 1, 1
    ds.ContentDate, ds.ContentTime, ds.Manufacturer = "20200101", "120000", "test"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: Optional[int] = None,
                sop_class=CTImageStorage, modality: str = "CT", frame_of_reference: bool = True, **attributes) -> Path:
    """Write `pixels` ((H, W), (F, H, W) or (H, W, 3)) as an uncompressed DICOM file with extra `attributes`."""
    ds = dicom_dataset(sop_class, modality, frame_of_reference=frame_of_reference)
    bits = bits_stored or (8 if pixels.dtype == np.uint8 else 16)
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def ct_slices(num: int = 3, rows: int = 16, cols: int = 12) -> List[Dataset]:
    """Single-frame CT slices of one series: 12-bit, rescaled to HU, windowed, 0.5 x 0.75 mm pixels."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for k in range(num):
        ds = dicom_dataset(study=study, series=series, frame_of_reference_uid=frame_of_reference)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.5 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.KVP = [0.5, 0.75], 2.5, 120
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.set_pixel_data((np.arange(rows * cols).reshape(rows, cols) * 7 + 900 + 40 * k).astype(np.uint16),
                          "MONOCHROME2", 12)
        slices.append(ds)
    return slices


def write_enhanced_ct(path: Path, num: int = 3) -> Path:
    """An enhanced (functional-group) multi-frame CT, converted from `ct_slices` by highdicom."""
    import highdicom as hd

    image = hd.legacy.LegacyConvertedEnhancedCTImage(ct_slices(num), generate_uid(), 2, generate_uid(), 1)
    image.save_as(path)
    return Path(path)


def read_raw(path) -> np.ndarray:
    """The stored pixel values, decoded by pydicom without any LUT."""
    return pydicom.dcmread(path).pixel_array
