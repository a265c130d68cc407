"""Context slices (2.5D): neighbour stacking for datasets and streamed volumes, the config key, and a round trip."""

import importlib.util
import json
from pathlib import Path

import datasets
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from gms_hub.data.context import context_frames, context_input, neighbour_indices, with_context_slices
from gms_hub.inference.volumes import segment_volume
from gms_hub.io.medical import FrameSequence
from gms_hub.io.reading import read_input

ROOT = Path(__file__).resolve().parents[1]


def slices(num=4, size=8):
    """Grayscale slices whose every pixel holds the slice index times 10 (plus a ramp), so channels say which."""
    ramp = np.arange(size * size, dtype=np.float32).reshape(size, size) / (size * size * 100)
    return [np.float32(k / 10) + ramp for k in range(num)]


def test_neighbour_indices_repeat_the_end_slice():
    assert [neighbour_indices(k, 4, 1) for k in range(4)] == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert neighbour_indices(0, 1, 1) == [0, 0, 0]  # a single slice is its own neighbour
    assert neighbour_indices(2, 4, 0) == [2]


def test_context_frames_stack_k_minus_one_k_k_plus_one_and_read_in_batches():
    volume = slices(5)
    reads = []

    def read_batch(start, stop):
        reads.append((start, stop))
        return volume[start:stop]

    frames = context_frames(FrameSequence(5, read_batch), 1)
    batches = list(frames.batches(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    stacked = [frame for batch in batches for frame in batch]
    for k, frame in enumerate(stacked):
        assert frame.shape == (8, 8, 3)
        for channel, j in enumerate(neighbour_indices(k, 5, 1)):
            np.testing.assert_array_equal(frame[..., channel], volume[j])
    assert reads == [(0, 3), (1, 5), (3, 5)]  # one read per batch, neighbours included


def test_context_zero_leaves_frames_and_splits_untouched():
    frames = FrameSequence(2, lambda a, b: slices(2)[a:b])
    assert context_frames(frames, 0) is frames
    split = datasets.Dataset.from_dict({"name": ["a"], "image": [Image.new("L", (8, 8))], "mask": [Image.new("L", (8, 8))]},
                                       features=datasets.Features({"name": datasets.Value("string"),
                                                                   "image": datasets.Image(), "mask": datasets.Image()}))
    assert with_context_slices(split, 0) is split


@pytest.mark.parametrize("value", [2, -1, 0.5])
def test_context_slices_beyond_the_three_channels_is_an_error(value):
    with pytest.raises(ValueError, match="context_slices must be 0"):
        context_frames(FrameSequence(1, lambda a, b: slices(1)), value)


def slice_split(names, size=8):
    """A split whose image `<v>_slice<k>` is filled with the value 10 * k + (100 for volume b)."""
    def value(name):
        volume, k = name.rsplit("_slice", 1) if "_slice" in name else (name, "20")
        return 10 * int(k) + (100 if volume == "b" else 0)

    images = [Image.fromarray(np.full((size, size), value(n), np.uint8), mode="L") for n in names]
    masks = [Image.fromarray(np.zeros((size, size), np.uint8), mode="L") for _ in names]
    features = datasets.Features({"name": datasets.Value("string"), "image": datasets.Image(), "mask": datasets.Image()})
    return datasets.Dataset.from_dict({"name": list(names), "image": images, "mask": masks}, features=features)


def test_dataset_rows_get_their_neighbours_from_the_same_volume():
    names = ["a_slice2", "b_slice0", "a_slice0", "a_slice1", "b_slice1", "lone"]
    stacked = with_context_slices(slice_split(names), 1)
    channels = {row["name"]: tuple(int(v) for v in np.asarray(row["image"])[0, 0]) for row in stacked}
    assert channels == {
        "a_slice0": (0, 0, 10), "a_slice1": (0, 10, 20), "a_slice2": (10, 20, 20),
        "b_slice0": (100, 100, 110), "b_slice1": (100, 110, 110),
        "lone": (200, 200, 200),  # not a slice name: its own neighbours, as a 2D model sees it
    }
    assert stacked["name"] == names


def test_a_single_image_given_to_a_2_5d_model_falls_back_to_copies(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "us.png")
    opened = read_input(tmp_path / "us.png")
    assert context_input(opened, 1) is opened  # gray -> three copies in preprocessing, exactly the 2D input


def test_a_colour_volume_is_an_error_for_a_2_5d_model(tmp_path):
    from _medical_utils import write_dicom

    path = write_dicom(tmp_path / "video.dcm", np.zeros((3, 16, 16, 3), np.uint8), photometric="RGB",
                       NumberOfFrames=3)
    with pytest.raises(ValueError, match="colour volume"):
        context_input(read_input(path), 1)


# ---------------------------------------------------------------------------- the round trip
def load_script(name):
    spec = importlib.util.spec_from_file_location(f"gms_{name}_script", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ball_volume(num_slices=6, size=32, centre=(3, 16, 16), radius=10.0):
    z, y, x = np.mgrid[:num_slices, :size, :size]
    inside = ((z - centre[0]) * 4.0) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius ** 2
    noise = np.random.default_rng(int(centre[1])).normal(0, 12, inside.shape)
    image = np.clip(60 + 120 * inside + noise, 0, 255).astype(np.uint8)
    return image, inside


def write_volume_dataset(folder):
    from gms_hub.data import write_dataset_folder

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")})
    splits = {}
    for split, centres in {"train": [(3, 14, 14), (2, 18, 16)], "validation": [(3, 16, 18)], "test": [(2, 15, 15)]}.items():
        columns = {"image": [], "mask": [], "name": []}
        for v, centre in enumerate(centres):
            image, inside = ball_volume(centre=centre)
            for k in range(image.shape[0]):
                columns["image"].append(Image.fromarray(image[k], mode="L"))
                columns["mask"].append(Image.fromarray(inside[k].astype(np.uint8) * 255, mode="L"))
                columns["name"].append(f"{split}{v}_slice{k}")
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    card = {"pretty_name": "balls", "license": "apache-2.0", "task_categories": ["image-segmentation"], "tags": [],
            "source": "test", "citation": None, "description": "balls"}
    return write_dataset_folder(datasets.DatasetDict(splits), folder, card=card)


def test_2_5d_round_trip_train_save_load_predict_a_volume(tmp_path, tiny_vae_dir, monkeypatch):
    from gms_hub import load_model
    from gms_hub.inference import predict

    data = write_volume_dataset(tmp_path / "balls")
    train = load_script("train")
    out = tmp_path / "model"
    args = train.parse_args([
        "--dataset", str(data), "--output_dir", str(out), "--vae", str(tiny_vae_dir), "--vae_subfolder", "none",
        "--image_size", "32", "--base_channels", "16", "--channel_mult", "1", "1", "1", "1",
        "--context_slices", "1", "--max_train_steps", "3", "--train_batch_size", "4", "--report_to", "none",
        "--checkpointing_steps", "1000", "--include_vae",
    ])
    train.main(args)
    assert json.loads((out / "config.json").read_text())["context_slices"] == 1
    model = load_model(str(out))
    assert model.context_slices == 1

    # evaluate.py reads the context from the model: the test split is scored on stacked slices, no flag given.
    import gms_hub.data.context as context

    stacked_splits = []
    real = context.with_context_slices
    monkeypatch.setattr(context, "with_context_slices",
                        lambda split, k: stacked_splits.append((len(split), k)) or real(split, k))
    evaluate = load_script("evaluate")
    evaluate.main(evaluate.parse_args(["--model", str(out), "--dataset", str(data), "--split", "test",
                                       "--output_dir", str(tmp_path / "eval"), "--no_masks"]))
    assert stacked_splits == [(6, 1)]

    image, _ = ball_volume(centre=(3, 16, 16))  # (slices, rows, columns)
    nib.save(nib.Nifti1Image(np.transpose(image, (1, 2, 0)).astype(np.int16), np.eye(4)), tmp_path / "ball.nii.gz")
    seen = []
    segment = type(model).segment

    def recording_segment(self, images, **kwargs):
        seen.extend(np.asarray(i).shape for i in images)
        return segment(self, images, **kwargs)

    monkeypatch.setattr(type(model), "segment", recording_segment)
    monkeypatch.setattr(predict, "load_model", lambda spec, device: model)
    assert predict.main(["--input", str(tmp_path / "ball.nii.gz"), "--output_dir", str(tmp_path / "pred"),
                         "--batch_size", "4"]) == 0
    mask = nib.load(tmp_path / "pred" / "ball_mask.nii.gz")
    assert mask.shape == (32, 32, 6)
    assert seen == [(32, 32, 3)] * 6  # every slice went in with its two neighbours
    (row,) = list(__import__("csv").DictReader(open(tmp_path / "pred" / "volumes.csv")))
    assert row["slices"] == "6" and row["status"] == "ok"
    labels = segment_volume(model, tmp_path / "ball.nii.gz", batch_size=4)  # the library route, same stacking
    assert seen[6:] == [(32, 32, 3)] * 6
    np.testing.assert_array_equal(np.moveaxis(labels, 0, -1), np.asarray(mask.dataobj))


def test_a_split_where_no_row_finds_a_neighbour_is_warned_about(caplog):
    """K > 0 on rows that never find each other would silently train a 2D model: that is a warning."""
    with caplog.at_level("WARNING", logger="gms_hub.data.context"):
        with_context_slices(slice_split(["a_slice0", "b_slice3", "c_slice7"]), 1)
    assert any("none of the 3 rows" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="gms_hub.data.context"):
        with_context_slices(slice_split(["a_slice0", "a_slice1"]), 1)
    assert not any("none of the" in r.getMessage() for r in caplog.records)


def test_plane_slice_names_parse_as_slices_of_one_volume():
    from gms_hub.data.context import parse_slice_name

    assert parse_slice_name("mni152_axial_010") == ("mni152_axial", 10)
    assert parse_slice_name("mni152_coronal_7") == ("mni152_coronal", 7)
    assert parse_slice_name("case_slice3") == ("case", 3)
    assert parse_slice_name("scan_frame2") == ("scan", 2)
    assert parse_slice_name("us_001") is None and parse_slice_name("axial_3") is None
