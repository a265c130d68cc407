"""`prepare folder` on DICOM and NIfTI files (gms_hub/data/folder.py): read by gms_hub.io.reading.read_input, stored as
8-bit PNG, multi-frame files and volumes one example per frame/slice, paired with their masks by stem."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from _medical_utils import write_dicom
from gms_hub.data import load_gms_dataset, load_id2label
from gms_hub.data.common import RawDatasetError
from gms_hub.data.folder import convert_folder
from gms_hub.data.prepare import cli
from gms_hub.io.reading import read_input

ROWS, COLS = 16, 12
AFFINE = np.array([[0.0, -0.8, 0.0, 30.0], [0.7, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]])


def labels_for(seed: int) -> np.ndarray:
    """(ROWS, COLS) binary labels 0/1 with a seed-dependent box, never empty."""
    labels = np.zeros((ROWS, COLS), dtype=np.uint8)
    top, left = 2 + seed % 5, 1 + seed % 4
    labels[top : top + 6, left : left + 5] = 1
    return labels


def scan_with(labels: np.ndarray, seed: int) -> np.ndarray:
    """12-bit stored values whose bright region is the labelled one, with some texture."""
    rng = np.random.default_rng(seed)
    return (900 + 300 * labels.astype(np.int64) + rng.integers(0, 40, labels.shape)).astype(np.uint16)


def stored(row) -> tuple:
    return np.asarray(row["image"]), np.asarray(row["mask"])


def rows_by_name(folder, tmp_path):
    splits = load_gms_dataset(str(folder), cache_dir=tmp_path / "cache")
    rows = {row["name"]: (split, row) for split, dataset in splits.items() for row in dataset}
    return rows


def expected_png(path, index=0, **kwargs) -> np.ndarray:
    """What the library's reader gives for that frame, rounded to 8 bits."""
    return np.rint(read_input(path, **kwargs).frames[index] * 255).astype(np.uint8)


def test_single_frame_dicom_and_2d_nifti_pair_by_stem_and_are_stored_as_8_bit_png(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    # 16-bit CT with rescale and window tags, a MONOCHROME1 one, and an extensionless DICOM (PACS export)
    ct_labels, m1_labels, bare_labels, nii_labels = labels_for(0), labels_for(1), labels_for(2), labels_for(3)
    write_dicom(images / "ct.dcm", scan_with(ct_labels, 0), bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                WindowCenter=40, WindowWidth=400)
    write_dicom(images / "mono1.dcm", scan_with(m1_labels, 1), photometric="MONOCHROME1", bits_stored=12)
    write_dicom(images / "IM0001", scan_with(bare_labels, 2), bits_stored=12)
    nib.save(nib.Nifti1Image(scan_with(nii_labels, 3).astype(np.int16), AFFINE), images / "mr.nii.gz")
    # masks 0/255: PNGs for the DICOMs (paired by stem whatever the format), a 2D NIfTI for the NIfTI image
    for stem, labels in (("ct_mask", ct_labels), ("mono1_mask", m1_labels), ("IM0001_mask", bare_labels)):
        Image.fromarray(labels * 255).save(masks / f"{stem}.png")
    nib.save(nib.Nifti1Image(nii_labels * 255, AFFINE), masks / "mr_mask.nii.gz")
    output = convert_folder(images, masks, tmp_path / "out", mask_suffix="_mask", test_fraction=0.25,
                            validation_fraction=0.25, progress=False)

    rows = rows_by_name(output, tmp_path)
    assert sorted(rows) == ["IM0001", "ct", "mono1", "mr"]
    for name, path, labels in (("ct", images / "ct.dcm", ct_labels), ("mono1", images / "mono1.dcm", m1_labels),
                               ("IM0001", images / "IM0001", bare_labels), ("mr", images / "mr.nii.gz", nii_labels)):
        image, mask = stored(rows[name][1])
        assert rows[name][1]["image"].mode == "L" and image.dtype == np.uint8  # 8-bit grayscale PNG
        np.testing.assert_array_equal(image, expected_png(path))
        np.testing.assert_array_equal(mask, labels * 255)
    ct_image, _ = stored(rows["ct"][1])
    # the file's window (40, 400: -160..240 HU) sets the range, not the frame's min..max (-124..215 HU)
    assert 0 < ct_image.min() < 30 and 220 < ct_image.max() < 255
    mono1_image, _ = stored(rows["mono1"][1])
    assert mono1_image[m1_labels == 1].mean() < mono1_image[m1_labels == 0].mean()  # MONOCHROME1: high is dark


def test_multi_frame_dicom_and_3d_nifti_give_one_example_per_frame_in_one_split(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    cine_labels = np.stack([labels_for(k) for k in range(4)])  # (F, H, W)
    write_dicom(images / "cine.dcm", np.stack([scan_with(cine_labels[k], k) for k in range(4)]), bits_stored=12)
    write_dicom(masks / "cine.dcm", cine_labels)  # 8-bit multi-frame label image
    volume_labels = np.stack([labels_for(10 + k) * (1 + k % 2) for k in range(3)], axis=-1)  # (H, W, Z), classes 1, 2
    volume = np.stack([scan_with(volume_labels[..., k] > 0, 10 + k) for k in range(3)], axis=-1).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, AFFINE), images / "ct.nii.gz")
    nib.save(nib.Nifti1Image(volume_labels, AFFINE), masks / "ct.nii.gz")
    for k in range(3):  # three ordinary pairs as well, so that the split has files to share out
        Image.fromarray(scan_with(labels_for(20 + k), k).astype(np.uint8)).save(images / f"us{k}.png")
        Image.fromarray(labels_for(20 + k)).save(masks / f"us{k}.png")
    output = convert_folder(images, masks, tmp_path / "out", labels="lesion,cyst", test_fraction=0.4,
                            validation_fraction=0.2, seed=3, progress=False)

    rows = rows_by_name(output, tmp_path)
    cine = [f"cine_frame{k}" for k in range(1, 5)]  # DICOM counts frames from 1
    slices = [f"ct_slice{k}" for k in range(3)]  # NIfTI slices by their index, as the predict CLI names them
    assert sorted(rows) == sorted(cine + slices + ["us0", "us1", "us2"])
    for k, name in enumerate(cine):
        image, mask = stored(rows[name][1])
        np.testing.assert_array_equal(image, expected_png(images / "cine.dcm", k))
        np.testing.assert_array_equal(mask, cine_labels[k])
    for k, name in enumerate(slices):
        image, mask = stored(rows[name][1])
        np.testing.assert_array_equal(image, expected_png(images / "ct.nii.gz", k))
        np.testing.assert_array_equal(mask, volume_labels[..., k])  # the slice of the mask under the image's slice
    assert len({rows[name][0] for name in cine}) == 1 and len({rows[name][0] for name in slices}) == 1
    assert load_id2label(str(output)) == {0: "background", 1: "lesion", 2: "cyst"}
    recorded = json.loads((output / "splits.json").read_text())
    assert sorted(n for names in recorded["splits"].values() for n in names) == sorted(rows)
    assert "drawn by file" in recorded["provenance"]["scan_frames"]


def test_slice_axis_slices_images_and_masks_alike(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    volume_labels = np.stack([labels_for(k) for k in range(2)], axis=0)  # (2, H, W): slices along axis 0
    volume = np.stack([scan_with(volume_labels[k], k) for k in range(2)], axis=0).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, AFFINE), images / "ax.nii")
    nib.save(nib.Nifti1Image(volume_labels, AFFINE), masks / "ax.nii")
    for k in range(2):
        Image.fromarray(labels_for(5 + k) * 200).save(images / f"us{k}.png")
        Image.fromarray(labels_for(5 + k)).save(masks / f"us{k}.png")
    output = tmp_path / "out"
    cli(["folder", "--images", str(images), "--masks", str(masks), "--output_dir", str(output), "--slice_axis", "0",
         "--test_fraction", "0.34", "--validation_fraction", "0"])
    rows = rows_by_name(output, tmp_path)
    for k in range(2):
        image, mask = stored(rows[f"ax_slice{k}"][1])
        assert image.shape == (ROWS, COLS)
        np.testing.assert_array_equal(image, expected_png(images / "ax.nii", k, slice_axis=0))
        np.testing.assert_array_equal(mask, volume_labels[k] * 255)
    assert "--slice_axis 0" in (output / "README.md").read_text()


def test_frame_count_mismatch_4d_volume_and_colour_palette_are_reported_before_writing(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    volume = np.stack([scan_with(labels_for(k), k) for k in range(3)], axis=-1).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, AFFINE), images / "vol.nii.gz")
    Image.fromarray(labels_for(0) * 255).save(masks / "vol.png")  # one 2D mask for a 3-slice volume
    nib.save(nib.Nifti1Image(volume[..., None].repeat(2, axis=-1), AFFINE), images / "dwi.nii.gz")  # 4D
    nib.save(nib.Nifti1Image(np.zeros((ROWS, COLS, 3, 2), np.uint8), AFFINE), masks / "dwi.nii.gz")
    write_dicom(images / "cine.dcm", np.stack([scan_with(labels_for(k), k) for k in range(2)]), bits_stored=12)
    write_dicom(masks / "cine.dcm", np.stack([labels_for(k) for k in range(3)]))  # 3 mask frames for 2 frames
    with pytest.raises(RawDatasetError) as caught:
        convert_folder(images, masks, tmp_path / "out", progress=False)
    message = str(caught.value)
    assert "vol (image 3 frames, mask 1 frames)" in message
    assert "cine (image 2 frames, mask 3 frames)" in message
    assert "dwi.nii.gz" in message and "4D" in message and "Nothing was written" in message
    assert not (tmp_path / "out").exists()


def test_a_converted_dicom_folder_feeds_training_and_evaluation(tmp_path, tiny_gms):
    from gms_hub.data import TrainTransform, collate_batch
    from gms_hub.evaluation.protocol import evaluate_dataset

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for k in range(4):
        labels = labels_for(k)
        write_dicom(images / f"us{k}.dcm", scan_with(labels, k), bits_stored=12, RescaleSlope=2, RescaleIntercept=-5)
        Image.fromarray(labels).save(masks / f"us{k}.png")
    output = convert_folder(images, masks, tmp_path / "out", test_fraction=0.5, validation_fraction=0, progress=False)
    train = load_gms_dataset(str(output), split="train", cache_dir=tmp_path / "cache")
    batch = collate_batch([train.with_transform(TrainTransform(image_size=64, seed=0))[i] for i in range(len(train))])
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["masks"].max() == 1
    test = load_gms_dataset(str(output), split="test", cache_dir=tmp_path / "cache")
    records = evaluate_dataset(tiny_gms, test, batch_size=2)
    assert sorted(r["name"] for r in records) == sorted(test["name"]) and all(0 <= r["dsc"] <= 1 for r in records)
