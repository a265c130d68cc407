"""`prepare folder` on DICOM series (gms_hub/data/folder.py, group_series): single-frame files sharing a Series Instance
UID are one volume, rows `<folder>/series<n>_slice<k>` in spatial order, a series whole in one split, each slice
paired with its own mask file; an inconsistent series is an error naming its files."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _series_utils import write_series
from gms_hub.data import load_gms_dataset
from gms_hub.data.common import RawDatasetError
from gms_hub.data.context import parse_slice_name, with_context_slices
from gms_hub.data.folder import convert_folder
from gms_hub.io.reading import read_input


def write_masks(series, images: Path, masks: Path):
    """A PNG mask per slice file (same relative path and stem); slice k in space has k + 1 foreground rows, so a
    stored mask says which spatial slice it is."""
    expected = []
    for k, ds in enumerate(series):
        path = Path(ds.filename)
        labels = np.zeros((int(ds.Rows), int(ds.Columns)), np.uint8)
        labels[10 : 10 + k + 1, 20:60] = 255
        target = masks / path.relative_to(images).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels).save(target)
        expected.append((path, labels))
    return expected  # spatial order


def rows_by_name(folder, tmp_path):
    splits = load_gms_dataset(str(folder), cache_dir=tmp_path / "cache")
    return {row["name"]: (split, row) for split, dataset in splits.items() for row in dataset}


def expected_png(path) -> np.ndarray:
    return np.rint(read_input(path).frames[0] * 255).astype(np.uint8)


def test_a_shuffled_series_becomes_rows_in_spatial_order_in_one_split(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    series = write_series(images / "case1", num=5, seed=0, series_number=7)  # names and numbers disagree with space
    assert sorted(Path(ds.filename).name for ds in series) != [Path(ds.filename).name for ds in series]
    assert [int(ds.InstanceNumber) for ds in series] != sorted(int(ds.InstanceNumber) for ds in series)
    expected = write_masks(series, images, masks)
    for k in range(4):  # ordinary image pairs beside the series, so the split has units to share out
        Image.fromarray(np.full((32, 32), 40 * k, np.uint8)).save(images / f"us{k}.png")
        Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(masks / f"us{k}.png")
    output = convert_folder(images, masks, tmp_path / "out", test_fraction=0.2, validation_fraction=0.2, seed=1,
                            progress=False)

    rows = rows_by_name(output, tmp_path)
    slices = [f"case1/series7_slice{k}" for k in range(5)]
    assert sorted(rows) == sorted(slices + [f"us{k}" for k in range(4)])
    for name, (path, labels) in zip(slices, expected):
        _, row = rows[name]
        np.testing.assert_array_equal(np.asarray(row["mask"]), labels)  # the mask of spatial slice k
        np.testing.assert_array_equal(np.asarray(row["image"]), expected_png(path))  # its own file's pixels
    assert len({rows[name][0] for name in slices}) == 1  # the series is whole in one split
    recorded = json.loads((output / "splits.json").read_text())
    assert recorded["provenance"]["dicom_series"]["series"] == {"case1/series7": {"slices": 5, "ordered_by": "position"}}
    split = rows[slices[0]][0]
    assert [n for n in recorded["splits"][split] if n.startswith("case1/")] == slices  # spatial order
    assert "DICOM series as volumes" in (output / "README.md").read_text()

    # 2.5D training finds each slice's neighbours in the series
    dataset = load_gms_dataset(str(output), cache_dir=tmp_path / "cache")[split]
    gray = {row["name"]: np.asarray(row["image"]) for row in dataset}
    stacked = {row["name"]: np.asarray(row["image"]) for row in with_context_slices(dataset, 1)}
    assert parse_slice_name(slices[2]) == ("case1/series7", 2)
    for channel, neighbour in enumerate(slices[1:4]):
        np.testing.assert_array_equal(stacked[slices[2]][..., channel], gray[neighbour])


def test_two_series_are_two_volumes_and_a_split_list_names_them(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    first = write_series(images / "study", num=4, seed=0, series_number=3)
    second = write_series(images / "study", num=3, seed=1, series_number=4)  # same folder, another series
    expected = {"study/series3": write_masks(first, images, masks), "study/series4": write_masks(second, images, masks)}
    split_list = tmp_path / "split.json"
    split_list.write_text(json.dumps({"train": ["study/series3"], "test": ["study/series4"]}))
    output = convert_folder(images, masks, tmp_path / "out", splits=split_list, validation_fraction=0, progress=False)

    rows = rows_by_name(output, tmp_path)
    assert sorted(rows) == sorted([f"study/series3_slice{k}" for k in range(4)] + [f"study/series4_slice{k}" for k in range(3)])
    for volume, split in (("study/series3", "train"), ("study/series4", "test")):
        for k, (path, labels) in enumerate(expected[volume]):
            where, row = rows[f"{volume}_slice{k}"]
            assert where == split
            np.testing.assert_array_equal(np.asarray(row["mask"]), labels)
            np.testing.assert_array_equal(np.asarray(row["image"]), expected_png(path))


def test_a_series_with_two_slices_at_one_position_is_an_error_naming_the_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    series = write_series(images / "case1", num=4, seed=2, steps=[0.0, 5.0, 5.0, 10.0])
    write_masks(series, images, masks)
    with pytest.raises(RawDatasetError, match="DICOM series that is not one volume") as caught:
        convert_folder(images, masks, tmp_path / "out", progress=False)
    message = str(caught.value)
    assert "case1/series7" in message and "same position" in message
    assert Path(series[1].filename).name in message and Path(series[2].filename).name in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_one_mask_volume_for_a_whole_series_is_not_paired_and_says_how(tmp_path):
    import nibabel as nib

    images, masks = tmp_path / "images", tmp_path / "masks"
    write_series(images / "case1", num=3, seed=0)
    masks.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 3), np.uint8), np.eye(4)), masks / "case1.nii.gz")
    with pytest.raises(RawDatasetError, match="own mask file") as caught:
        convert_folder(images, masks, tmp_path / "out", progress=False)
    assert "case1.nii.gz" in str(caught.value)
