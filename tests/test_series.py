"""A DICOM series is one volume: grouping, spatial order, geometry checks, one SEG / NIfTI per series."""

import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from _predict_utils import brightness_labels, read_csv, run_predict as run, use_stand_in
from _series_utils import STEP_MM, oblique_orientation, pixel_position, write_series
from pydicom.data import get_testdata_file

from gms_hub.io.medical import MedicalImageError
from gms_hub.io.reading import list_input_files, read_medical_image
from gms_hub.io.series import group_dicom_series, order_series, read_series


@pytest.fixture
def multi(monkeypatch):
    return use_stand_in(monkeypatch, {0: "background", 1: "bone", 2: "air"})


def expected_labels(datasets):
    """The stand-in model's labels of each slice, computed from the file on its own."""
    return [brightness_labels(read_medical_image(ds.filename).frames[0], (0.0, 1.0), 2) for ds in datasets]


def test_files_are_ordered_by_position_not_by_name_or_instance_number(tmp_path):
    written = write_series(tmp_path / "ct", 6, seed=3)
    files = list_input_files(tmp_path / "ct")
    assert files != [tmp_path / "ct" / ds.filename for ds in written]  # names do not follow space
    (found,), others = group_dicom_series(files)
    series = found.order()
    assert others == [] and series.ordered_by == "position"
    assert [str(p) for p in series.paths] == [ds.filename for ds in written]
    assert [int(d.InstanceNumber) for d in series.datasets] != sorted(int(d.InstanceNumber) for d in written)
    assert series.slice_spacing == pytest.approx(STEP_MM)
    image = read_series(series)
    assert image.num_frames == 6 and image.shape == (6, 128, 128)
    for frame, ds in zip(image.frames, written):
        np.testing.assert_array_equal(frame, read_medical_image(ds.filename).frames[0])


def test_one_seg_per_series_with_frames_in_spatial_order(multi, tmp_path):
    written = write_series(tmp_path / "study", 5, seed=1)
    out = tmp_path / "out"
    assert run("--input", tmp_path / "study", "--output_dir", out, "--output_format", "dicom-seg") == 0
    assert sorted(p.name for p in out.glob("*.dcm")) == ["series7_seg.dcm"]
    seg = hd.seg.segread(out / "series7_seg.dcm")
    uids = [ds.SOPInstanceUID for ds in written]  # spatial order
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == written[0].SeriesInstanceUID
    assert sorted(i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence) == sorted(uids)
    # The SEG's frames of each segment run through space in order (highdicom indexes them by Image Position
    # Patient, from the far end), one per source slice, each at its source slice's position.
    for segment in (1, 2):
        frames = [f for f in seg.PerFrameFunctionalGroupsSequence
                  if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == segment]
        sources = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames]
        positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames]
        assert sources in (uids, uids[::-1])
        np.testing.assert_allclose(positions, [[float(v) for v in written[uids.index(uid)].ImagePositionPatient]
                                               for uid in sources])
    # Geometry equal to the source's.
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in written[0].ImageOrientationPatient])
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in written[0].PixelSpacing])
    assert (seg.Rows, seg.Columns, seg.FrameOfReferenceUID) == (128, 128, written[0].FrameOfReferenceUID)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])  # (5, H, W, 2)
    for k, expected in enumerate(expected_labels(written)):
        for number in (1, 2):
            np.testing.assert_array_equal(pixels[k, ..., number - 1], expected == number)
    rows = read_csv(out / "predictions.csv")
    assert [r["frame"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert {r["mask_file"] for r in rows} == {"series7_seg.dcm"}


def test_series_as_nifti_puts_every_voxel_where_its_dicom_pixel_lies(multi, tmp_path):
    written = write_series(tmp_path / "study", 4, seed=2, orientation=oblique_orientation(30.0))
    out = tmp_path / "out"
    assert run("--input", tmp_path / "study", "--output_dir", out, "--output_format", "nifti") == 0
    mask = nib.load(out / "series7_mask.nii.gz")
    assert mask.shape == (128, 128, 4)  # column, row, slice
    for k, (ds, expected) in enumerate(zip(written, expected_labels(written))):
        for row, column in [(0, 0), (5, 100), (127, 3)]:
            lps = pixel_position(ds, row, column)
            ras = mask.affine @ [column, row, k, 1.0]
            np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
        np.testing.assert_array_equal(np.asarray(mask.dataobj)[..., k].T, expected)
    assert int(mask.header["sform_code"]) == 1 and int(mask.header["qform_code"]) == 1


def test_a_folder_with_two_series_gives_two_volumes(multi, tmp_path):
    first = write_series(tmp_path / "study", 3, seed=4, series_number=2)
    second = write_series(tmp_path / "study", 4, seed=5, series_number=3)
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "study" / "single.dcm")  # a series of one file
    series, others = group_dicom_series(list_input_files(tmp_path / "study"))
    assert [(s.name, len(s.order())) for s in sorted(series, key=lambda s: s.name)] == [("series2", 3), ("series3", 4)]
    assert [p.name for p in others] == ["single.dcm"]
    out = tmp_path / "out"
    assert run("--input", tmp_path / "study", "--output_dir", out, "--output_format", "dicom-seg") == 0
    assert sorted(p.name for p in out.glob("*.dcm")) == ["series2_seg.dcm", "series3_seg.dcm", "single_seg.dcm"]
    for name, datasets in (("series2", first), ("series3", second)):
        seg = pydicom.dcmread(out / f"{name}_seg.dcm")
        assert int(seg.NumberOfFrames) == len(datasets) * 2
    volumes = {r["input"].rsplit("/", 1)[-1]: r for r in read_csv(out / "volumes.csv")}
    assert sorted(volumes) == ["series2", "series3"]  # a single slice is no volume
    assert volumes["series3"]["slices"] == "4"


def test_instance_number_orders_a_series_without_positions(tmp_path):
    written = write_series(tmp_path / "sc", 3, seed=6)
    for ds in written:
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.save_as(ds.filename, enforce_file_format=True)
    series = order_series(list_input_files(tmp_path / "sc"))
    assert series.ordered_by == "instance_number" and series.slice_spacing is None and series.affine is None
    numbers = [int(d.InstanceNumber) for d in series.datasets]
    assert numbers == sorted(numbers)


def edit(ds, **attributes):
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(ds.filename, enforce_file_format=True)


@pytest.mark.parametrize("fault, words", [
    ("duplicate", "same position"),
    ("missing", "slices are missing"),
    ("size", "different sizes"),
    ("orientation", "different Image Orientation"),
    ("position", "lack Image Position"),
])
def test_an_inconsistent_series_is_a_clear_error_naming_the_files(fault, words, tmp_path):
    steps = [0.0, 5.0, 10.0, 15.0, 25.0] if fault == "missing" else None
    written = write_series(tmp_path / "bad", 5, seed=7, steps=steps)
    odd = written[2]
    if fault == "duplicate":
        edit(odd, ImagePositionPatient=written[1].ImagePositionPatient)
    elif fault == "size":
        pixels = pydicom.dcmread(odd.filename).pixel_array[:64]
        odd.Rows, odd.PixelData = 64, np.ascontiguousarray(pixels).tobytes()
        edit(odd)
    elif fault == "orientation":
        edit(odd, ImageOrientationPatient=oblique_orientation(10.0))
    elif fault == "position":
        del odd.ImagePositionPatient
        edit(odd)
    with pytest.raises(MedicalImageError, match=words) as caught:
        order_series(list_input_files(tmp_path / "bad"))
    message = str(caught.value)
    culprit = written[3] if fault == "missing" else odd
    assert f"'{culprit.filename.rsplit('/', 1)[-1]}'" in message
    assert "CT_small" not in message and str(written[0].SeriesInstanceUID) not in message


def test_predict_reports_an_inconsistent_series_and_still_segments_the_rest(multi, tmp_path):
    written = write_series(tmp_path / "study", 3, seed=8, series_number=4)
    edit(written[1], ImagePositionPatient=written[0].ImagePositionPatient)
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "study" / "single.dcm")
    out = tmp_path / "out"
    assert run("--input", tmp_path / "study", "--output_dir", out) == 1
    rows = read_csv(out / "predictions.csv")
    assert [r["status"] for r in rows if r["input"].endswith("single.dcm")] == ["ok"]
    failed = [r for r in rows if not r["input"].endswith("single.dcm")]  # every file of the series has its row
    assert sorted(Path(r["input"]).name for r in failed) == sorted(Path(ds.filename).name for ds in written)
    assert all(r["status"].startswith("series4: ") and "same position" in r["status"] for r in failed)
    (volume,) = read_csv(out / "volumes.csv")
    assert volume["input"].endswith("series4") and "same position" in volume["status"]
