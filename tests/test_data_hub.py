"""Hub-style dataset folders and the Hub round trip (gms_hub/data/hub.py, loading.py, prepare.py --push_to_hub)."""

import hashlib
import inspect
import json

import numpy as np
import pytest
import yaml
from PIL import Image

import _data_utils as du

try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # tests/ is not a package
    from hub_server import HubServer, hub_env, run_python


def _tiny_dataset_dict(n=(5, 2, 3)):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    splits = {}
    for split, count in zip(("train", "validation", "test"), n):
        names = [f"{split}_{i}" for i in range(count)]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [du.tiny_image(x) for x in names],
             "mask": [Image.fromarray(du.tiny_mask(x).astype(np.uint8) * 255) for x in names],
             "name": names},
            features=features,
        )
    return datasets.DatasetDict(splits)


CARD = {"pretty_name": "Tiny", "license": "cc0-1.0", "description": "Tiny test data.", "citation": "@misc{tiny}"}


def test_write_dataset_folder_has_hub_layout_and_card_metadata(tmp_path):
    from gms_hub.data import write_dataset_folder

    out = write_dataset_folder(_tiny_dataset_dict(), tmp_path / "tiny", card=CARD, provenance={"seed": 9})
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet",
    ]
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "cc0-1.0" and meta["task_categories"] == ["image-segmentation"]
    assert meta["configs"][0]["data_files"] == [
        {"split": s, "path": f"data/{s}-*"} for s in ("train", "validation", "test")
    ]
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == {"train": 5, "validation": 2, "test": 3}
    assert [f["name"] for f in meta["dataset_info"]["features"]] == ["image", "mask", "name"]
    assert "@misc{tiny}" in text and "huo2025gms" in text


def test_folder_reads_with_plain_load_dataset_with_image_features(tmp_path):
    import datasets

    from gms_hub.data import write_dataset_folder

    out = write_dataset_folder(_tiny_dataset_dict(), tmp_path / "tiny", card=CARD)
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation", "test"}
    assert isinstance(loaded["test"].features["mask"], datasets.Image)
    row = loaded["test"][1]
    np.testing.assert_array_equal(np.asarray(row["mask"]) == 255, du.tiny_mask("test_1"))


def test_empty_split_is_left_out(tmp_path):
    from gms_hub.data import load_gms_dataset, write_dataset_folder

    out = write_dataset_folder(_tiny_dataset_dict((3, 0, 2)), tmp_path / "tiny", card=CARD)
    assert sorted(p.name.split("-")[0] for p in (out / "data").iterdir()) == ["test", "train"]
    assert "split: validation" not in (out / "README.md").read_text()
    assert sorted(load_gms_dataset(out, cache_dir=tmp_path / "cache")) == ["test", "train"]


def test_write_dataset_folder_rejects_unknown_card_keys_and_missing_columns(tmp_path):
    """Error paths: a card key typo and a split without the required columns."""
    from gms_hub.data import write_dataset_folder

    with pytest.raises(ValueError, match="Unknown dataset card keys"):
        write_dataset_folder(_tiny_dataset_dict(), tmp_path / "a", card={**CARD, "licence": "x"})
    with pytest.raises(ValueError, match="missing"):
        write_dataset_folder(_tiny_dataset_dict().remove_columns("mask"), tmp_path / "b", card=CARD)
    assert not (tmp_path / "b").exists()


def test_load_gms_dataset_errors(tmp_path):
    """Error paths: a folder that is not a dataset, an unknown split."""
    from gms_hub.data import load_gms_dataset, write_dataset_folder

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a dataset folder"):
        load_gms_dataset(tmp_path / "empty", split="train")
    out = write_dataset_folder(_tiny_dataset_dict(), tmp_path / "tiny", card=CARD)
    with pytest.raises(ValueError, match=r"no split 'dev'; it has \['test', 'train', 'validation'\]"):
        load_gms_dataset(out, split="dev", cache_dir=tmp_path / "cache")


def rows_of(source, **kwargs):
    """One summary per row (split, name, label, modes, sizes, pixel hashes), for comparing two copies."""
    import hashlib

    from gms_hub.data import load_gms_dataset

    rows = []
    for split in ("train", "validation", "test"):
        ds = load_gms_dataset(source, split=split, **kwargs)
        assert [type(ds.features[c]).__name__ for c in ("image", "mask")] == ["Image", "Image"], ds.features
        for row in ds:
            rows.append([split, row["name"], row["label"], row["image"].mode, list(row["image"].size),
                         hashlib.sha256(row["image"].tobytes()).hexdigest(), row["mask"].mode,
                         hashlib.sha256(row["mask"].tobytes()).hexdigest()])
    return rows


def test_push_converted_folder_to_hub_then_load_in_fresh_process(tmp_path):
    """Round trip: prepare --push_to_hub to the local Hub server, then load_gms_dataset(id) gives the same rows."""
    split, subset = du.subset_split(tmp_path, "busi", 12, 4)
    raw = du.make_busi(tmp_path / "raw", subset["train"] + subset["test"], extra_lesions=subset["test"][:1])
    server = HubServer(tmp_path / "hub").start()
    try:
        env = hub_env(server.url, tmp_path / "hf_home")
        out = tmp_path / "gms-busi"
        run_python(
            "from gms_hub.data.prepare import cli\n"
            f"raise SystemExit(cli(['busi', '--raw_dir', {str(raw)!r}, '--output_dir', {str(out)!r}, "
            f"'--splits', {str(split)!r}, '--push_to_hub', '--hub_dataset_id', 'gms-test/gms-busi']))",
            env,
        )
        remote_code = f"import json\n{inspect.getsource(rows_of)}\nprint(json.dumps(rows_of('gms-test/gms-busi')))"
        remote = json.loads(run_python(remote_code, env).stdout.strip().splitlines()[-1])
        assert server.unhandled == [], server.unhandled
    finally:
        server.stop()
    local = rows_of(out, cache_dir=tmp_path / "local_cache")
    assert remote == local and len(remote) == 16
    assert {row[0] for row in remote} == {"train", "validation", "test"}
    assert all(row[3] == "RGB" and row[6] == "L" for row in remote)
    expected_first = hashlib.sha256(np.asarray(du.tiny_image(subset["train"][0])).tobytes()).hexdigest()
    assert remote[0][1] == subset["train"][0] and remote[0][5] == expected_first
