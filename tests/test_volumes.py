"""Volume results: mL per class, 3D components, the largest-component postprocess, and volumes.csv from predict."""


import nibabel as nib
import numpy as np
import pytest
from _medical_utils import write_enhanced_ct
from _predict_utils import read_csv, use_stand_in
from PIL import Image

from gms_hub.inference import predict
from gms_hub.inference.volumes import keep_largest_component, volume_columns, volume_row

NAMES = ["liver", "spleen", "kidney"]


def labelled_volume():
    """Class 1: an 18-voxel block, a voxel touching it only at a corner, a lone voxel; class 2: a 5-voxel rod."""
    volume = np.zeros((4, 10, 10), np.uint8)
    volume[0:2, 1:4, 1:4] = 1  # 2 x 3 x 3 = 18 voxels
    volume[2, 4, 4] = 1  # touches (1, 3, 3) at a corner only: its own component
    volume[3, 8, 8] = 1
    volume[1, 6, 2:7] = 2  # 5 voxels in a row
    return volume


def test_volume_row_counts_ml_and_face_connected_components():
    row = volume_row(labelled_volume(), NAMES, voxel_mm3=0.5 * 0.75 * 2.0)
    assert row["slices"] == 4 and row["voxel_mm3"] == 0.75
    assert row["volume_ml_liver"] == pytest.approx(20 * 0.75 / 1000)
    assert row["components_liver"] == 3 and row["largest_share_liver"] == pytest.approx(18 / 20)
    assert row["volume_ml_spleen"] == pytest.approx(5 * 0.75 / 1000)
    assert row["components_spleen"] == 1 and row["largest_share_spleen"] == 1.0
    assert (row["volume_ml_kidney"], row["components_kidney"], row["largest_share_kidney"]) == (0.0, 0, "")
    assert volume_columns(NAMES)[0] == "input" and volume_columns(NAMES)[-1] == "status"
    assert set(volume_columns(NAMES)) == set(row) | {"input", "status"}


def test_volume_row_without_spacing_leaves_ml_empty():
    row = volume_row(labelled_volume(), NAMES[:2], voxel_mm3=None)
    assert row["volume_ml_liver"] == "" and row["voxel_mm3"] == "" and row["components_liver"] == 3


def test_keep_largest_component_per_class():
    volume = labelled_volume()
    kept = keep_largest_component(volume, 2)
    expected = np.zeros_like(volume)
    expected[0:2, 1:4, 1:4] = 1
    expected[1, 6, 2:7] = 2
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(volume, labelled_volume())  # the input is left as it was


AFFINE = np.diag([0.8, 1.2, 2.5, 1.0])  # 2.4 mm³ voxels


def write_scan(path):
    """A NIfTI the stand-in model labels as: class 1 where the value is 50 (a 12- and a 4-voxel blob), class 2
    where it is 100 (6 voxels), background elsewhere (the volume's range 0..100 maps to 0..1)."""
    data = np.zeros((12, 10, 4), np.float32)
    data[1:4, 1:3, 0:2] = 50  # 3 x 2 x 2 = 12 voxels
    data[8:10, 6:8, 3] = 50  # 4 voxels
    data[5, 1:4, 1:3] = 100  # 6 voxels
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


@pytest.fixture
def multi(monkeypatch):
    return use_stand_in(monkeypatch, {0: "background", 1: "liver", 2: "spleen"})


def test_predict_writes_volumes_csv_for_a_nifti_volume(multi, tmp_path):
    source = write_scan(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert predict.main(["--input", str(source), "--output_dir", str(out)]) == 0
    (row,) = read_csv(out / "volumes.csv")
    assert row["input"] == str(source) and row["status"] == "ok" and row["slices"] == "4"
    assert float(row["voxel_mm3"]) == pytest.approx(2.4)
    assert float(row["volume_ml_liver"]) == pytest.approx(16 * 2.4 / 1000)
    assert (row["components_liver"], float(row["largest_share_liver"])) == ("2", 0.75)
    assert float(row["volume_ml_spleen"]) == pytest.approx(6 * 2.4 / 1000)
    assert (row["components_spleen"], row["largest_share_spleen"]) == ("1", "1.0")


def test_postprocess_largest_component_reaches_masks_and_both_csvs(multi, tmp_path):
    source = write_scan(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert predict.main(["--input", str(source), "--output_dir", str(out), "--postprocess", "largest_component"]) == 0
    mask = np.asarray(nib.load(out / "ct_mask.nii.gz").dataobj)
    assert int((mask == 1).sum()) == 12 and int((mask == 2).sum()) == 6
    assert mask[8:10, 6:8, 3].max() == 0  # the 4-voxel blob is gone
    (row,) = read_csv(out / "volumes.csv")
    assert float(row["volume_ml_liver"]) == pytest.approx(12 * 2.4 / 1000) and row["components_liver"] == "1"
    rows = read_csv(out / "predictions.csv")
    assert [int(r["area_px_liver"]) for r in rows] == [6, 6, 0, 0]


def test_multi_frame_dicom_volume_takes_its_slice_spacing_from_frame_positions(multi, tmp_path):
    source = write_enhanced_ct(tmp_path / "enhanced.dcm", num=3)  # 0.5 x 0.75 mm pixels, slices 2.5 mm apart
    out = tmp_path / "out"
    assert predict.main(["--input", str(source), "--output_dir", str(out)]) == 0
    (row,) = read_csv(out / "volumes.csv")
    assert float(row["voxel_mm3"]) == pytest.approx(0.5 * 0.75 * 2.5)
    masks = [np.asarray(Image.open(out / f"enhanced_frame{k}.png")) for k in (1, 2, 3)]
    liver = sum(int((m == 1).sum()) for m in masks)
    assert float(row["volume_ml_liver"]) == pytest.approx(liver * 0.5 * 0.75 * 2.5 / 1000, abs=1e-4)


def test_single_images_give_no_volumes_csv(multi, tmp_path):
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(tmp_path / "us.png")
    out = tmp_path / "out"
    assert predict.main(["--input", str(tmp_path / "us.png"), "--output_dir", str(out)]) == 0
    assert (out / "predictions.csv").is_file() and not (out / "volumes.csv").exists()
