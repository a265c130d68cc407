"""The input door (gms_hub/io/reading.py): the format is decided once and a decided format is not sniffed again."""

import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from gms_hub.io import reading
from gms_hub.io.reading import detect_format, read_input, read_label_frames, read_medical_image


@pytest.fixture
def files(tmp_path):
    png = tmp_path / "us.png"
    Image.fromarray(np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)).save(png)
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(16 * 16 * 3, dtype=np.int16).reshape(16, 16, 3), np.eye(4)), nii)
    dcm = tmp_path / "IM0001"  # no extension: recognised by its preamble
    shutil.copy(get_testdata_file("CT_small.dcm"), dcm)
    return {"image": png, "nifti": nii, "dicom": dcm}


def test_detect_format_names_each_kind(files, tmp_path):
    assert {kind: detect_format(path) for kind, path in files.items()} == {k: k for k in files}
    (tmp_path / "notes").write_bytes(b"not a scan")
    assert detect_format(tmp_path / "notes") == "image"


def test_a_decided_format_is_not_sniffed_again(files, monkeypatch):
    expected = {kind: read_input(path) for kind, path in files.items()}

    def refuse(path):
        raise AssertionError(f"{path} was sniffed again")

    monkeypatch.setattr(reading, "detect_format", refuse)
    for kind, path in files.items():
        opened = read_input(path, kind=kind)
        assert (opened.kind, opened.num_frames, opened.spacing) == (kind, expected[kind].num_frames, expected[kind].spacing)
        np.testing.assert_array_equal(np.asarray(opened.frames[0]), np.asarray(expected[kind].frames[0]))
    assert read_medical_image(files["nifti"], kind="nifti").num_frames == 3
    assert read_label_frames(files["nifti"], kind="nifti").shape == (3, 16, 16)


def test_an_unknown_kind_is_refused(files):
    with pytest.raises(ValueError, match="kind must be one of"):
        read_input(files["image"], kind="png")
