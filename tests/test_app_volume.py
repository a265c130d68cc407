"""The Space shows a volume: a NIfTI volume or a DICOM series (several files, or a zip) is segmented slice by slice;
the slice slider shows slice k without the model, the table gives mL per class, the download holds the NIfTI mask
(or the DICOM SEG of a series) and volumes.csv. Handlers are called in-process on a tiny random GMS."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from _app_utils import ROOT, imported_app, make_tiny_model

AFFINE = np.diag([0.7, 0.9, 2.5, 1.0])
VOXEL_MM3 = 0.7 * 0.9 * 2.5


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("volume_model") / "tiny-gms")


@pytest.fixture(scope="module")
def context_model_dir(tmp_path_factory):
    """The same tiny GMS, configured as a 2.5D model (`context_slices = 1` in its config.json)."""
    path = make_tiny_model(tmp_path_factory.mktemp("volume_model") / "tiny-gms-25d", seed=1)
    config = json.loads((path / "config.json").read_text())
    config["context_slices"] = 1
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def app_module(tiny_model_dir, tmp_path, monkeypatch):
    with imported_app(tiny_model_dir, tmp_path, monkeypatch) as module:
        yield module


@pytest.fixture(scope="module")
def nifti(tmp_path_factory):
    import nibabel as nib

    folder = tmp_path_factory.mktemp("volume_nifti")
    rng = np.random.default_rng(3)
    volume = rng.normal(100, 30, (36, 44, 5)).astype(np.float32)  # (x, y, slices)
    nib.save(nib.Nifti1Image(volume, AFFINE), folder / "head.nii.gz")
    return folder / "head.nii.gz"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A 3-slice DICOM series (shuffled names and instance numbers) carrying identifying patient values."""
    from _medical_utils import PATIENT
    from _series_utils import write_series

    folder = tmp_path_factory.mktemp("volume_series") / "study"
    datasets = write_series(folder, 3)
    for ds in datasets:
        on_disk = pydicom.dcmread(ds.filename)
        for key, value in PATIENT.items():
            setattr(on_disk, key, value)
        on_disk.save_as(ds.filename, enforce_file_format=True)
    return [Path(ds.filename) for ds in datasets]  # spatial order


def _library_labels(model, path):
    """Every slice's mask as the library segments it (with the model's context slices)."""
    from gms_hub.inference.volumes import segment_volume

    return segment_volume(model, path, threshold=0.5)  # (F, H, W) uint8


def _shown_text(outputs) -> str:
    """Every string the page is handed (table, labels, file names), flattened."""
    texts = []

    def walk(value):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(outputs)
    return "\n".join(texts)


def test_slider_shows_slice_k_without_the_model(app_module, nifti, monkeypatch):
    from gms_hub import GMS
    from gms_hub.io.reading import read_input
    from gms_hub.io.visualize import label_colors, overlay_labels
    from gms_hub.models.processing import to_float_rgb

    model = GMS.from_pretrained(app_module.registry.get("busi").source.location)
    expected = _library_labels(model, nifti)
    scan = read_input(nifti)
    result = app_module.segment_page(str(nifti), "busi", 0.5)
    views = app_module.show_page(result, 0.5, 0.45)
    assert views[10]["visible"] is True and views[10]["maximum"] == 5

    def no_model(*args, **kwargs):
        raise AssertionError("moving the slice slider must not run the model")

    monkeypatch.setattr(app_module.registry, "mask_probabilities", no_model)
    overlays = []
    for k in (1, 4):
        overlay, compare, mask_path, heatmap = app_module.show_slice(result, 0.5, 0.45, k + 1)
        np.testing.assert_array_equal(np.asarray(Image.open(mask_path)) == 255, expected[k].astype(bool))
        display = np.rint(to_float_rgb(scan.frames[k], value_range=scan.value_range) * 255).astype(np.uint8)
        direct = overlay_labels(display, expected[k].astype(bool), label_colors(1), 0.45)
        shown = np.asarray(Image.open(overlay).convert("RGB"))
        np.testing.assert_array_equal(shown, direct)
        np.testing.assert_array_equal(np.asarray(Image.open(compare[0]).convert("RGB")), display)
        assert Path(heatmap).is_file()
        overlays.append(shown)
    assert not np.array_equal(overlays[0], overlays[1])  # two slices, two pictures


def test_volume_table_and_download_give_the_hand_counted_ml(app_module, nifti):
    import nibabel as nib

    from gms_hub import GMS

    model = GMS.from_pretrained(app_module.registry.get("busi").source.location)
    expected = _library_labels(model, nifti)
    result = app_module.segment_page(str(nifti), "busi", 0.5)
    views = app_module.show_page(result, 0.5, 0.45)
    table, files = views[3], views[9]["value"]
    ml = int(expected.sum()) * VOXEL_MM3 / 1000.0
    assert f"{ml:.3f} mL" in table and "Slices" in table
    by_name = {Path(f).name: Path(f) for f in files}
    assert sorted(by_name) == ["head_mask.nii.gz", "volumes.csv"]
    mask = nib.load(by_name["head_mask.nii.gz"])
    np.testing.assert_allclose(mask.affine, AFFINE)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(mask.dataobj), -1, 0), expected)  # (x, y, F) -> (F, x, y)
    with open(by_name["volumes.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["input"] == "head.nii.gz" and rows[0]["slices"] == "5"
    assert float(rows[0]["volume_ml_foreground"]) == pytest.approx(ml, abs=1e-6)

    # A new threshold rewrites the numbers and the files from the saved probabilities.
    _, _, _, table_1, _, _, _, files_1, _ = app_module.update_page(result, 1.0, 0.45, 3)
    assert "0.000 mL" in table_1
    with open([f for f in files_1["value"] if f.endswith(".csv")][0], newline="") as handle:
        assert float(next(csv.DictReader(handle))["volume_ml_foreground"]) == 0.0


def _check_series_outputs(app_module, upload, series, model):
    import highdicom as hd

    from _medical_utils import PATIENT

    expected = _library_labels(model, _open_series(series))
    preview, selector = app_module.show_preview(upload)
    assert selector["visible"] is True and selector["maximum"] == 3
    result = app_module.segment_page(upload, "busi", 0.5)
    views = app_module.show_page(result, 0.5, 0.45)
    sliced = app_module.show_slice(result, 0.5, 0.45, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(sliced[2])) == 255, expected[2].astype(bool))
    files = {Path(f).name: Path(f) for f in views[9]["value"]}
    assert sorted(files) == ["series7_seg.dcm", "volumes.csv"]
    seg = hd.seg.segread(files["series7_seg.dcm"])
    referenced = {item.ReferencedSOPInstanceUID
                  for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series}
    voxel = float(np.prod([float(v) for v in pydicom.dcmread(series[0]).PixelSpacing])) * 5.0  # STEP_MM
    ml = int(expected.sum()) * voxel / 1000.0
    assert f"{ml:.3f} mL" in views[3]
    shown = _shown_text([preview, selector, views, sliced])
    for value in PATIENT.values():
        assert value not in shown and value.split("^")[0] not in shown


def _open_series(paths):
    from gms_hub.io.series import group_dicom_series, open_series

    found, _ = group_dicom_series(paths)
    return open_series(found[0].order())


def test_series_of_several_files_is_one_volume_with_a_seg(app_module, series):
    from gms_hub import GMS

    model = GMS.from_pretrained(app_module.registry.get("busi").source.location)
    shuffled = [str(p) for p in sorted(series, key=lambda p: p.name)]  # upload order is not spatial order
    _check_series_outputs(app_module, shuffled, series, model)


def test_zip_of_a_series_is_one_volume(app_module, series, tmp_path):
    from gms_hub import GMS

    model = GMS.from_pretrained(app_module.registry.get("busi").source.location)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in series:
            handle.write(path, arcname=f"study/{path.name}")
    _check_series_outputs(app_module, str(archive), series, model)


def test_several_files_that_are_not_one_series_are_refused(app_module, series, tmp_path):
    other = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(other)
    with pytest.raises(app_module.gr.Error, match="one DICOM series"):
        app_module.segment_page([str(series[0]), str(series[1]), str(other)], "busi", 0.5)
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(app_module.gr.Error, match="not a readable zip"):
        app_module.segment_page(str(bad_zip), "busi", 0.5)


def test_zip_members_cannot_escape_the_results_folder(tmp_path):
    from space.uploads import extract_series_zip

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../../outside.dcm", b"x")
        handle.writestr("/abs/also.dcm", b"y")
    written = extract_series_zip(archive, tmp_path / "out")
    assert all(p.parent == tmp_path / "out" for p in written)
    assert not (tmp_path / "outside.dcm").exists()


def test_uncertainty_on_a_volume_segments_the_chosen_slice(app_module, nifti):
    result = app_module.segment_page(str(nifti), "busi", 0.5, frame=3, num_samples=1)
    assert not result.get("volume") and result["frame"] == 2 and result["uncertainty"] is not None
    views = app_module.show_page(result, 0.5, 0.45)
    assert views[10]["visible"] is False and views[9]["visible"] is False
    assert "3 of 5" in views[3]


def test_two_d_image_keeps_the_single_image_views(app_module):
    result = app_module.segment_page([str(ROOT / "examples" / "ultrasound.png")], "busi", 0.5)
    views = app_module.show_page(result, 0.5, 0.45)
    assert "Segmented area" in views[3] and views[10]["visible"] is False
    assert re.search(r"_mask\.png$", views[2])


def test_context_model_gets_its_neighbours_in_the_space(context_model_dir, nifti, tmp_path, monkeypatch):
    from gms_hub import GMS

    with imported_app(context_model_dir, tmp_path, monkeypatch) as app_module:
        model = GMS.from_pretrained(context_model_dir)
        assert model.context_slices == 1
        expected = _library_labels(model, nifti)  # slices k-1, k, k+1 as channels
        result = app_module.segment_page(str(nifti), "busi", 0.5)
        for k in range(5):
            mask_path = app_module.show_slice(result, 0.5, 0.45, k + 1)[2]
            np.testing.assert_array_equal(np.asarray(Image.open(mask_path)) == 255, expected[k].astype(bool))
        shutil.rmtree(app_module.OUTPUT_DIR, ignore_errors=True)


def test_series_box_and_single_box_replace_each_other(app_module, series, nifti):
    """The page's two upload boxes: files dropped into the series box empty the single-file box and are what
    Segment segments; a file in the single box empties the series box and wins."""
    shuffled = [str(p) for p in sorted(series, key=lambda p: p.name)]
    image_box, preview, selector = app_module.take_series(shuffled)
    assert image_box["value"] is None and selector["visible"] is True and selector["maximum"] == 3
    assert Path(preview).is_file()
    assert app_module.volume_views.page_upload(None, shuffled) == shuffled
    result = app_module.segment_upload(None, shuffled, "busi", 0.5)
    assert result["volume"] is True and result["num_frames"] == 3 and result["series"] is True

    # The single box's own upload (or an example) replaces the series: the series box is emptied.
    preview, selector, series_box = app_module.show_upload(str(nifti), shuffled)
    assert series_box["value"] is None and selector["maximum"] == 5
    assert app_module.volume_views.page_upload(str(nifti), shuffled) == str(nifti)
    assert app_module.segment_upload(str(nifti), shuffled, "busi", 0.5)["num_frames"] == 5
    # The single box emptied by a series upload: the preview stays on the series, the series box is kept.
    preview, selector, series_box = app_module.show_upload(None, shuffled)
    assert selector["maximum"] == 3 and series_box == app_module.gr.skip()  # an update without a value
    assert Path(app_module.show_upload_frame(None, shuffled, 2)).is_file()
    # Both boxes empty: no preview.
    preview, selector, _ = app_module.show_upload(None, None)
    assert preview is None and selector["visible"] is False


def _obj_vertices(path) -> np.ndarray:
    return _obj_vertices_text(Path(path).read_text())


def test_surface_bounds_are_the_mask_extent_times_the_voxel_size(tmp_path):
    from space.surface import write_surface_obj

    labels = np.zeros((6, 20, 24), np.uint8)  # (slices, rows, columns)
    labels[1:4, 5:12, 3:20] = 1  # a box: slices 1..3, rows 5..11, columns 3..19
    labels[4, 15:18, 6:9] = 2  # a second class, one slice thick
    spacing = (2.5, 0.9, 0.7)
    path = write_surface_obj(labels, ["liver", "tumour"], tmp_path / "s.obj", spacing=spacing)
    text = path.read_text()
    assert text.count("\no ") == 2 and "o liver" in text and "o tumour" in text
    liver_text, tumour_text = text.split("o tumour")
    liver = _obj_vertices_text(liver_text)
    # The surface passes half a voxel outside the outermost voxel centres: (first - 0.5, last + 0.5) x spacing.
    # y is -row (up in the view is up in the slice).
    for axis, (first, last, size) in enumerate([(3, 19, 0.7), (5, 11, -0.9), (1, 3, 2.5)]):  # x, y, z
        ends = sorted([(first - 0.5) * size, (last + 0.5) * size])
        assert liver[:, axis].min() == pytest.approx(ends[0], abs=1e-4)
        assert liver[:, axis].max() == pytest.approx(ends[1], abs=1e-4)
    tumour = _obj_vertices_text(tumour_text)
    assert tumour[:, 2].max() - tumour[:, 2].min() == pytest.approx(1 * 2.5, abs=1e-4)  # one slice thick
    faces = [line.split()[1:] for line in text.splitlines() if line.startswith("f ")]
    assert max(int(i) for f in faces for i in f) == len(liver) + len(tumour)  # indices run on across objects
    assert write_surface_obj(np.zeros((3, 4, 4), np.uint8), ["liver"], tmp_path / "none.obj") is None


def _obj_vertices_text(text) -> np.ndarray:
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)  # (N, 3) x = column, y = -row, z = slice, mm


def test_volume_gets_a_surface_view_and_a_2d_image_does_not(app_module, nifti):
    result = app_module.segment_page(str(nifti), "busi", 0.5)
    views = app_module.show_page(result, 0.5, 0.45)
    labels = app_module.volume_views.volume_labels(result, 0.5)
    assert labels.any()  # the tiny model's mask of this scan is not empty, so there is a surface to check
    surface = views[11]
    assert surface["visible"] is True and surface["value"].endswith("head_surface.obj")
    vertices = _obj_vertices(surface["value"])
    filled = np.argwhere(labels)  # (N, 3) slice, row, column
    # x = column x 0.9 mm (NIfTI y axis), y = -row x 0.7 mm (NIfTI x axis), z = slice x 2.5 mm
    for axis, (column, size) in enumerate([(2, 0.9), (1, -0.7), (0, 2.5)]):
        ends = sorted([(filled[:, column].min() - 0.5) * size, (filled[:, column].max() + 0.5) * size])
        assert vertices[:, axis].min() == pytest.approx(ends[0], abs=1e-3)
        assert vertices[:, axis].max() == pytest.approx(ends[1], abs=1e-3)
    assert app_module.update_page(result, 1.0, 0.45, 3)[8]["visible"] == "hidden"  # nothing above 1.0: no surface

    two_d = app_module.segment_page(str(ROOT / "examples" / "ultrasound.png"), "busi", 0.5)
    assert app_module.show_page(two_d, 0.5, 0.45)[11]["visible"] == "hidden"


def test_batch_gives_a_context_model_its_neighbouring_slices(context_model_dir, nifti, tmp_path, monkeypatch):
    """The Batch tab segments a volume with a 2.5D model as the library does (slices k-1, k, k+1 as channels),
    not slice by slice without context."""
    import nibabel as nib

    from gms_hub import GMS
    from gms_hub.io.reading import read_input

    model = GMS.from_pretrained(context_model_dir)
    expected = _library_labels(model, nifti)  # with context
    scan = read_input(nifti)
    without = np.stack([np.asarray(m, np.uint8) for m in model.segment(list(scan.frames), value_range=scan.value_range)])
    assert not np.array_equal(expected, without)  # the test can tell context from no context on this scan
    with imported_app(context_model_dir, tmp_path, monkeypatch) as app_module:
        zip_path, csv_path, table = app_module.segment_batch([str(nifti)], "busi", 0.5)
        assert [row[-1] for row in table] == [""] * 5  # no error
        with zipfile.ZipFile(zip_path) as archive:
            archive.extract("head_mask.nii.gz", tmp_path)
        written = np.moveaxis(np.asarray(nib.load(tmp_path / "head_mask.nii.gz").dataobj), -1, 0)  # (F, x, y)
        np.testing.assert_array_equal(written, expected)
