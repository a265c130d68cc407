"""`prepare folder`: a user's own images and masks, binary or multi-class (gms_hub/data/folder.py)."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

import _data_utils as du
from gms_hub.data import load_gms_dataset, load_id2label
from gms_hub.data.common import RawDatasetError
from gms_hub.data.folder import convert_folder
from gms_hub.data.prepare import cli

try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # tests/ is not a package
    from hub_server import HubServer, hub_env, run_python

SIZE = (12, 10)  # (W, H)
PALETTE = {"benign": [255, 0, 0], "malignant": [0, 0, 255]}


def class_map(name: str, num_classes: int) -> np.ndarray:
    """(H, W) class indices 0..K for `name`: class k fills its own rows, so every class is present."""
    labels = np.zeros((SIZE[1], SIZE[0]), dtype=np.uint8)
    for k in range(1, num_classes + 1):
        labels[du.tiny_mask(f"{name}-{k}", size=SIZE)] = k  # later classes overwrite: still 0..K
    return labels


def make_folder(root, names, encode, suffix="", mask_ext=".png", image_ext=".png", num_classes=1):
    """images/<name><image_ext> and masks/<name><suffix><mask_ext>, masks from `encode(class_map)`."""
    for name in names:
        du.save_image(du.tiny_image(name, size=SIZE), root / "images" / f"{name}{image_ext}")
        path = root / "masks" / f"{name}{suffix}{mask_ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(encode(class_map(name, num_classes))).save(path)
    return root / "images", root / "masks"


def colour_encode(labels):
    colours = np.array([[0, 0, 0], PALETTE["benign"], PALETTE["malignant"]], dtype=np.uint8)
    return colours[labels]


NAMES = [f"case{i // 5}/scan_{i:02d}" for i in range(20)]  # nested: four sub-folders


def masks_by_name(folder, tmp_path):
    splits = load_gms_dataset(folder, cache_dir=tmp_path / "cache")
    return {row["name"]: np.asarray(row["mask"]) for ds in splits.values() for row in ds}, splits


def provenance(folder):
    return json.loads((folder / "splits.json").read_text())["provenance"]


def card_metadata(folder):
    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])


# ---------------------------------------------------------------- encodings
def test_binary_0_255_nested_with_suffix_and_jpeg_images(tmp_path):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m * 255, suffix="_mask", image_ext=".jpg")
    out = convert_folder(images, masks, tmp_path / "out", mask_suffix="_mask", progress=False)
    stored, splits = masks_by_name(out, tmp_path)
    assert sorted(stored) == sorted(NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(stored[name], class_map(name, 1) * 255)
    assert splits["train"][0]["image"].size == SIZE
    assert load_id2label(out) == {0: "background", 1: "class_1"}
    assert "binary masks {0, 255}" in provenance(out)["mask_encoding"]


def test_binary_zero_one_masks_are_stored_as_0_255_with_label(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:8], lambda m: m)
    out = convert_folder(images, masks, tmp_path / "out", labels="lesion", progress=False)
    stored, _ = masks_by_name(out, tmp_path)
    for name in NAMES[:8]:
        np.testing.assert_array_equal(stored[name], class_map(name, 1) * 255)
    assert load_id2label(out) == {0: "background", 1: "lesion"}
    assert "binary masks {0, 1}" in (out / "README.md").read_text()


def test_index_masks_with_labels_keep_class_indices_and_id2label(tmp_path):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m, num_classes=2)
    out = convert_folder(images, masks, tmp_path / "out", labels="benign,malignant", progress=False)
    stored, splits = masks_by_name(out, tmp_path)
    for name in NAMES:
        np.testing.assert_array_equal(stored[name], class_map(name, 2))
    expected = {0: "background", 1: "benign", 2: "malignant"}
    assert load_id2label(out) == expected
    assert json.loads((out / "id2label.json").read_text()) == {"0": "background", "1": "benign", "2": "malignant"}
    assert card_metadata(out)["id2label"] == {"0": "background", "1": "benign", "2": "malignant"}
    train, id2label = load_gms_dataset(out, split="train", cache_dir=tmp_path / "cache", return_id2label=True)
    assert id2label == expected and len(train) == len(splits["train"])


def test_index_masks_without_labels_are_inferred_as_class_k(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:6], lambda m: m, num_classes=3)
    out = convert_folder(images, masks, tmp_path / "out", progress=False)
    assert load_id2label(out) == {0: "background", 1: "class_1", 2: "class_2", 3: "class_3"}
    assert "class-index masks 0..3" in provenance(out)["mask_encoding"]


def test_rgb_masks_with_palette_file_become_class_indices(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:10], colour_encode, num_classes=2)
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps(PALETTE))
    out = convert_folder(images, masks, tmp_path / "out", palette=palette, progress=False)
    stored, _ = masks_by_name(out, tmp_path)
    for name in NAMES[:10]:
        np.testing.assert_array_equal(stored[name], class_map(name, 2))
    assert load_id2label(out) == {0: "background", 1: "benign", 2: "malignant"}
    assert "RGB colour masks with a palette" in provenance(out)["mask_encoding"]


# ---------------------------------------------------------------- splits
def test_seeded_split_by_fractions_is_recorded_and_deterministic(tmp_path):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m * 255)
    first = convert_folder(images, masks, tmp_path / "a", seed=7, progress=False)
    again = convert_folder(images, masks, tmp_path / "b", seed=7, progress=False)
    other = convert_folder(images, masks, tmp_path / "c", seed=8, progress=False)
    split_a = json.loads((first / "splits.json").read_text())["splits"]
    assert {s: len(n) for s, n in split_a.items()} == {"train": 14, "validation": 2, "test": 4}
    assert sorted(sum(split_a.values(), [])) == sorted(NAMES)
    assert split_a == json.loads((again / "splits.json").read_text())["splits"]
    assert split_a != json.loads((other / "splits.json").read_text())["splits"]
    record = provenance(first)
    assert record["split_method"] == "fractions" and record["seed"] == 7
    assert record["test_fraction"] == 0.2 and record["validation_fraction"] == 0.1
    assert "Seeded split of all pairs (seed 7)" in (first / "README.md").read_text()


def test_split_list_is_followed_exactly_with_a_seeded_validation(tmp_path):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m * 255)
    split = tmp_path / "my_split.json"
    split.write_text(json.dumps({"train": NAMES[:15], "test": NAMES[15:19]}))  # NAMES[19] left out
    out = convert_folder(images, masks, tmp_path / "out", splits=split, seed=3, progress=False)
    recorded = json.loads((out / "splits.json").read_text())
    assert recorded["splits"]["test"] == NAMES[15:19]
    assert sorted(recorded["splits"]["train"] + recorded["splits"]["validation"]) == sorted(NAMES[:15])
    assert len(recorded["splits"]["validation"]) == 2
    assert recorded["provenance"]["split_method"] == "list" and recorded["provenance"]["split_source"] == "my_split.json"
    assert recorded["provenance"]["seed"] == 3 and len(recorded["provenance"]["split_sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "exactly the given train list" in card and "paper" not in card.split("## Provenance")[1].split("##")[0]


def test_split_list_naming_a_missing_pair_is_an_error(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:5], lambda m: m * 255)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": NAMES[:4] + ["case9/nope"], "test": NAMES[4:5]}))
    with pytest.raises(RawDatasetError, match=r"missing pair \(1\): case9/nope"):
        convert_folder(images, masks, tmp_path / "out", splits=split, progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- errors
def test_unpaired_and_size_mismatch_are_one_error_listing_first_20_and_totals(tmp_path):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m * 255)
    for i in range(25):  # images without masks
        du.save_image(du.tiny_image(f"x{i}", size=SIZE), images / "extra" / f"lonely_{i:02d}.png")
    Image.new("L", SIZE).save(masks / "orphan_mask.png")  # a mask without image
    Image.new("L", (5, 5)).save(masks / "case0" / "scan_00.png")  # replaces the mask with a wrong size
    with pytest.raises(RawDatasetError) as info:
        convert_folder(images, masks, tmp_path / "out", progress=False)
    message = str(info.value)
    assert "unpaired image (25): extra/lonely_00.png" in message and "(first 20 of 25)" in message
    assert "extra/lonely_19.png" in message and "extra/lonely_20.png" not in message
    assert "unpaired mask (1): orphan_mask.png" in message
    assert "size mismatch (1): case0/scan_00 (image 12x10, mask 5x5)" in message
    assert set(info.value.problems) == {"unpaired image", "unpaired mask", "size mismatch"}
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_value_outside_declared_classes_names_the_file_and_values(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:6], lambda m: m, num_classes=2)
    bad = class_map(NAMES[3], 2)
    bad[0, 0] = 5
    Image.fromarray(bad).save(masks / f"{NAMES[3]}.png")
    with pytest.raises(RawDatasetError, match=r"declared set \(class indices 0\.\.2, 2 labels given\) \(1\): case0/scan_03 \(values \{0, 1, 2, 5\}, outside: \{5\}\)"):
        convert_folder(images, masks, tmp_path / "out", labels="a,b", progress=False)
    assert not (tmp_path / "out").exists()


def test_grey_values_that_are_neither_binary_nor_indices_are_an_error(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:4], lambda m: m * 255)
    Image.fromarray((class_map(NAMES[1], 1) * 128).astype(np.uint8)).save(masks / f"{NAMES[1]}.png")
    with pytest.raises(RawDatasetError, match=r"binary \{0, 255\}, as most masks are.*scan_01 \(values \{0, 128\}") as info:
        convert_folder(images, masks, tmp_path / "out", progress=False)
    assert "scan_00" not in str(info.value)  # only the bad mask is named, not the good ones


def test_off_palette_colour_and_colour_without_palette_are_errors(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:4], colour_encode, num_classes=2)
    with pytest.raises(RawDatasetError, match="colour mask .*without --palette"):
        convert_folder(images, masks, tmp_path / "out", progress=False)
    smudged = colour_encode(class_map(NAMES[2], 2))
    smudged[0, 0] = [250, 3, 0]
    Image.fromarray(smudged).save(masks / f"{NAMES[2]}.png")
    with pytest.raises(RawDatasetError, match=r"case0/scan_02 \(values .*outside: \{\[250, 3, 0\]\}"):
        convert_folder(images, masks, tmp_path / "out", palette=PALETTE, progress=False)


def test_ambiguous_suffix_pairs_and_argument_errors(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:3], lambda m: m * 255, suffix="_mask")
    Image.fromarray(class_map(NAMES[0], 1) * 255).save(masks / f"{NAMES[0]}.png")  # a second candidate
    with pytest.raises(RawDatasetError, match=r"image matching several masks \(1\): case0/scan_00"):
        convert_folder(images, masks, tmp_path / "out", mask_suffix="_mask", progress=False)
    with pytest.raises(ValueError, match="same folder"):
        convert_folder(images, images, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="either --labels or --palette"):
        convert_folder(images, masks, tmp_path / "out", labels="a", palette=PALETTE, progress=False)
    with pytest.raises(FileNotFoundError, match="--masks folder"):
        convert_folder(images, tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_masks_beside_images_told_apart_by_suffix(tmp_path):
    for name in NAMES[:6]:
        du.save_image(du.tiny_image(name, size=SIZE), tmp_path / "data" / f"{name}.png")
        Image.fromarray(class_map(name, 1) * 255).save(tmp_path / "data" / f"{name}_seg.png")
    out = convert_folder(tmp_path / "data", tmp_path / "data", tmp_path / "out", mask_suffix="_seg", progress=False)
    stored, _ = masks_by_name(out, tmp_path)
    assert sorted(stored) == sorted(NAMES[:6])


# ---------------------------------------------------------------- command line and Hub
def test_cli_folder_records_command_and_reports_errors(tmp_path, caplog):
    images, masks = make_folder(tmp_path, NAMES, lambda m: m, num_classes=2, suffix="_seg")
    args = ["folder", "--images", str(images), "--masks", str(masks), "--mask_suffix", "_seg",
            "--labels", "benign,malignant", "--seed", "11"]
    assert cli(args + ["--output_dir", str(tmp_path / "out")]) == 0
    command = provenance(tmp_path / "out")["command"]
    assert command.startswith("python -m gms_hub.data.prepare folder --images IMAGES_DIR --masks MASKS_DIR")
    assert "--labels benign,malignant" in command and "--seed 11" in command and str(tmp_path) not in command
    assert cli(args[:-2] + ["--labels", "benign", "--output_dir", str(tmp_path / "out2")]) == 1
    assert "outside" in caplog.text and not (tmp_path / "out2").exists()


def test_pushed_multiclass_folder_gives_id2label_from_the_hub(tmp_path):
    images, masks = make_folder(tmp_path, NAMES[:8], lambda m: m, num_classes=2)
    server = HubServer(tmp_path / "hub").start()
    try:
        env = hub_env(server.url, tmp_path / "hf_home")
        run_python(
            "from gms_hub.data.prepare import cli\n"
            f"raise SystemExit(cli(['folder', '--images', {str(images)!r}, '--masks', {str(masks)!r}, "
            f"'--output_dir', {str(tmp_path / 'out')!r}, '--labels', 'benign,malignant', "
            "'--push_to_hub', '--hub_dataset_id', 'gms-test/my-data']))",
            env,
        )
        remote = run_python(
            "import json, numpy as np\nfrom gms_hub.data import load_gms_dataset\n"
            "ds, id2label = load_gms_dataset('gms-test/my-data', split='train', return_id2label=True)\n"
            "print(json.dumps({'id2label': id2label, 'values': sorted(np.unique(np.asarray(ds[0]['mask'])).tolist())}))",
            env,
        )
        assert server.unhandled == [], server.unhandled
    finally:
        server.stop()
    result = json.loads(remote.stdout.strip().splitlines()[-1])
    assert result["id2label"] == {"0": "background", "1": "benign", "2": "malignant"}  # JSON of {int: str}
    assert set(result["values"]) <= {0, 1, 2} and max(result["values"]) > 0
