"""`python -m gms_hub.data.prepare mni152`: labels, orientation, slab splits and card, on a small stand-in of the
template's three files (written here with nibabel) and, where nilearn is installed, on the real files."""

import json

import nibabel as nib
import numpy as np
import pytest

from gms_hub.data import load_gms_dataset
from gms_hub.data.mni152 import MNI152_FILES, MIN_GAP, find_mni152_files, label_tissue, make_mni152_dataset, slab_splits
from gms_hub.data.prepare import cli

SHAPE = (30, 36, 70)  # x, y, z: a tall "brain", so that the axial plane has enough slices for every split


def _stand_in(folder, flip_x=False):
    """Three NIfTI files like the template's: an ellipsoid brain, a grey-matter shell around a white-matter core,
    and a bright marker in the anterior part. With `flip_x` the volume is stored LAS (x reversed in the array)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    radius = np.sqrt(x**2 + y**2 + (z / 1.1) ** 2)
    brain = radius < 0.8
    wm = np.where(radius < 0.6, 230, np.where(radius < 0.65, 100, 0)).astype(np.uint8)
    gm = np.where((radius >= 0.6) & brain, 220, np.where(radius < 0.6, 20, 0)).astype(np.uint8)
    t1 = np.where(brain, np.where(radius < 0.6, 200, 120), 0).astype(np.uint8)
    t1[(y > 0.62) & brain & (np.abs(z) < 0.3)] = 215  # anterior marker, the brightest voxels (mid-height slices only)
    affine = np.eye(4)
    if flip_x:
        t1, gm, wm = (v[::-1].copy() for v in (t1, gm, wm))
        affine[0, 0], affine[0, 3] = -1.0, SHAPE[0] - 1
    folder.mkdir(parents=True, exist_ok=True)
    for key, volume in (("t1", t1), ("gm", gm), ("wm", wm)):
        nib.save(nib.Nifti1Image(volume, affine), str(folder / MNI152_FILES[key]))
    return folder


def test_label_rule_thresholds_and_ties():
    gm = np.array([128, 127, 200, 140, 10, 128])
    wm = np.array([0, 0, 200, 150, 250, 128])
    # >= 50 % needed; a tie goes to grey; white needs to be above grey
    assert label_tissue(gm, wm).tolist() == [1, 0, 1, 2, 2, 1]


def test_slab_splits_keep_the_gap_and_cover_all_splits():
    splits = slab_splits(100, train_slab=20, held_out_slab=10, gap=5)
    assert splits["test"] and splits["validation"] and splits["train"]
    train = np.array(splits["train"])
    for split in ("test", "validation"):
        assert min(np.abs(train - p).min() for p in splits[split]) > 5  # at least 5 dropped slices in between
    assert not set(splits["train"]) & set(splits["test"]) | set(splits["validation"]) & set(splits["test"])
    with pytest.raises(ValueError, match="at least 5"):
        slab_splits(100, gap=MIN_GAP - 1)


def test_converter_writes_labels_splits_and_card(tmp_path):
    source = _stand_in(tmp_path / "template")
    out = tmp_path / "mni"
    code = cli(["mni152", "--output_dir", str(out), "--source", str(source), "--image_size", "32",
                "--train_slab", "8", "--held_out_slab", "4", "--gap", "5"])
    assert code == 0
    rows = {split: load_gms_dataset(str(out), split=split) for split in ("train", "validation", "test")}
    assert json.loads((out / "id2label.json").read_text()) == {"0": "background", "1": "grey_matter", "2": "white_matter"}
    indices = {split: [r["slice_index"] for r in ds] for split, ds in rows.items()}
    assert all(indices.values())
    train = np.array(indices["train"])
    for split in ("validation", "test"):
        assert all(np.abs(train - i).min() > 5 for i in indices[split]), split
    for ds in rows.values():
        for row in ds:
            assert row["plane"] == "axial"
            assert row["image"].size == (32, 32) and row["mask"].size == (32, 32)
            assert set(np.unique(np.asarray(row["mask"]))) <= {0, 1, 2}
    middle = rows["train"][len(rows["train"]) // 2]
    assert set(np.unique(np.asarray(middle["mask"]))) == {0, 1, 2}
    card = (out / "README.md").read_text()
    assert "not a cohort" in card and "Louis Collins" in card and "McGill" in card
    assert "slices" in card and "dropped" in card


def test_axial_slices_have_anterior_up_whatever_the_stored_orientation(tmp_path):
    ras, _ = make_mni152_dataset(source=_stand_in(tmp_path / "ras"), image_size=32, train_slab=8, held_out_slab=4)
    las, _ = make_mni152_dataset(source=_stand_in(tmp_path / "las", flip_x=True), image_size=32, train_slab=8,
                                 held_out_slab=4)
    image = np.asarray(ras["train"][len(ras["train"]) // 2]["image"])
    bright_rows = np.nonzero((image == image.max()).any(axis=1))[0]
    assert bright_rows.mean() < image.shape[0] / 2  # the anterior marker is in the upper half
    for a, b in zip(ras["train"], las["train"]):  # LAS storage is reoriented to the same pixels
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--source"):
        find_mni152_files(tmp_path)
    assert cli(["mni152", "--output_dir", str(tmp_path / "out"), "--source", str(tmp_path)]) == 1


def test_real_template_from_nilearn(tmp_path):
    pytest.importorskip("nilearn", reason="the template ships with nilearn (pip install -r requirements-dev.txt)")
    splits, provenance = make_mni152_dataset(plane="coronal", image_size=32)
    assert provenance["plane"] == "coronal"
    test = splits["test"]
    assert len(test) >= 10 and len(splits["train"]) > len(test)
    labels = np.stack([np.asarray(m) for m in test["mask"]])
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts[1] > 0 and counts[2] > 0 and counts[0] > counts[1]
    images = np.stack([np.asarray(i) for i in test["image"]])
    assert images[labels == 2].mean() > images[labels == 1].mean()  # T1: white matter is brighter than grey


def test_mni152_rows_get_their_true_neighbours_as_context_slices(tmp_path):
    """`mni152_axial_010` is slice 10 of the volume `mni152_axial`: with context_slices=1 its channels carry slices
    9, 10, 11 of the same split (the end slice of a slab repeats), not three copies of itself."""
    from gms_hub.data.context import parse_slice_name, with_context_slices

    splits, _ = make_mni152_dataset(source=_stand_in(tmp_path / "mni"), image_size=32, train_slab=8, held_out_slab=4)
    for name, split in splits.items():
        gray = {row["slice_index"]: np.asarray(row["image"]) for row in split}
        stacked = with_context_slices(split, 1)
        assert stacked["name"] == split["name"]
        found_neighbour = False
        for row in stacked:
            volume, index = parse_slice_name(row["name"])
            assert (volume, index) == (f"mni152_{row['plane']}", row["slice_index"])
            channels = np.asarray(row["image"])
            for channel, offset in enumerate((-1, 0, 1)):
                expected = gray.get(index + offset, gray[index])  # outside the slab: the slice itself
                np.testing.assert_array_equal(channels[..., channel], expected)
            found_neighbour |= (index - 1 in gray or index + 1 in gray)
        assert found_neighbour, name
        # neighbouring template slices differ, so the stacking is not three copies
        assert any((np.asarray(r["image"])[..., 0] != np.asarray(r["image"])[..., 1]).any() for r in stacked), name
