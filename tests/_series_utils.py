"""DICOM series written by the tests from pydicom's CT_small.dcm: known positions, shuffled names and numbers."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

STEP_MM = 5.0


def oblique_orientation(degrees: float) -> List[float]:
    """Row and column direction cosines rotated by `degrees` about the patient z axis (normal stays +z)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return [c, s, 0.0, -s, c, 0.0]


def write_series(folder: Path, num: int = 5, *, seed: int = 0, orientation: Optional[Sequence[float]] = None,
                 steps: Optional[Sequence[float]] = None, series_number: int = 7) -> List[pydicom.Dataset]:
    """Write `num` single-frame slices of one series into `folder`, shuffled.

    Slice k (in space) lies at origin + steps[k] * normal and holds CT_small's pixels rolled down by 9 k rows, so
    every slice has its own mask. File names and Instance Numbers are shuffled so that neither agrees with space.

    Returns:
        the datasets in spatial order (as written, with their `filename` set).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = source.pixel_array
    series, frame_of_reference = generate_uid(), generate_uid()
    orientation = list(orientation or source.ImageOrientationPatient)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.asarray([float(v) for v in source.ImagePositionPatient])
    steps = list(steps) if steps is not None else [STEP_MM * k for k in range(num)]
    names = rng.permutation(len(steps))
    numbers = rng.permutation(len(steps)) + 1
    if len(steps) > 1 and np.array_equal(numbers, np.arange(1, len(steps) + 1)):
        numbers = numbers[::-1].copy()  # never the spatial order
    written = []
    for k, step in enumerate(steps):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SeriesNumber = series, frame_of_reference, series_number
        ds.InstanceNumber = int(numbers[k])
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin + step * normal]
        ds.PixelData = np.roll(pixels, 9 * k, axis=0).astype(pixels.dtype).tobytes()
        path = folder / f"IM{int(names[k]):04d}_{seed}"
        ds.save_as(path, enforce_file_format=True)
        ds.filename = str(path)
        written.append(ds)
    return written


def pixel_position(ds: pydicom.Dataset, row: int, column: int) -> np.ndarray:
    """The LPS position in mm of pixel (row, column) of `ds` (DICOM PS3.3 equation C.7.6.2.1-1)."""
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    origin = np.asarray([float(v) for v in ds.ImagePositionPatient])
    return origin + column * column_spacing * orientation[:3] + row * row_spacing * orientation[3:]
