"""Tests of the synthetic benchmark generator (gms_hub/data/synthetic.py)."""

import hashlib

import numpy as np
import pytest

from gms_hub.data.synthetic import KINDS, generate_example, generate_split, make_synthetic_dataset, synthetic_card


def _digest(columns):
    """One hash over every image and mask byte of a split, in order."""
    h = hashlib.sha256()
    for image, mask in zip(columns["image"], columns["mask"]):
        h.update(image.mode.encode())
        h.update(image.tobytes())
        h.update(mask.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_split():
    return generate_split("train", 24, seed=11, image_size=64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("image_size", [32, 64, 97])
def test_mask_binary_nonempty_and_inside(kind, image_size):
    for index in range(6):
        image, mask = generate_example(kind, np.random.default_rng([3, 0, index]), image_size)
        m = np.asarray(mask)
        assert mask.mode == "L" and mask.size == (image_size, image_size) == image.size
        assert set(np.unique(m).tolist()) == {0, 255}
        border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
        assert not border.any(), f"{kind} lesion touches the image border"


def test_image_modes_per_kind():
    modes = {kind: generate_example(kind, np.random.default_rng(0), 64)[0].mode for kind in KINDS}
    assert modes == {"ultrasound": "L", "dermoscopy": "RGB", "histology": "RGB"}


def test_same_seed_same_bytes(small_split):
    again = generate_split("train", 24, seed=11, image_size=64)
    assert _digest(again) == _digest(small_split)


def test_different_seed_or_split_differs(small_split):
    other_seed = generate_split("train", 24, seed=12, image_size=64)
    other_split = generate_split("test", 24, seed=11, image_size=64)
    base = [np.asarray(m).tobytes() for m in small_split["mask"]]
    for other in (other_seed, other_split):
        masks = [np.asarray(m).tobytes() for m in other["mask"]]
        assert not set(base) & set(masks), "two independent splits share an identical mask"


def test_example_independent_of_split_size(small_split):
    # Example i depends only on (seed, split, i): a shorter split is a prefix of a longer one.
    shorter = generate_split("train", 5, seed=11, image_size=64)
    assert _digest(shorter) == _digest({k: v[:5] for k, v in small_split.items()})


def test_all_kinds_present_and_names(small_split):
    assert set(small_split["kind"]) == set(KINDS)
    assert small_split["name"][:2] == ["synthetic_train_00000", "synthetic_train_00001"]
    assert len(set(small_split["name"])) == 24


def test_lesion_is_visible_in_image():
    # The image is rendered from the mask: mean intensity inside and outside the lesion must differ
    # (ultrasound lesions are darker on average; dermoscopy lesions are pigmented, so darker too).
    for kind in ("ultrasound", "dermoscopy"):
        gaps = []
        for index in range(10):
            image, mask = generate_example(kind, np.random.default_rng([5, 0, index]), 96)
            gray = np.asarray(image.convert("L"), dtype=np.float64)
            m = np.asarray(mask) > 0
            gaps.append(gray[~m].mean() - gray[m].mean())
        assert np.mean(gaps) > 10, f"{kind}: lesion not darker than background on average ({gaps})"


def test_kinds_subset_and_errors():
    columns = generate_split("validation", 4, seed=1, image_size=32, kinds=["dermoscopy"])
    assert set(columns["kind"]) == {"dermoscopy"}
    with pytest.raises(ValueError, match="kinds"):
        generate_split("train", 2, kinds=["mri"])
    with pytest.raises(ValueError, match="image_size"):
        generate_example("ultrasound", np.random.default_rng(0), 16)
    with pytest.raises(ValueError, match="split"):
        generate_split("dev", 2)


def test_make_synthetic_dataset_schema():
    ds = make_synthetic_dataset(num_train=4, num_validation=2, num_test=3, seed=5, image_size=48)
    assert {k: len(v) for k, v in ds.items()} == {"train": 4, "validation": 2, "test": 3}
    assert set(ds["train"].column_names) == {"image", "mask", "name", "kind"}
    row = ds["test"][1]
    assert row["name"] == "synthetic_test_00001" and row["kind"] == KINDS[1]
    assert row["mask"].mode == "L" and set(np.unique(np.asarray(row["mask"])).tolist()) == {0, 255}
    # The decoded dataset row holds the same pixels as direct generation.
    direct = generate_split("test", 2, seed=5, image_size=48)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(direct["image"][1]))


def test_card_mentions_parameters():
    text = synthetic_card({"train": 4, "validation": 2, "test": 3}, seed=5, image_size=48)
    assert "--num_train 4" in text and "--seed 5" in text and "| test | 3 |" in text


# ---------------------------------------------------------------- multi-class (num_classes > 1)
BINARY_DIGEST = "2cd74d97e5386dce6d3225217e79d2058d0e30dd9326717ba53495aaa9913eff"
"""`_digest(generate_split("validation", 6, seed=5, image_size=48))` of the binary generator before the
multi-class option existed: num_classes=1 must keep every byte."""


def test_binary_generator_output_is_unchanged():
    assert _digest(generate_split("validation", 6, seed=5, image_size=48)) == BINARY_DIGEST
    assert _digest(generate_split("validation", 6, seed=5, image_size=48, num_classes=1)) == BINARY_DIGEST


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_multiclass_structures_are_all_present_separate_and_inside(kind, num_classes):
    for index in range(4):
        image, mask = generate_example(kind, np.random.default_rng([9, 0, index]), 48, num_classes=num_classes)
        m = np.asarray(mask)
        assert mask.mode == "L" and image.size == mask.size == (48, 48)
        assert np.unique(m).tolist() == list(range(num_classes + 1))
        border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
        assert not border.any()
        # Separate: no foreground pixel touches (8-neighbourhood) a pixel of another foreground class.
        padded = np.pad(m, 1)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = padded[1 + dy : 49 + dy, 1 + dx : 49 + dx]
                assert not ((m > 0) & (neighbour > 0) & (neighbour != m)).any()


def test_multiclass_classes_look_different():
    """Class 1 is darker and class 2 brighter than the background around them, in every kind."""
    for kind in KINDS:
        for index in range(3):
            image, mask = generate_example(kind, np.random.default_rng([2, 0, index]), 64, num_classes=2)
            gray, m = np.asarray(image.convert("L"), dtype=float), np.asarray(mask)
            assert gray[m == 1].mean() < gray[m == 0].mean() - 20 < gray[m == 2].mean() - 40, kind


def test_multiclass_dataset_labels_card_and_errors():
    from gms_hub.data.synthetic import synthetic_id2label

    assert synthetic_id2label(3) == {0: "background", 1: "dark_lesion", 2: "bright_nodule", 3: "ringed_cyst"}
    ds = make_synthetic_dataset(num_train=3, num_validation=1, num_test=1, image_size=32, num_classes=2)
    assert all(set(np.unique(np.asarray(row["mask"])).tolist()) == {0, 1, 2} for row in ds["train"])
    text = synthetic_card({"train": 3}, seed=1, image_size=32, num_classes=2)
    assert "--num_classes 2" in text and "`bright_nodule`" in text
    assert "--num_classes" not in synthetic_card({"train": 3}, seed=1, image_size=32)
    with pytest.raises(ValueError, match="from 2 to 3"):
        generate_example("ultrasound", np.random.default_rng(0), 32, num_classes=4)
