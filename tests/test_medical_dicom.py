"""DICOM reading (intensity rules, frames, spacing, errors) and DICOM SEG writing, on pydicom's bundled test
files and on files written here. Expected intensities are computed here from the stored pixels, independently
of the reader."""

import logging
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (DigitalXRayImageStorageForPresentation, MPEG4HP41, SegmentationStorage,
                         UltrasoundMultiFrameImageStorage)

from _medical_utils import PATIENT, read_raw, write_dicom, write_enhanced_ct
from gms_hub.io.dicom import write_dicom_seg
from gms_hub.io.reading import read_medical_image
from gms_hub.io.medical import MedicalImageError, pixel_area_mm2
from gms_hub.io.reading import detect_medical_format


def minmax(x):
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), written out, mapped to 0..1."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_ct_small_applies_rescale_then_min_max():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_medical_image(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.kind == "dicom" and image.num_frames == 1 and image.shape == (1, 128, 128)
    assert image.frames[0].dtype == np.float32
    np.testing.assert_allclose(image.frames[0], minmax(hu), atol=1e-6)
    assert image.spacing == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))


def test_mr_small_uses_window_tags():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    expected = linear_window(ds.pixel_array.astype(np.float64), float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_allclose(read_medical_image(path).frames[0], expected, atol=1e-5)


def test_16_bit_rescale_and_window_tags(tmp_path):
    raw = (np.arange(40 * 30).reshape(40, 30) * 3).astype(np.uint16)
    path = write_dicom(tmp_path / "ct16.dcm", raw, bits_stored=16, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=0, WindowWidth=400, PixelSpacing=[0.4, 0.8])
    expected = linear_window(raw * 2.0 - 1000.0, 0.0, 400.0)
    image = read_medical_image(path)
    np.testing.assert_allclose(image.frames[0], expected, atol=1e-5)
    assert 0 < (expected > 0).mean() < 1 and (expected == 1).any()  # the window really clips both ends
    assert image.spacing == (0.4, 0.8)


def test_window_argument_overrides_the_tags():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = read_medical_image(path, window=(40, 400))
    np.testing.assert_allclose(image.frames[0], linear_window(hu, 40.0, 400.0), atol=1e-5)


def test_monochrome1_is_inverted_and_imager_spacing_is_kept(tmp_path):
    raw = (np.arange(20 * 24).reshape(20, 24) * 5).astype(np.uint16)
    path = write_dicom(tmp_path / "dx.dcm", raw, photometric="MONOCHROME1", bits_stored=12,
                       sop_class=DigitalXRayImageStorageForPresentation, modality="DX", ImagerPixelSpacing=[0.15, 0.2])
    image = read_medical_image(path)
    np.testing.assert_allclose(image.frames[0], 1.0 - minmax(raw), atol=1e-6)
    assert image.frames[0][0, 0] == 1.0  # the lowest stored value is the brightest in MONOCHROME1
    assert image.spacing == (0.15, 0.2)


def test_multi_frame_gives_one_image_per_frame_each_min_max(tmp_path):
    raw = np.stack([np.full((10, 12), 5 * k, np.uint16) + np.arange(12, dtype=np.uint16) * (k + 1) for k in range(5)])
    path = write_dicom(tmp_path / "cine.dcm", raw, sop_class=UltrasoundMultiFrameImageStorage, modality="US")
    image = read_medical_image(path)
    assert image.num_frames == 5 and image.shape == (5, 10, 12)
    batches = list(image.frames.batches(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    for k, frame in enumerate(frame for batch in batches for frame in batch):
        np.testing.assert_allclose(frame, minmax(raw[k]), atol=1e-6)
    np.testing.assert_allclose(image.frames[-1], minmax(raw[4]), atol=1e-6)


def test_rgb_is_divided_by_its_bit_depth(tmp_path):
    raw = np.random.default_rng(0).integers(10, 200, (16, 18, 3), dtype=np.uint8)
    image = read_medical_image(write_dicom(tmp_path / "rgb.dcm", raw, photometric="RGB", modality="XC"))
    assert image.frames[0].shape == (16, 18, 3)
    np.testing.assert_allclose(image.frames[0], raw / 255.0, atol=1e-6)


def test_ybr_full_422_becomes_rgb():
    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    ybr = pydicom.pixels.pixel_array(path, raw=True).astype(np.float64)  # (H, W, 3) Y, Cb, Cr
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128, ybr[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)  # PS3.3 C.7.6.3.1.2
    frame = read_medical_image(path).frames[0]
    np.testing.assert_allclose(frame, np.clip(rgb, 0, 255) / 255.0, atol=1.5 / 255)


def test_palette_colour_goes_through_the_lut():
    path = get_testdata_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    first = int(ds.RedPaletteColorLookupTableDescriptor[1])
    luts = [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2") for c in ("Red", "Green", "Blue")]
    index = np.clip(ds.pixel_array.astype(np.int64) - first, 0, len(luts[0]) - 1)
    expected = np.stack([lut[index] for lut in luts], -1) / 65535.0
    frame = read_medical_image(path).frames[0]
    assert frame.shape == (int(ds.Rows), int(ds.Columns), 3)
    np.testing.assert_allclose(frame, expected, atol=1e-6)


def test_cine_ultrasound_frames_and_region_spacing():
    path = get_testdata_file("examples_ybr_color.dcm")  # JPEG baseline, YBR_FULL_422, 30 frames
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    region = ds.SequenceOfUltrasoundRegions[0]
    image = read_medical_image(path)
    assert image.num_frames == 30 and image.frames[29].shape == (240, 320, 3)
    assert image.spacing == pytest.approx((float(region.PhysicalDeltaY) * 10, float(region.PhysicalDeltaX) * 10))
    assert 0.0 <= image.frames[0].min() and image.frames[0].max() <= 1.0


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_compressed_syntaxes_decode_like_the_uncompressed_file(name):
    reference = read_medical_image(get_testdata_file("MR_small.dcm")).frames[0]
    np.testing.assert_array_equal(read_medical_image(get_testdata_file(name)).frames[0], reference)


def test_enhanced_multi_frame_reads_rescale_and_window_from_functional_groups(tmp_path):
    image = read_medical_image(write_enhanced_ct(tmp_path / "enhanced.dcm"))
    ds = pydicom.dcmread(tmp_path / "enhanced.dcm")
    assert "WindowCenter" not in ds and "RescaleIntercept" not in ds  # only in the functional groups
    assert image.num_frames == 3 and image.spacing == (0.5, 0.75)
    for k in range(3):
        np.testing.assert_allclose(image.frames[k], linear_window(ds.pixel_array[k] - 1024.0, 40.0, 400.0), atol=1e-5)


def test_extensionless_file_is_recognised_by_its_preamble(tmp_path):
    target = tmp_path / "IM000001"
    shutil.copy(get_testdata_file("CT_small.dcm"), target)
    (tmp_path / "notes").write_bytes(b"x" * 200)
    assert detect_medical_format(target) == "dicom"
    assert detect_medical_format(tmp_path / "notes") is None
    assert read_medical_image(target).num_frames == 1


def test_pixel_area_mm2_gives_mask_areas():
    image = read_medical_image(get_testdata_file("CT_small.dcm"))
    mask = np.zeros((128, 128), bool)
    mask[10:30, 40:90] = True
    row, col = (float(v) for v in pydicom.dcmread(get_testdata_file("CT_small.dcm")).PixelSpacing)
    assert mask.sum() * pixel_area_mm2(image.spacing) == pytest.approx(1000 * row * col)
    assert pixel_area_mm2(None) is None
    with pytest.raises(ValueError, match="positive"):
        pixel_area_mm2((0.0, 1.0))


# ---------------------------------------------------------------- errors

def assert_clear_error(excinfo, name, *fragments):
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError) and name in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_truncated_pixel_data_is_an_error():
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(get_testdata_file("MR_truncated.dcm"))
    assert_clear_error(excinfo, "MR_truncated.dcm", "truncated", "export the file again")


def test_file_cut_in_the_header_is_an_error(tmp_path):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    (tmp_path / "cut.dcm").write_bytes(data[:900])
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(tmp_path / "cut.dcm")
    assert_clear_error(excinfo, "cut.dcm", "truncated")


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm"])
def test_objects_without_pixel_data_are_errors(name):
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(get_testdata_file(name))
    assert_clear_error(excinfo, name, "no Pixel Data", "Segment an image object")


def test_missing_decoder_plugin_names_the_syntax_and_the_package(monkeypatch):
    from pydicom.pixels import get_decoder

    decoder = get_decoder(pydicom.uid.JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})  # as if pyjpegls and pylibjpeg were not installed
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("pyjpegls",)})
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    assert_clear_error(excinfo, "MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless", "1.2.840.10008.1.2.4.80",
                       "pip install pyjpegls")


def test_syntax_without_any_decoder_is_an_error(tmp_path):
    path = write_dicom(tmp_path / "video.dcm", np.zeros((8, 8, 3), np.uint8), photometric="RGB")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(path)
    assert_clear_error(excinfo, "video.dcm", "MPEG-4 AVC/H.264", str(MPEG4HP41), "Transcode")


def test_zero_frames_is_an_error(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", np.zeros((2, 8, 8), np.uint16), NumberOfFrames=0)
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(path)
    assert_clear_error(excinfo, "empty.dcm", "0 frames", "at least one frame")


def test_dcm_without_preamble_is_an_error():
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(get_testdata_file("no_meta.dcm"))
    assert_clear_error(excinfo, "no_meta.dcm", "DICM")


def test_no_patient_data_in_reprs_logs_or_errors(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    good = write_dicom(tmp_path / "ok.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), photometric="MONOCHROME2")
    bad = write_dicom(tmp_path / "bad.dcm", np.zeros((2, 8, 8), np.uint16), NumberOfFrames=0)
    image = read_medical_image(good, window=(10, 20))
    texts = [repr(image), str(image)]
    with pytest.raises(MedicalImageError) as excinfo:
        read_medical_image(bad)
    texts.append(str(excinfo.value))
    with pytest.raises(ValueError) as excinfo:  # the SEG of a single-frame image with 2 masks: an error
        write_dicom_seg(np.zeros((2, 8, 8), np.uint8), image, tmp_path, labels=["x"], model_id="m")
    texts += [str(excinfo.value), caplog.text]
    for value in PATIENT.values():
        for fragment in value.split("^"):
            assert all(fragment not in text for text in texts), fragment


# ---------------------------------------------------------------- DICOM SEG

def check_seg(path, source_ds, labels, model_id, num_frames):
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source_ds.StudyInstanceUID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source_ds.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [source_ds.SOPInstanceUID]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == labels
    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert (segment.SegmentAlgorithmName, algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("GMS", "GMS", model_id)
    assert int(seg.NumberOfFrames) == num_frames * len(labels)
    for item in seg.PerFrameFunctionalGroupsSequence:
        (source,) = item.DerivationImageSequence[0].SourceImageSequence
        assert source.ReferencedSOPInstanceUID == source_ds.SOPInstanceUID
    return hd.seg.segread(path)


def test_dicom_seg_of_ct_small_references_the_source_and_reads_back(tmp_path):
    image = read_medical_image(get_testdata_file("CT_small.dcm"))
    mask = np.zeros((1, 128, 128), np.uint8)
    mask[0, 20:60, 30:90] = 1
    path = write_dicom_seg(mask, image, tmp_path, labels=["lesion"], model_id="user/gms-busi")
    assert path.name == "CT_small_seg.dcm"
    seg = check_seg(path, pydicom.dcmread(get_testdata_file("CT_small.dcm")), ["lesion"], "user/gms-busi", 1)
    np.testing.assert_array_equal(seg.get_pixels_by_source_instance(
        [image.dataset.SOPInstanceUID], segment_numbers=[1])[0, ..., 0], mask[0])


def test_dicom_seg_multi_class_and_multi_frame(tmp_path):
    source = write_enhanced_ct(tmp_path / "enhanced.dcm")
    image = read_medical_image(source)
    masks = np.zeros((3, 16, 12), np.uint8)
    masks[:, 2:6, 2:6], masks[1:, 8:12, 4:10] = 1, 2
    path = write_dicom_seg(masks, image, tmp_path / "out.dcm", labels=["polyp", "instrument"], model_id="m@v1")
    source_ds = pydicom.dcmread(source, stop_before_pixels=True)
    seg = check_seg(path, source_ds, ["polyp", "instrument"], "m@v1", 3)
    pixels = seg.get_pixels_by_source_frame(source_ds.SOPInstanceUID, source_frame_numbers=[1, 2, 3],
                                            segment_numbers=[1, 2])  # (3, H, W, 2)
    for number in (1, 2):
        np.testing.assert_array_equal(pixels[..., number - 1], masks == number)
    frames = [item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
              for item in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence]
    assert sorted(int(f) for f in frames) == [1, 1, 2, 2, 3, 3]


def test_dicom_seg_of_cine_without_frame_of_reference_is_a_clear_error(tmp_path):
    image = read_medical_image(get_testdata_file("examples_ybr_color.dcm"))
    with pytest.raises(MedicalImageError) as excinfo:
        write_dicom_seg(np.zeros((30, 240, 320), np.uint8), image, tmp_path, labels=["x"], model_id="m")
    assert_clear_error(excinfo, "examples_ybr_color.dcm", "Frame of Reference", "PNG or NIfTI")


def test_dicom_seg_of_single_frame_ultrasound_without_spacing(tmp_path):
    image = read_medical_image(get_testdata_file("examples_rgb_color.dcm"))
    assert image.spacing is None and "FrameOfReferenceUID" not in image.dataset
    mask = np.zeros((1, 240, 320), np.uint8)
    mask[0, 100:140, 50:200] = 1
    path = write_dicom_seg(mask, image, tmp_path, labels=["lesion"], model_id="m")
    check_seg(path, image.dataset, ["lesion"], "m", 1)


def test_dicom_seg_rejects_masks_that_do_not_fit(tmp_path):
    image = read_medical_image(get_testdata_file("CT_small.dcm"))
    with pytest.raises(ValueError, match="128x128"):
        write_dicom_seg(np.zeros((1, 64, 64), np.uint8), image, tmp_path, labels=["x"], model_id="m")
    with pytest.raises(ValueError, match="no label"):
        write_dicom_seg(np.full((1, 128, 128), 2, np.uint8), image, tmp_path, labels=["x"], model_id="m")


def test_dicom_seg_that_would_not_read_back_is_refused(tmp_path):
    image = read_medical_image(get_testdata_file("JPEG2000.dcm"))  # NM: Pixel Spacing but no Slice Thickness
    with pytest.raises(MedicalImageError) as excinfo:
        write_dicom_seg(np.zeros((1, 1024, 256), np.uint8), image, tmp_path, labels=["x"], model_id="m")
    assert_clear_error(excinfo, "JPEG2000.dcm", "does not read back", "PNG or NIfTI")
    assert not list(tmp_path.iterdir())
