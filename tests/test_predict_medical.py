"""The predict CLI on DICOM and NIfTI: output formats, frame/slice counts, geometry, DICOM SEG, mm², bad files."""

import os
import shutil

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from _medical_utils import PATIENT, write_dicom, write_enhanced_ct
from _predict_utils import brightness_labels, read_csv, run_predict as run, use_stand_in
from nibabel.testing import data_path
from PIL import Image
from pydicom.data import get_testdata_file

from gms_hub.inference import predict
from gms_hub.io.reading import list_input_files, read_input, read_medical_image

AFFINE = np.array([[0.0, -0.8, 0.0, 30.0], [1.2, 0.0, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def binary(tiny_gms, monkeypatch):
    monkeypatch.setattr(predict, "load_model", lambda spec, device: tiny_gms)
    return tiny_gms


@pytest.fixture
def multi(monkeypatch):
    return use_stand_in(monkeypatch, {0: "background", 1: "polyp", 2: "instrument"})


def test_reader_opens_every_format_and_lists_extensionless_dicom(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "us.png")
    nib.save(nib.Nifti1Image(np.zeros((9, 8, 4), np.int16), AFFINE), tmp_path / "ct.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("no preamble either")
    assert [p.name for p in list_input_files(tmp_path)] == ["IM0001", "ct.nii.gz", "us.png"]
    opened = {p.name: read_input(p) for p in list_input_files(tmp_path)}
    assert [(o.kind, o.num_frames, o.name, o.value_range) for o in opened.values()] == [
        ("dicom", 1, "IM0001", (0.0, 1.0)), ("nifti", 4, "ct", (0.0, 1.0)), ("image", 1, "us", None)]
    assert opened["ct.nii.gz"].spacing == pytest.approx((1.2, 0.8), abs=1e-6)  # column norms of the affine
    assert opened["us.png"].spacing is None and opened["us.png"].frames[0].size == (16, 16)


def test_reader_applies_the_image_size_limits_to_scan_frames(tmp_path):
    from gms_hub.io.medical import MedicalImageError

    volume = np.arange(16 * 12 * 3, dtype=np.int16).reshape(16, 12, 3)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "ok.nii.gz"))
    assert read_input(tmp_path / "ok.nii.gz").num_frames == 3  # 16 x 12 frames: accepted
    with pytest.raises(MedicalImageError, match=r"'ok.nii.gz' has 12x16 = 0.0 megapixel frames; the limit is 0.0001"):
        read_input(tmp_path / "ok.nii.gz", max_pixels=100)
    nib.save(nib.Nifti1Image(volume[:, :4], np.eye(4)), str(tmp_path / "thin.nii.gz"))
    with pytest.raises(MedicalImageError, match=r"'thin.nii.gz' has 4x16 pixel frames; each side must be at least 8"):
        read_input(tmp_path / "thin.nii.gz")
    write_dicom(tmp_path / "small.dcm", np.zeros((3, 6, 20), np.uint16))  # 3 frames of 6 x 20
    with pytest.raises(MedicalImageError, match=r"'small.dcm' has 20x6 pixel frames"):
        read_input(tmp_path / "small.dcm")


def test_dicom_gives_a_png_and_areas_in_mm2(binary, tmp_path):
    source = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--save_probabilities") == 0
    mask = np.asarray(Image.open(out / "CT_small.png"))
    assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
    expected = binary.segment(read_medical_image(source).frames[0], value_range=(0.0, 1.0))
    np.testing.assert_array_equal(mask > 0, expected)
    (row,) = read_csv(out / "predictions.csv")
    spacing = [float(v) for v in pydicom.dcmread(source).PixelSpacing]
    assert (row["frame"], row["mask_file"], row["status"]) == ("1", "CT_small.png", "ok")
    assert int(row["area_px"]) == int(expected.sum())
    assert float(row["area_mm2"]) == pytest.approx(expected.sum() * spacing[0] * spacing[1], rel=1e-6)


def test_multi_frame_dicom_gives_one_png_per_frame_counted_from_one(multi, tmp_path):
    frames = np.stack([np.full((16, 12), v, np.uint16) for v in (0, 600, 1000)])  # (3, 16, 12)
    frames[:, :4] = 1000  # a bright band: each frame spans its own min..max
    source = write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=3, PixelSpacing=[0.5, 0.25])
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--batch_size", "2") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["cine_frame1.png", "cine_frame2.png", "cine_frame3.png"]
    rows = read_csv(out / "predictions.csv")
    assert [(r["frame"], r["mask_file"]) for r in rows] == [(str(k), f"cine_frame{k}.png") for k in (1, 2, 3)]
    image = read_medical_image(source)
    for k, row in enumerate(rows):
        expected = brightness_labels(image.frames[k], (0.0, 1.0), 2)
        np.testing.assert_array_equal(np.asarray(Image.open(out / row["mask_file"])), expected)
        assert float(row["area_mm2"]) == pytest.approx((expected > 0).sum() * 0.125)
    assert multi.calls == [2, 1]  # streamed in batches of --batch_size


def test_nifti_volume_gives_a_mask_with_the_input_shape_and_affine(binary, tmp_path):
    data = np.random.default_rng(0).normal(100, 40, (20, 16, 5)).astype(np.float32)
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), source)
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--batch_size", "2") == 0
    written = nib.load(out / "ct_mask.nii.gz")
    assert written.shape == (20, 16, 5) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, AFFINE)
    volume = np.asarray(written.dataobj)
    rows = read_csv(out / "predictions.csv")
    assert [r["frame"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert {r["mask_file"] for r in rows} == {"ct_mask.nii.gz"}
    for k, row in enumerate(rows):
        assert int(row["area_px"]) == int(volume[..., k].sum())
        assert float(row["area_mm2"]) == pytest.approx(volume[..., k].sum() * 0.8 * 1.2, rel=1e-5)


def test_slice_axis_and_png_output_of_a_volume(multi, tmp_path):
    source = tmp_path / "vol.nii"
    data = np.arange(3 * 10 * 9, dtype=np.int16).reshape(3, 10, 9)
    nib.save(nib.Nifti1Image(data, AFFINE), source)
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--slice_axis", "0", "--output_format", "nifti") == 0
    mask = nib.load(out / "vol_mask.nii.gz")
    assert mask.shape == (3, 10, 9)
    np.testing.assert_allclose(mask.affine, AFFINE)
    frames = read_medical_image(source, slice_axis=0).frames
    for k in range(3):
        np.testing.assert_array_equal(np.asarray(mask.dataobj)[k], brightness_labels(frames[k], (0.0, 1.0), 2))
    assert run("--input", source, "--output_dir", out / "png", "--slice_axis", "0", "--output_format", "png") == 0
    assert sorted(p.name for p in (out / "png").glob("*.png")) == ["vol_slice0.png", "vol_slice1.png", "vol_slice2.png"]


def test_window_flag_reaches_the_reader(multi, tmp_path):
    source = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--window", "40,400") == 0
    windowed = read_medical_image(source, window=(40, 400)).frames[0]
    default = read_medical_image(source).frames[0]
    got = np.asarray(Image.open(out / "CT_small.png"))
    np.testing.assert_array_equal(got, brightness_labels(windowed, (0.0, 1.0), 2))
    assert not np.array_equal(got, brightness_labels(default, (0.0, 1.0), 2))


def check_seg_references(path, source, labels, model_id, num_frames):
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [source.SOPInstanceUID]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == labels
    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("GMS", model_id)
    assert int(seg.NumberOfFrames) == num_frames * len(labels)
    return hd.seg.segread(path)


def test_dicom_seg_of_a_binary_model(binary, tmp_path):
    source = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--output_format", "dicom-seg", "--model", "my/model") == 0
    source_ds = pydicom.dcmread(source)
    seg = check_seg_references(out / "CT_small_seg.dcm", source_ds, ["foreground"], "my/model", 1)
    pixels = seg.get_pixels_by_source_instance([source_ds.SOPInstanceUID], segment_numbers=[1])[0, ..., 0]
    expected = binary.segment(read_medical_image(source).frames[0], value_range=(0.0, 1.0))
    np.testing.assert_array_equal(pixels, expected)
    (row,) = read_csv(out / "predictions.csv")
    assert row["mask_file"] == "CT_small_seg.dcm" and int(row["area_px"]) == int(expected.sum())


def test_dicom_seg_of_a_multi_class_multi_frame_file(multi, tmp_path):
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    out = tmp_path / "out"
    assert run("--input", source, "--output_dir", out, "--output_format", "dicom-seg", "--model", "org/m@v1") == 0
    source_ds = pydicom.dcmread(source, stop_before_pixels=True)
    seg = check_seg_references(out / "enhanced_seg.dcm", source_ds, ["polyp", "instrument"], "org/m@v1", 3)
    pixels = seg.get_pixels_by_source_frame(source_ds.SOPInstanceUID, source_frame_numbers=[1, 2, 3],
                                            segment_numbers=[1, 2])  # (3, H, W, 2)
    frames = read_medical_image(source).frames
    rows = read_csv(out / "predictions.csv")
    for k in range(3):
        expected = brightness_labels(frames[k], (0.0, 1.0), 2)
        for number in (1, 2):
            np.testing.assert_array_equal(pixels[k, ..., number - 1], expected == number)
            assert int(rows[k][f"area_px_{multi.id2label[number]}"]) == int((expected == number).sum())
        assert float(rows[k]["area_mm2"]) == pytest.approx((expected > 0).sum() * 0.5 * 0.75)


def test_bad_files_are_reported_skipped_and_exit_one(binary, tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG4HP41

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "good.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "truncated.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), folder / "plan.dcm")
    shutil.copy(os.path.join(data_path, "example4d.nii.gz"), folder / "fmri.nii.gz")
    video = write_dicom(folder / "video.dcm", np.zeros((8, 8, 3), np.uint8), photometric="RGB")
    ds = pydicom.dcmread(video)
    ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID = "YBR_PARTIAL_420", MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(video)
    write_dicom(folder / "empty.dcm", np.zeros((2, 8, 8), np.uint16), NumberOfFrames=0)
    broken = folder / "broken.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), AFFINE), broken)
    raw = bytearray(broken.read_bytes())
    raw[0:4], raw[344:348] = (999).to_bytes(4, "little"), b"xxxx"
    broken.write_bytes(bytes(raw))
    out = tmp_path / "out"
    assert run("--input", folder, "--output_dir", out) == 1
    assert (out / "good.png").is_file()
    rows = {os.path.basename(r["input"]): r for r in read_csv(out / "predictions.csv")}
    assert rows["good.dcm"]["status"] == "ok"
    expected = {"truncated.dcm": "truncated", "plan.dcm": "no Pixel Data", "fmri.nii.gz": "4D",
                "video.dcm": "MPEG-4", "empty.dcm": "0 frames", "broken.nii": "header cannot be read"}
    for name, words in expected.items():
        assert words in rows[name]["status"] and name in rows[name]["status"], (name, rows[name]["status"])
        assert rows[name]["mask_file"] == ""
    assert len(list(out.glob("*.png"))) == 1


def test_output_format_that_does_not_fit_the_input_is_an_error(binary, tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "us.png")
    out = tmp_path / "out"
    assert run("--input", tmp_path / "us.png", "--output_dir", out, "--output_format", "dicom-seg") == 1
    (row,) = read_csv(out / "predictions.csv")
    assert "needs a DICOM input" in row["status"] and not (out / "us.png").exists()


def test_no_patient_data_in_logs_outputs_or_csv(binary, tmp_path, caplog, capsys):
    source = write_dicom(tmp_path / "patient.dcm", np.arange(256, dtype=np.uint16).reshape(16, 16) * 10,
                         PixelSpacing=[0.4, 0.4])
    broken = write_dicom(tmp_path / "broken.dcm", np.zeros((16, 16), np.uint16))
    broken.write_bytes(broken.read_bytes()[:-100])
    out = tmp_path / "out"
    with caplog.at_level("DEBUG"):
        assert run("--input", tmp_path / "*.dcm", "--output_dir", out, "--save_overlay") == 1
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err + (out / "predictions.csv").read_text()
    assert "patient.dcm" in text and "broken.dcm" in text
    for value in PATIENT.values():
        assert value not in text and value.replace("^", " ") not in text
    assert (out / "patient.png").is_file() and source.is_file()
