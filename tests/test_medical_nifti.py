"""NIfTI reading (slices, volume-wide intensity range, spacing, errors) and NIfTI mask writing (shape, affine)."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from gms_hub.io.reading import read_medical_image
from gms_hub.io.medical import MedicalImageError, pixel_area_mm2
from gms_hub.io.nifti import write_nifti_mask

AFFINE = np.array([[0.0, -0.8, 0.0, 30.0], [1.2, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


def write_volume(path, data, affine=AFFINE, **header):
    image = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def volume(shape=(20, 16, 6), seed=0):
    return np.random.default_rng(seed).normal(100, 40, shape).astype(np.float32)


def test_anatomical_slices_share_the_volume_range():
    path = os.path.join(data_path, "anatomical.nii")
    reference = nib.load(path)
    data = reference.get_fdata()
    image = read_medical_image(path)
    assert image.kind == "nifti" and image.num_frames == data.shape[2] and image.slice_axis == 2
    assert image.spacing == tuple(float(z) for z in reference.header.get_zooms()[:2])
    lo, hi = data.min(), data.max()
    for k, frame in enumerate(image.frames):
        np.testing.assert_allclose(frame, (data[..., k] - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_array_equal(image.affine, reference.affine)


def test_slice_axis_and_round_trip_of_a_3d_mask(tmp_path):
    data = volume()
    path = write_volume(tmp_path / "vol.nii.gz", data)
    image = read_medical_image(path, slice_axis=0)
    assert image.num_frames == 20 and image.frames[0].shape == (16, 6)
    assert image.spacing == pytest.approx((0.8, 2.5))  # zooms of the remaining axes (columns of the affine)
    masks = np.stack([(frame > 0.5).astype(np.uint8) for frame in image.frames])  # (20, 16, 6)
    out = write_nifti_mask(masks, image, tmp_path)
    assert out.name == "vol_mask.nii.gz"
    written = nib.load(out)
    assert written.shape == data.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, image.affine)
    np.testing.assert_allclose(written.affine, AFFINE, rtol=1e-6)
    expected = (data - data.min()) / (data.max() - data.min()) > 0.5
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.astype(np.uint8))


def test_default_axis_is_the_last_and_batches_cover_every_slice(tmp_path):
    data = volume((12, 10, 7))
    image = read_medical_image(write_volume(tmp_path / "vol.nii", data))
    batches = list(image.frames.batches(3))
    assert [len(b) for b in batches] == [3, 3, 1]
    lo, hi = data.min(), data.max()
    np.testing.assert_allclose(batches[2][0], (data[..., 6] - lo) / (hi - lo), atol=1e-6)


def test_2d_image_round_trip(tmp_path):
    data = np.arange(16 * 12, dtype=np.int16).reshape(16, 12)
    path = write_volume(tmp_path / "slice.nii", data, affine=np.diag([0.3, 0.6, 1.0, 1.0]))
    image = read_medical_image(path)
    assert image.num_frames == 1 and image.slice_axis is None and image.spacing == pytest.approx((0.3, 0.6))
    np.testing.assert_allclose(image.frames[0], data / data.max(), atol=1e-6)
    mask = (image.frames[0] > 0.25).astype(np.uint8)
    written = nib.load(write_nifti_mask([mask], image, tmp_path / "m.nii.gz"))
    assert written.shape == (16, 12)
    np.testing.assert_array_equal(written.affine, image.affine)
    np.testing.assert_allclose(written.affine, np.diag([0.3, 0.6, 1.0, 1.0]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask)
    assert mask.sum() * pixel_area_mm2(image.spacing) == pytest.approx(mask.sum() * 0.18)


def test_trailing_singleton_4d_is_a_volume_and_keeps_its_shape(tmp_path):
    data = volume((8, 9, 5, 1))
    image = read_medical_image(write_volume(tmp_path / "v4.nii.gz", data))
    assert image.num_frames == 5 and image.frames[0].shape == (8, 9)
    written = nib.load(write_nifti_mask(np.ones((5, 8, 9), np.uint8), image, tmp_path))
    assert written.shape == (8, 9, 5, 1)


def test_window_and_cal_range(tmp_path):
    data = volume()
    with_cal = read_medical_image(write_volume(tmp_path / "cal.nii.gz", data, cal_min=80.0, cal_max=120.0))
    np.testing.assert_allclose(with_cal.frames[2], np.clip((data[..., 2] - 80) / 40, 0, 1), atol=1e-6)
    windowed = read_medical_image(tmp_path / "cal.nii.gz", window=(100, 100))  # overrides cal_min/cal_max
    np.testing.assert_allclose(windowed.frames[2], np.clip((data[..., 2] - 50) / 100, 0, 1), atol=1e-6)


def test_4d_is_an_error():
    with pytest.raises(MedicalImageError, match=r"'example4d.nii.gz'.*4D.*Extract one volume"):
        read_medical_image(os.path.join(data_path, "example4d.nii.gz"))


def test_broken_header_is_an_error(tmp_path):
    path = write_volume(tmp_path / "broken.nii", volume())
    raw = bytearray(path.read_bytes())
    raw[0:4] = (999).to_bytes(4, "little")  # sizeof_hdr must be 348
    raw[344:348] = b"xxxx"  # and the magic n+1\0
    path.write_bytes(bytes(raw))
    with pytest.raises(MedicalImageError, match=r"'broken.nii'.*header cannot be read.*export it again"):
        read_medical_image(path)


def test_truncated_volumes_are_errors(tmp_path):
    path = write_volume(tmp_path / "cut.nii", volume())
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(MedicalImageError, match=r"'cut.nii'.*truncated"):
        read_medical_image(path)
    gz = write_volume(tmp_path / "cut.nii.gz", volume())
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes())[:-500]))
    image = read_medical_image(gz)  # a gzip stream's length is only known once read
    with pytest.raises(MedicalImageError, match=r"'cut.nii.gz'.*truncated or corrupt"):
        image.frames[0]


def test_zero_slices_is_an_error(tmp_path):
    path = write_volume(tmp_path / "empty.nii.gz", np.zeros((8, 8, 0), np.float32))
    with pytest.raises(MedicalImageError, match=r"'empty.nii.gz'.*no voxels"):
        read_medical_image(path)


def test_nifti_mask_rejects_a_wrong_number_of_frames(tmp_path):
    image = read_medical_image(write_volume(tmp_path / "v.nii.gz", volume()))
    with pytest.raises(ValueError, match="6 frames"):
        write_nifti_mask(np.zeros((5, 20, 16), np.uint8), image, tmp_path)
