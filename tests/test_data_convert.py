"""Benchmark converters on miniature raw layouts (gms_hub/data/{common,convert,busi,glas,ham10000,...}.py).

Each miniature has the real download's folder structure and file names (names from the paper's split
lists in ../shared/splits) with tiny 10x8 images.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import _data_utils as du
from gms_hub.data.bus import BUSConverter
from gms_hub.data.busi import BUSIConverter
from gms_hub.data.common import RawDatasetError, find_examples, scan_raw_dir
from gms_hub.data.convert import convert_benchmark
from gms_hub.data.glas import GlaSConverter
from gms_hub.data.ham10000 import HAM10000Converter
from gms_hub.data.kvasir_instrument import KvasirInstrumentConverter
from gms_hub.data.prepare import cli


def _convert(converter, raw, out, splits, **kwargs):
    return convert_benchmark(converter, raw, out, splits=splits, progress=False, **kwargs)


def _mask_array(image):
    return np.asarray(image)


# ---------------------------------------------------------------- BUSI, full paper split (real pickle)
@pytest.fixture(scope="module")
def busi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("busi")
    names = du.split_names("busi")
    extra = names["train"][:3] + names["test"][:2]  # images with a second lesion mask (_mask_1)
    raw = du.make_busi(tmp / "raw", names["train"] + names["test"], extra_lesions=extra)
    out = _convert(BUSIConverter(), raw, tmp / "out", du.split_pickle("busi"))
    splits = {split: du.load_split(out, split, tmp / "cache") for split in ("train", "validation", "test")}
    return {"names": names, "extra": extra, "out": out, "splits": splits, "raw": raw}


def test_busi_counts_names_and_split_membership(busi):
    names, splits = busi["names"], busi["splits"]
    assert {s: len(ds) for s, ds in splits.items()} == {"train": 465, "validation": 52, "test": 130}
    assert list(splits["test"]["name"]) == names["test"]  # exactly the paper's test list, in order
    carved = list(splits["train"]["name"]) + list(splits["validation"]["name"])
    assert sorted(carved) == sorted(names["train"]) and len(set(carved)) == 517
    assert not any(name.startswith("normal") for ds in splits.values() for name in list(ds["name"]))


def test_busi_schema_label_column_and_binary_masks(busi):
    ds = busi["splits"]["test"]
    assert ds.column_names == ["image", "mask", "name", "label"]
    row = ds[0]
    assert row["name"] == "benign_3" and row["label"] == "benign"
    assert set(list(ds["label"])) == {"benign", "malignant"}
    assert all(label == name.rsplit("_", 1)[0] for label, name in zip(list(ds["label"]), list(ds["name"])))
    assert row["image"].mode == "RGB" and row["mask"].mode == "L" and row["image"].size == du.SIZE
    values = np.unique(np.concatenate([_mask_array(m).ravel() for m in ds["mask"]]))
    assert values.tolist() == [0, 255]


def test_busi_extra_lesion_masks_are_merged_by_union(busi):
    single = busi["names"]["train"][5]  # one lesion only
    assert single not in busi["extra"]
    rows = {}
    for ds in busi["splits"].values():
        rows.update({row["name"]: row for row in ds if row["name"] in busi["extra"] or row["name"] == single})
    for name in busi["extra"]:
        expected = du.tiny_mask(name, 0) | du.tiny_mask(name, 1)
        assert (expected != du.tiny_mask(name, 0)).any(), "the test needs a second lesion that adds pixels"
        np.testing.assert_array_equal(_mask_array(rows[name]["mask"]) == 255, expected)
    np.testing.assert_array_equal(_mask_array(rows[single]["mask"]) == 255, du.tiny_mask(single))


def test_busi_images_keep_their_pixels(busi):
    row = busi["splits"]["train"][0]
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(du.tiny_image(row["name"])))


def test_busi_card_and_provenance_record_seed_and_validation(busi):
    out = busi["out"]
    card = (out / "README.md").read_text()
    assert "license: cc0-1.0" in card and "image-segmentation" in card
    assert "num_examples: 52" in card and "seed 2333" in card and "stratified by `label`" in card
    assert "Al-Dhabyani" in card and "huo2025gms" in card
    record = json.loads((out / "splits.json").read_text())
    assert record["provenance"]["seed"] == 2333 and record["provenance"]["split_source"] == "busi_train_test_names.pkl"
    assert record["splits"]["validation"] == list(busi["splits"]["validation"]["name"])
    for name in record["splits"]["validation"]:
        assert name in card


def test_validation_carve_out_is_deterministic_and_seeded(busi, tmp_path):
    """Same seed -> same validation names (reconverted); another seed -> other names."""
    names = busi["names"]
    subset = tmp_path / "split.json"
    subset.write_text(json.dumps(names))
    again = _convert(BUSIConverter(), busi["raw"], tmp_path / "again", subset)
    other = _convert(BUSIConverter(), busi["raw"], tmp_path / "other", subset, seed=1)
    first = json.loads((busi["out"] / "splits.json").read_text())["splits"]["validation"]
    assert json.loads((again / "splits.json").read_text())["splits"]["validation"] == first
    assert json.loads((other / "splits.json").read_text())["splits"]["validation"] != first
    assert (again / "data" / "validation-00000-of-00001.parquet").read_bytes() == (
        busi["out"] / "data" / "validation-00000-of-00001.parquet"
    ).read_bytes()


# ---------------------------------------------------------------- the other benchmarks, real pickles
def test_glas_full_split_binarised_instance_masks_subset_and_grade(tmp_path):
    names = du.split_names("glas")
    raw = du.make_glas(tmp_path / "raw", names["train"] + names["test"])
    out = _convert(GlaSConverter(), raw, tmp_path / "out", du.split_pickle("glas"))
    test = du.load_split(out, "test", tmp_path / "cache")
    train = du.load_split(out, "train", tmp_path / "cache")
    assert len(test) == 80 and len(train) + len(du.load_split(out, "validation", tmp_path / "cache")) == 85
    assert list(test["name"]) == names["test"]
    assert test.column_names == ["image", "mask", "name", "subset", "grade"]
    assert sorted(set(list(test["subset"]))) == ["testA", "testB"] and set(list(train["subset"])) == {"train"}
    row = du.rows_by_name(test)["testA_3"]
    assert row["subset"] == "testA" and row["grade"] in ("benign", "malignant")
    np.testing.assert_array_equal(np.asarray(row["mask"]), np.where(du.glas_labels("testA_3") > 0, 255, 0))
    # BMP images are re-encoded losslessly as PNG.
    assert row["image"].format == "PNG"
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(du.tiny_image("testA_3")))


def test_kvasir_full_split_keeps_jpeg_bytes(tmp_path):
    names = du.split_names("kvasir-instrument")
    raw = du.make_kvasir(tmp_path / "raw", names["train"] + names["test"])
    out = _convert(KvasirInstrumentConverter(), raw, tmp_path / "out", du.split_pickle("kvasir-instrument"))
    import datasets

    test = du.load_split(out, "test", tmp_path / "cache").cast_column("image", datasets.Image(decode=False))
    assert len(test) == 118 and list(test["name"]) == names["test"]
    first = test[0]
    raw_bytes = (raw / "kvasir-instrument" / "images" / f"{first['name']}.jpg").read_bytes()
    assert first["image"]["bytes"] == raw_bytes  # no lossy re-encoding


def test_bus_full_split_grayscale(tmp_path):
    names = du.split_names("bus")
    raw = du.make_bus(tmp_path / "raw", names["train"] + names["test"])
    out = _convert(BUSConverter(), raw, tmp_path / "out", du.split_pickle("bus"))
    test = du.load_split(out, "test", tmp_path / "cache")
    assert len(test) == 31 and list(test["name"]) == names["test"] and test[0]["image"].mode == "L"
    assert test.column_names == ["image", "mask", "name"]


def test_ham10000_all_10015_split_names_are_found(tmp_path):
    """The real pickle's names match the raw file names (index only: 20,030 empty files, nothing decoded)."""
    names = du.split_names("ham10000")
    all_names = names["train"] + names["test"]
    raw = du.make_ham(tmp_path / "raw", all_names, metadata=False, empty_files=True)
    converter = HAM10000Converter()
    found = find_examples(scan_raw_dir(raw, converter), all_names, raw, converter, "ham10000.pkl")
    assert len(found) == 10015
    image, masks = found["ISIC_0024306"]
    assert image.name == "ISIC_0024306.jpg" and [m.name for m in masks] == ["ISIC_0024306_segmentation.png"]


def test_ham10000_subset_with_metadata_and_workers(tmp_path):
    """Streaming conversion with 2 worker processes writes the same bytes as 1 process."""
    split, subset = du.subset_split(tmp_path, "ham10000", 30, 10)
    raw = du.make_ham(tmp_path / "raw", subset["train"] + subset["test"])
    one = _convert(HAM10000Converter(), raw, tmp_path / "one", split, num_proc=1)
    two = _convert(HAM10000Converter(), raw, tmp_path / "two", split, num_proc=2)
    for part in ("train-00000-of-00001", "validation-00000-of-00001", "test-00000-of-00001"):
        assert (one / "data" / f"{part}.parquet").read_bytes() == (two / "data" / f"{part}.parquet").read_bytes()
    test = du.load_split(two, "test", tmp_path / "cache")
    assert test.column_names == ["image", "mask", "name", "lesion_id", "dx"]
    assert list(test["name"]) == subset["test"] and set(list(test["dx"])) <= {"nv", "mel", "bkl"}


def test_ham10000_metadata_from_dataverse_tab_file(tmp_path):
    """Harvard Dataverse serves HAM10000_metadata as a tab-separated ``.tab`` file by default."""
    split, subset = du.subset_split(tmp_path, "ham10000", 6, 2)
    raw = du.make_ham(tmp_path / "raw", subset["train"] + subset["test"], metadata=False)
    rows = ['"lesion_id"\t"image_id"\t"dx"'] + [f'"HAM_{i}"\t"{n}"\t"mel"' for i, n in enumerate(subset["test"])]
    (raw / "HAM10000_metadata.tab").write_text("\n".join(rows) + "\n")
    out = _convert(HAM10000Converter(), raw, tmp_path / "out", split)
    test = du.load_split(out, "test", tmp_path / "cache")
    assert list(test["dx"]) == ["mel", "mel"] and list(test["lesion_id"]) == ["HAM_0", "HAM_1"]
    assert list(du.load_split(out, "train", tmp_path / "cache")["dx"]) == [None] * 5  # absent rows: None, warned


def test_shards_roll_over_at_max_shard_size(tmp_path):
    split, subset = du.subset_split(tmp_path, "ham10000", 250, 10)
    raw = du.make_ham(tmp_path / "raw", subset["train"] + subset["test"], metadata=False)
    out = _convert(HAM10000Converter(), raw, tmp_path / "out", split, max_shard_size=20_000)
    shards = sorted(p.name for p in (out / "data").glob("train-*.parquet"))
    assert len(shards) >= 2 and all(p.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
    assert len(du.load_split(out, "train", tmp_path / "cache")) == 225


# ---------------------------------------------------------------- layout variants
def test_layout_variants_upper_case_jpeg_and_nested_folders(tmp_path):
    """``.JPEG`` / ``.PNG`` extensions in a doubly nested download folder (as zips often extract)."""
    split, subset = du.subset_split(tmp_path, "kvasir-instrument", 9, 3)
    base = tmp_path / "raw" / "download" / "kvasir-instrument" / "kvasir-instrument"
    for i, name in enumerate(subset["train"] + subset["test"]):
        du.save_image(du.tiny_image(name), base / "images" / f"{name}.{('JPEG', 'jpeg', 'JPG')[i % 3]}")
        du.save_mask(du.tiny_mask(name), base / "masks" / f"{name}.PNG")
    (tmp_path / "raw" / "__MACOSX").mkdir()
    du.save_image(du.tiny_image("junk"), tmp_path / "raw" / "__MACOSX" / f"{subset['test'][0]}.jpg")
    out = _convert(KvasirInstrumentConverter(), tmp_path / "raw", tmp_path / "out", split)
    assert list(du.load_split(out, "test", tmp_path / "cache")["name"]) == subset["test"]


def test_reference_preprocessed_layout_images_and_masks_folders(tmp_path):
    """The GMS repository's preprocessed ``images/benign_1.png`` + ``masks/benign_1.png`` layout."""
    split, subset = du.subset_split(tmp_path, "busi", 10, 4)
    for name in subset["train"] + subset["test"]:
        du.save_image(du.tiny_image(name), tmp_path / "raw" / "busi" / "images" / f"{name}.png")
        du.save_mask(du.tiny_mask(name), tmp_path / "raw" / "busi" / "masks" / f"{name}.png")
    out = _convert(BUSIConverter(), tmp_path / "raw", tmp_path / "out", split)
    test = du.load_split(out, "test", tmp_path / "cache")
    assert list(test["name"]) == subset["test"] and list(test["label"]) == [n.rsplit("_", 1)[0] for n in subset["test"]]


def test_mask_with_values_zero_one_is_read_as_labels(tmp_path):
    split, subset = du.subset_split(tmp_path, "bus", 4, 2)
    raw = du.make_bus(tmp_path / "raw", subset["train"] + subset["test"])
    name = subset["test"][0]
    Image.fromarray(du.tiny_mask(name).astype(np.uint8)).save(raw / "BUS_Dataset_B" / "GT" / f"{name}.png")
    out = _convert(BUSConverter(), raw, tmp_path / "out", split)
    row = du.rows_by_name(du.load_split(out, "test", tmp_path / "cache"))[name]
    np.testing.assert_array_equal(np.asarray(row["mask"]) == 255, du.tiny_mask(name))


# ---------------------------------------------------------------- error paths
@pytest.fixture
def glas_subset(tmp_path):
    split, subset = du.subset_split(tmp_path, "glas", 30, 10)
    raw = du.make_glas(tmp_path / "raw", subset["train"] + subset["test"])
    return split, subset, raw / "Warwick QU Dataset (Released 2016_07_08)"


def _expect_error(converter, raw_root, tmp_path, split, kind):
    out = tmp_path / "out"
    with pytest.raises(RawDatasetError) as info:
        _convert(converter, raw_root, out, split)
    assert not out.exists(), "a failed conversion must not leave an output folder"
    assert not list(tmp_path.glob(".out.partial-*"))
    assert kind in info.value.problems and info.value.problems[kind]
    return info.value


def test_error_missing_image_lists_first_20_and_total(tmp_path, glas_subset):
    """Error path: missing image (25 images deleted: message shows 20 names and the total)."""
    split, subset, base = glas_subset
    gone = subset["train"][:25]
    for name in gone:
        (base / f"{name}.bmp").unlink()
    err = _expect_error(GlaSConverter(), base.parent, tmp_path, split, "missing image")
    message = str(err)
    assert err.problems["missing image"] == gone
    assert "missing image (25)" in message and "(first 20 of 25)" in message
    assert ", ".join(gone[:20]) in message and gone[20] not in message
    assert "--raw_dir" in message and "train_N.bmp" in message


def test_error_missing_mask(tmp_path, glas_subset):
    """Error path: missing mask."""
    split, subset, base = glas_subset
    (base / f"{subset['test'][1]}_anno.bmp").unlink()
    err = _expect_error(GlaSConverter(), base.parent, tmp_path, split, "missing mask")
    assert err.problems["missing mask"] == [subset["test"][1]] and subset["test"][1] in str(err)


def test_error_duplicate_name_across_nested_copies(tmp_path, glas_subset):
    """Error path: duplicate name (the same image in two folders, with different extension case)."""
    split, subset, base = glas_subset
    name = subset["train"][0]
    copy = base.parent / "copy"
    copy.mkdir()
    shutil.copy(base / f"{name}.bmp", copy / f"{name}.BMP")
    err = _expect_error(GlaSConverter(), base.parent, tmp_path, split, "duplicate name")
    (entry,) = err.problems["duplicate name"]
    assert entry.startswith(name) and f"{name}.BMP" in entry and f"{name}.bmp" in entry


def test_error_unreadable_file(tmp_path, glas_subset):
    """Error path: unreadable file (a truncated image and a mask that is not an image at all)."""
    split, subset, base = glas_subset
    broken_image, broken_mask = subset["test"][0], subset["train"][4]
    data = (base / f"{broken_image}.bmp").read_bytes()
    (base / f"{broken_image}.bmp").write_bytes(data[: len(data) // 2])
    (base / f"{broken_mask}_anno.bmp").write_bytes(b"not an image")
    err = _expect_error(GlaSConverter(), base.parent, tmp_path, split, "unreadable file")
    listed = " ".join(err.problems["unreadable file"])
    assert f"{broken_image}.bmp" in listed and f"{broken_mask}_anno.bmp" in listed
    assert len(err.problems["unreadable file"]) == 2 and "Nothing was written" in str(err)


def test_error_size_mismatch(tmp_path, glas_subset):
    """Error path: image/mask size mismatch."""
    split, subset, base = glas_subset
    name = subset["train"][2]
    Image.fromarray(np.ones((5, 5), dtype=np.uint8)).save(base / f"{name}_anno.bmp")
    err = _expect_error(GlaSConverter(), base.parent, tmp_path, split, "size mismatch")
    (entry,) = err.problems["size mismatch"]
    assert entry.startswith(name) and "10x8" in entry and "5x5" in entry


def test_error_wrong_raw_dir(tmp_path):
    """Error path: the raw folder does not exist."""
    split, _ = du.subset_split(tmp_path, "busi", 2, 1)
    with pytest.raises(FileNotFoundError, match="Dataset_BUSI_with_GT"):
        _convert(BUSIConverter(), tmp_path / "nope", tmp_path / "out", split)


def test_error_existing_output_dir_needs_overwrite(tmp_path):
    """Error path: a non-empty output folder is not replaced without --overwrite, and --overwrite deletes only
    what an earlier prepare run wrote there (its record), never another file."""
    split, subset = du.subset_split(tmp_path, "bus", 4, 2)
    raw = du.make_bus(tmp_path / "raw", subset["train"] + subset["test"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _convert(BUSConverter(), raw, tmp_path / "out", split)
    with pytest.raises(FileExistsError, match="nothing in it is deleted"):
        _convert(BUSConverter(), raw, tmp_path / "out", split, overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
    _convert(BUSConverter(), raw, tmp_path / "fresh", split)
    (tmp_path / "fresh" / "notes.txt").write_text("mine")
    stale = tmp_path / "fresh" / "data" / "stale.parquet"
    stale.write_bytes(b"written by hand")
    _convert(BUSConverter(), raw, tmp_path / "fresh", split, overwrite=True)
    assert (tmp_path / "fresh" / "notes.txt").read_text() == "mine" and stale.read_bytes() == b"written by hand"
    assert (tmp_path / "fresh" / "README.md").exists()


# ---------------------------------------------------------------- command line
def test_cli_converts_and_reports_errors(tmp_path, caplog):
    split, subset = du.subset_split(tmp_path, "bus", 6, 2)
    raw = du.make_bus(tmp_path / "raw", subset["train"] + subset["test"])
    args = ["bus", "--raw_dir", str(raw), "--output_dir", str(tmp_path / "out"), "--splits", str(split)]
    assert cli(args + ["--seed", "5", "--validation_fraction", "0.25"]) == 0
    record = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert len(record["splits"]["validation"]) == 2 and record["provenance"]["seed"] == 5
    assert record["provenance"]["command"].startswith("python -m gms_hub.data.prepare bus --raw_dir RAW_DIR")
    (raw / "BUS_Dataset_B" / "GT" / f"{subset['train'][0]}.png").unlink()
    assert cli(args[:3] + ["--output_dir", str(tmp_path / "out2"), "--splits", str(split)]) == 1
    assert "missing mask (1)" in caplog.text
    with pytest.raises(SystemExit):
        cli(["bus", "--raw_dir", str(raw), "--output_dir", "x", "--push_to_hub"])  # no --hub_dataset_id


def test_cli_synthetic_writes_a_loadable_folder(tmp_path):
    out = tmp_path / "synthetic"
    assert cli(["synthetic", "--output_dir", str(out), "--num_train", "4", "--num_validation", "2",
                "--num_test", "3", "--seed", "3", "--image_size", "32"]) == 0
    test = du.load_split(out, "test", tmp_path / "cache")
    assert len(test) == 3 and "kind" in test.column_names and test[0]["image"].size == (32, 32)
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "--seed 3" in card and "## Generation" in card


def test_cli_synthetic_multiclass_writes_id2label(tmp_path):
    from gms_hub.data import load_id2label

    out = tmp_path / "synthetic"
    assert cli(["synthetic", "--output_dir", str(out), "--num_train", "3", "--num_validation", "1",
                "--num_test", "1", "--image_size", "32", "--num_classes", "3"]) == 0
    assert load_id2label(out) == {0: "background", 1: "dark_lesion", 2: "bright_nodule", 3: "ringed_cyst"}
    test = du.load_split(out, "test", tmp_path / "cache")
    assert set(np.unique(np.asarray(test[0]["mask"])).tolist()) == {0, 1, 2, 3}
    assert "--num_classes 3" in json.loads((out / "splits.json").read_text())["provenance"]["command"]


def test_busi_multiclass_has_the_binary_split_and_lesion_type_masks(tmp_path):
    from gms_hub.data import load_id2label

    names = du.split_names("busi")
    pick = lambda names, label, n: [x for x in names if x.startswith(label)][:n]  # noqa: E731
    subset = {key: pick(names[key], "benign", n) + pick(names[key], "malignant", n) for key, n in (("train", 8), ("test", 3))}
    split = tmp_path / "busi-mixed.json"
    split.write_text(json.dumps(subset))
    raw = du.make_busi(tmp_path / "raw", subset["train"] + subset["test"], extra_lesions=subset["test"][:1])
    binary = _convert(BUSIConverter(), raw, tmp_path / "binary", split)
    args = ["busi", "--multiclass", "--raw_dir", str(raw), "--output_dir", str(tmp_path / "mc"), "--splits", str(split)]
    assert cli(args) == 0
    multi = tmp_path / "mc"
    assert json.loads((multi / "splits.json").read_text())["splits"] == json.loads((binary / "splits.json").read_text())["splits"]
    assert load_id2label(multi) == {0: "background", 1: "benign", 2: "malignant"}
    assert load_id2label(binary) is None
    assert "--multiclass" in json.loads((multi / "splits.json").read_text())["provenance"]["command"]
    labels_seen = set()
    for split_name in ("train", "validation", "test"):
        b = du.rows_by_name(du.load_split(binary, split_name, tmp_path / "cache_b"))
        m = du.rows_by_name(du.load_split(multi, split_name, tmp_path / "cache_m"))
        assert sorted(b) == sorted(m)
        for name, row in m.items():
            index = {"benign": 1, "malignant": 2}[row["label"]]
            labels_seen.add(index)
            expected = (_mask_array(b[name]["mask"]) == 255).astype(np.uint8) * index
            np.testing.assert_array_equal(_mask_array(row["mask"]), expected)
    assert labels_seen == {1, 2}
    card = (multi / "README.md").read_text()
    assert "with lesion type" in card and "1 = `benign`" in card
