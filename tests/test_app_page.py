"""The Space's page as a visitor uses it (Playwright + Debian's Chromium), and the `/segment_batch` API.

One app server per module (`python app.py`, offline, a tiny random GMS as the demo model, and two configured
models: `my-model`, binary, and `my-multiclass`, a tiny random 2-class GMS) and one browser.
Screenshots of every step go to test-artifacts/page_*.png.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _app_utils import ROOT, AppServer, make_tiny_model

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("page_model") / "tiny-gms")


ID2LABEL = {0: "background", 1: "benign", 2: "malignant"}


@pytest.fixture(scope="module")
def multiclass_model_dir(tmp_path_factory):
    # Seed 0 gives a random 2-class model whose labels of the `images` fixture's gray8.png hold both classes
    # (checked in the multi-class tests against the library, so the legend and the table are not vacuous).
    return make_tiny_model(tmp_path_factory.mktemp("page_model") / "tiny-multiclass", seed=0, num_classes=2,
                           id2label=ID2LABEL)


@pytest.fixture(scope="module")
def server(tiny_model_dir, multiclass_model_dir, tmp_path_factory):
    # Models of their own names, beside the benchmarks: `GMS_MODELS="my-model=<folder>,my-multiclass=<folder>"`.
    app = AppServer(tiny_model_dir, tmp_path_factory.mktemp("page_server") / "app.log",
                    extra_env={"GMS_MODELS": f"my-model={tiny_model_dir},my-multiclass={multiclass_model_dir}"})
    try:
        yield app.wait_ready(timeout_s=120)
    finally:
        app.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An 8-bit gray PNG, a 16-bit PNG using a narrow band of values, and an RGBA PNG (odd sizes)."""
    folder = tmp_path_factory.mktemp("page_images")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    gray16 = rng.integers(1000, 1200, (64, 80)).astype(np.uint16)  # dark as 8-bit; the library stretches it
    rgba = rng.integers(0, 256, (50, 66, 4), dtype=np.uint8)
    paths = {"gray8": folder / "gray8.png", "gray16": folder / "gray16.png", "rgba": folder / "rgba.png"}
    Image.fromarray(gray).save(paths["gray8"])
    Image.fromarray(gray16).save(paths["gray16"])
    Image.fromarray(rgba, mode="RGBA").save(paths["rgba"])
    return paths


@pytest.fixture(scope="module")
def medical(tmp_path_factory):
    """A 12-bit CT slice (0.6 mm pixels, HU window) and a 5-slice NIfTI volume (0.7 x 0.9 mm pixels)."""
    import nibabel as nib

    from _medical_utils import write_dicom

    folder = tmp_path_factory.mktemp("page_medical")
    rows, cols = 96, 128
    y, x = np.mgrid[:rows, :cols]
    body = ((y - rows / 2) / (rows * 0.42)) ** 2 + ((x - cols / 2) / (cols * 0.45)) ** 2 < 1
    lesion = ((y - rows * 0.45) ** 2 + (x - cols * 0.6) ** 2) < (rows * 0.12) ** 2
    hu = np.where(body, 40, -1000) + np.where(lesion, 120, 0)
    pixels = (hu + 1024 + np.random.default_rng(0).normal(0, 15, hu.shape)).clip(0, 4095).astype(np.uint16)
    ct = write_dicom(folder / "ct.dcm", pixels, bits_stored=12, PixelSpacing=[0.6, 0.6], SliceThickness=2.5,
                     ImagePositionPatient=[0.0, 0.0, 0.0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0], RescaleSlope=1,
                     RescaleIntercept=-1024, RescaleType="HU", WindowCenter=40, WindowWidth=400)
    volume = np.stack([np.roll(hu, 6 * k, axis=1) for k in range(5)], axis=-1).astype(np.float32)  # (96, 128, 5)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.9, 2.5, 1.0])), folder / "volume.nii.gz")
    return {"dicom": ct, "nifti": folder / "volume.nii.gz"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _image_ready(page, selector, timeout=60_000):
    """Wait until `selector` is a loaded <img>; returns its natural (width, height)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector, timeout=timeout,
    )
    return tuple(page.locator(selector).first.evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def _image_max_value(page, selector):
    """The brightest channel value of a loaded <img> (drawn on a canvas in the page)."""
    return page.locator(selector).first.evaluate(
        """i => { const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const x = c.getContext('2d'); x.drawImage(i, 0, 0);
        const d = x.getImageData(0, 0, c.width, c.height).data; let m = 0;
        for (let k = 0; k < d.length; k += 4) m = Math.max(m, d[k], d[k + 1], d[k + 2]); return m; }"""
    )


def _upload_and_segment(page, path, size):
    page.wait_for_selector("#image-file input[type=file], #image-file button[aria-label=Clear]", state="attached")
    if page.locator("#image-file input[type=file]").count() == 0:  # a file is shown: clear it first, as a visitor would
        page.locator("#image-file").get_by_label("Clear").click()
    page.locator("#image-file input[type=file]").set_input_files(str(path))
    # The preview shows this file before anything is segmented. The previous upload's preview stays on the page
    # until the new one arrives, so wait for an image of this file's size (and fail if it never comes).
    page.wait_for_function(
        "([s, w, h]) => { const i = document.querySelector(s); "
        "return i && i.complete && i.naturalWidth === w && i.naturalHeight === h; }",
        arg=["#preview img", size[0], size[1]], timeout=60_000,
    )
    assert _image_ready(page, "#preview img") == size
    page.locator("#segment-button").click()
    table = page.locator("#result-table")
    expect_text(table, f"{size[0]} × {size[1]} px")
    expect_text(table, "Segmented area")
    return table


def expect_text(locator, text, timeout=60_000):
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=timeout)


def _no_horizontal_overflow(page):
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.browser
def test_desktop_visitor_flow(server, browser, images, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url, wait_until="domcontentloaded")
    expect_text(page.locator("#model-source"), "demo model trained on synthetic data")
    expect(page.locator("#examples img")).to_have_count(4)  # the examples as thumbnails with their labels
    expect(page.locator("#examples")).to_contain_text("breast ultrasound (16-bit PNG)")

    # Upload each kind: the preview appears at the file's size; 16-bit is stretched, not black.
    for kind, size in (("gray8", (90, 70)), ("rgba", (66, 50)), ("gray16", (80, 64))):
        _upload_and_segment(page, images[kind], size)
        page.screenshot(path=str(ARTIFACTS / f"page_desktop_{kind}.png"), full_page=True)
    assert _image_max_value(page, "#preview img") == 255  # values 1000..1199 of 65535, stretched per image
    table = page.locator("#result-table")
    expect_text(table, "demo model trained on synthetic data")
    expect_text(table, "on cpu, float32")
    expect(page.locator("#stats")).to_have_count(0)  # no JSON dump on the page

    # Threshold 1 re-thresholds the cached probabilities: nothing is above 1.
    number = page.get_by_label("number input for Threshold (re-thresholds without rerunning)")
    number.fill("1")
    number.press("Tab")
    expect_text(table, "0 px (0.00 %)")
    expect_text(table, "Threshold1.00")

    # Download the mask: a PNG at the input's size.
    with page.expect_download() as download:
        page.locator("#mask-file a").first.click()
    mask_path = tmp_path / "mask.png"
    download.value.save_as(mask_path)
    with Image.open(mask_path) as mask:
        assert mask.format == "PNG" and mask.size == (80, 64)
        assert not np.asarray(mask).any()  # the re-thresholded mask (threshold 1), not the first one

    number.fill("0")
    number.press("Tab")
    expect(table).not_to_contain_text("Threshold1.00", timeout=30_000)
    expect(table).not_to_contain_text("0 px (0.00 %)")

    # Opacity re-renders the overlay from the cache.
    before = page.locator("#overlay img").get_attribute("src")
    opacity = page.get_by_label("number input for Overlay opacity")
    opacity.fill("0.9")
    opacity.press("Tab")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", before, timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "page_desktop_rethreshold.png"), full_page=True)

    # Before/after comparison: two images of the same size.
    page.get_by_role("tab", name="Compare").click()
    compare = page.locator("#compare img")
    expect(compare).to_have_count(2, timeout=30_000)
    expect(compare.first).to_be_visible()
    assert _image_ready(page, "#compare img") == (80, 64)
    page.screenshot(path=str(ARTIFACTS / "page_desktop_compare.png"), full_page=True)

    # Probability heat map with its colour bar on the right (wider than the image).
    page.get_by_role("tab", name="Probability").click()
    width, height = _image_ready(page, "#heatmap img")
    assert height >= 64 and width > height * 80 / 64  # the image's aspect plus the bar
    page.screenshot(path=str(ARTIFACTS / "page_desktop_heatmap.png"), full_page=True)

    # About this model: the demo card's plain statement.
    page.get_by_text("About this model").click()
    expect_text(page.locator("#model-card"), "Demo model trained on synthetic data.")
    page.screenshot(path=str(ARTIFACTS / "page_desktop_about.png"), full_page=True)

    # A click on an example thumbnail loads it with its model and segments it.
    page.locator("#examples button[aria-label='Thumbnail 3 of 4']").click()
    expect_text(table, "HAM10000 (dermoscopy)")
    expect_text(page.locator("#image-file"), "dermoscopy")
    page.close()


@pytest.mark.browser
def test_desktop_batch_of_three(server, browser, images, medical, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Batch").click()
    files = [images["gray8"], images["gray16"], medical["nifti"]]  # two images and a 5-slice NIfTI volume
    page.locator("#batch-files input[type=file]").set_input_files([str(p) for p in files])
    page.locator("#batch-button").click()
    expect_text(page.locator("#batch-zip"), "masks")  # the page shows "masks .zip"
    expect_text(page.locator("#batch-csv"), "stats")
    rows = page.locator("#batch-table")
    for name in ("gray8.png", "gray16.png", "volume.nii.gz"):
        expect(rows).to_contain_text(name)
    page.screenshot(path=str(ARTIFACTS / "page_desktop_batch.png"), full_page=True)
    first_column = rows.locator("[aria-rowindex][aria-colindex='1']")  # the grid's cells (not its sizing row)
    expect(first_column.filter(has_text="volume.nii.gz")).to_have_count(5)  # one row per slice
    expect(first_column.filter(has_text="gray8.png")).to_have_count(1)
    with page.expect_download() as download:
        page.locator("#batch-zip a").first.click()
    zip_path = tmp_path / "masks.zip"
    download.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["gray16_mask.png", "gray8_mask.png", "volume_mask.nii.gz"]
    page.close()


@pytest.mark.browser
def test_phone_upload_segment_and_table(server, browser, images):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.goto(server.url, wait_until="domcontentloaded")
    expect(page.locator("#segment-button")).to_be_visible()
    table = _upload_and_segment(page, images["gray8"], (90, 70))
    table.scroll_into_view_if_needed()
    expect(table).to_be_in_viewport()
    expect(page.locator("#preview img")).to_be_visible()
    assert _no_horizontal_overflow(page)
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "page_phone.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_phone_batch_with_a_volume_fits_the_screen(server, browser, images, medical):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.goto(server.url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files([str(images["gray8"]), str(medical["nifti"])])
    page.locator("#batch-button").click()
    expect_text(page.locator("#batch-zip"), "masks")
    table = page.locator("#batch-table")
    expect(table.locator("[aria-rowindex][aria-colindex='1']").filter(has_text="volume.nii.gz")).to_have_count(5)
    assert _no_horizontal_overflow(page)  # the six columns scroll inside the table, not the page
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "page_phone_batch.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_dark_mode_multiclass_legend_is_readable(server, browser, images, multiclass_model_dir):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "?__theme=dark", wait_until="domcontentloaded")
    page.locator("#model input").click()
    page.get_by_role("option", name="my-multiclass").click()
    expect_text(page.locator("#model-source"), "local model folder")
    _upload_and_segment(page, images["gray8"], (90, 70))
    legend = page.locator("#legend .gms-legend")
    expect(legend).to_contain_text("malignant")
    text, background = legend.evaluate(
        "e => { let b = e; while (b && getComputedStyle(b).backgroundColor.endsWith(', 0)')) b = b.parentElement;"
        " return [getComputedStyle(e).color, b ? getComputedStyle(b).backgroundColor : 'rgb(0, 0, 0)']; }"
    )
    assert _luminance(text) > 0.6 and _luminance(background) < 0.4, (text, background)
    page.screenshot(path=str(ARTIFACTS / "page_dark_multiclass.png"), full_page=True)
    page.close()


def _luminance(css_color):
    r, g, b = [float(v) for v in css_color[css_color.index("(") + 1:css_color.index(")")].split(",")[:3]]
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.browser
def test_dark_mode_table_is_readable(server, browser, images):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "?__theme=dark", wait_until="domcontentloaded")
    _upload_and_segment(page, images["rgba"], (66, 50))

    def luminance(css_color):
        r, g, b = [float(v) for v in css_color[css_color.index("(") + 1:css_color.index(")")].split(",")[:3]]
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    cell = page.locator("#result-table td").first
    text, background = cell.evaluate("e => { const s = getComputedStyle(e); return [s.color, getComputedStyle(e.closest('table')).backgroundColor]; }")
    assert luminance(text) > 0.6 and luminance(background) < 0.4, (text, background)
    page.screenshot(path=str(ARTIFACTS / "page_dark.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_desktop_dicom_nifti_and_uncertainty(server, browser, medical, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url, wait_until="domcontentloaded")
    table = page.locator("#result-table")

    # A DICOM slice: preview at its size, no frame selector, area in mm², the DICOM SEG to download.
    _upload_and_segment(page, medical["dicom"], (128, 96))
    expect(page.locator("#frame")).to_be_hidden()
    expect_text(table, "mm²")
    expect_text(page.locator("#seg-file"), "ct_seg")
    with page.expect_download() as download:
        page.locator("#seg-file a").first.click()
    download.value.save_as(tmp_path / "seg.dcm")
    import highdicom as hd

    assert hd.seg.segread(tmp_path / "seg.dcm").SegmentSequence[0].SegmentLabel == "foreground"
    page.screenshot(path=str(ARTIFACTS / "page_desktop_dicom.png"), full_page=True)

    # A NIfTI volume: the slice selector appears; with posterior samples slice 3 alone is segmented.
    page.locator("#image-file").get_by_label("Clear").click()
    page.locator("#image-file input[type=file]").set_input_files(str(medical["nifti"]))
    expect(page.locator("#frame")).to_be_visible(timeout=30_000)
    expect_text(page.locator("#frame"), "Slice (1 to 5")
    first = page.locator("#preview img").get_attribute("src")
    number = page.get_by_label("number input for Slice (1 to 5; Segment runs on every slice, on this one only with "
                               "posterior samples or TTA)")
    number.fill("3")
    number.press("Tab")
    expect(page.locator("#preview img")).not_to_have_attribute("src", first, timeout=30_000)

    # Uncertainty: two posterior samples with TTA; its map in its tab, its mean in the table.
    samples = page.get_by_label("number input for Posterior samples (0 = the paper's single pass)")
    samples.fill("2")
    samples.press("Tab")
    page.locator("#tta input[type=checkbox]").check()
    page.locator("#segment-button").click()
    expect_text(table, "3 of 5")
    expect_text(table, "mm²")
    expect_text(table, "Mean uncertainty in mask")
    expect(page.locator("#seg-file")).to_be_hidden()  # NIfTI: no DICOM SEG
    page.get_by_role("tab", name="Uncertainty").click()
    width, height = _image_ready(page, "#uncertainty img")
    assert height >= 96 and width > height * 128 / 96  # the image's aspect plus the colour bar
    page.screenshot(path=str(ARTIFACTS / "page_desktop_uncertainty.png"), full_page=True)
    page.close()


# ---------------------------------------------------------------------------------------------- the API
def test_custom_model_name_is_served(server, images):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    *_, stats = client.predict(handle_file(str(images["gray8"])), "my-model", 0.5, api_name="/segment")
    assert stats["model"] == "my-model" and stats["source_kind"] == "local"
    with pytest.raises(AppError, match="Choose one of: bus, busi, glas, ham10000, kvasir-instrument, my-model"):
        client.predict(handle_file(str(images["gray8"])), "lits", 0.5, api_name="/segment")


def test_segment_batch_api(server, tiny_model_dir, images, tmp_path):
    from gradio_client import Client, handle_file

    from gms_hub import GMS

    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    files = [images["gray8"], images["gray16"], bad]
    client = Client(server.url, verbose=False)
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/segment_batch"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["image_files", "model_name", "threshold"]

    zip_path, csv_path, table = client.predict(
        [handle_file(str(p)) for p in files], "glas", 0.5, api_name="/segment_batch"
    )
    model = GMS.from_pretrained(tiny_model_dir)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["gray16_mask.png", "gray8_mask.png"]
        for name in ("gray8", "gray16"):
            mask = np.asarray(Image.open(io.BytesIO(archive.read(f"{name}_mask.png"))))
            np.testing.assert_array_equal(mask == 255, model.segment(Image.open(images[name]), threshold=0.5))
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["gray8.png", "gray16.png", "notes.png"]
    assert rows[0]["model"] == "glas" and rows[0]["source_kind"] == "demo" and rows[0]["error"] == ""
    assert int(rows[1]["area_px"]) == int(model.segment(Image.open(images["gray16"])).sum())
    assert "not an image" in rows[2]["error"] and rows[2]["mask"] == ""
    assert [row[0] for row in table["data"]] == ["gray8.png", "gray16.png", "notes.png"]


def test_segment_batch_api_rejects_empty_and_unknown_model(server, images):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match="No images were uploaded"):
        client.predict([], "busi", 0.5, api_name="/segment_batch")
    with pytest.raises(AppError, match="Unknown model 'unet'"):
        client.predict([handle_file(str(images["gray8"]))], "unet", 0.5, api_name="/segment_batch")


def test_segment_batch_api_writes_nifti_and_dicom_seg_with_a_row_per_frame(server, tiny_model_dir, images, medical,
                                                                             tmp_path):
    import highdicom as hd
    import nibabel as nib
    from gradio_client import Client, handle_file

    from _medical_utils import write_dicom
    from gms_hub import GMS
    from gms_hub.io.reading import read_medical_image

    rng = np.random.default_rng(3)  # a cine loop without a Frame of Reference: no SEG can reference its frames
    cine = write_dicom(tmp_path / "cine.dcm", rng.integers(0, 256, (3, 32, 40)).astype(np.uint8), modality="US",
                       frame_of_reference=False)
    files = [images["gray8"], medical["dicom"], medical["nifti"], cine]
    client = Client(server.url, verbose=False)
    zip_path, csv_path, table = client.predict([handle_file(str(p)) for p in files], "busi", 0.5,
                                               api_name="/segment_batch")
    model = GMS.from_pretrained(tiny_model_dir)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"], r["frame"]) for r in rows] == [
        ("gray8.png", ""), ("ct.dcm", "1"), *[("volume.nii.gz", str(k)) for k in range(5)],
        *[("cine.dcm", str(k)) for k in (1, 2, 3)],
    ]  # DICOM frames from 1, NIfTI slices by voxel index, as the predict CLI counts them
    assert all(r["error"] == "" for r in rows)
    assert [row[:2] for row in table["data"]][:2] == [["gray8.png", ""], ["ct.dcm", 1]]

    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["cine_frame1_mask.png", "cine_frame2_mask.png", "cine_frame3_mask.png",
                                              "ct_seg.dcm", "gray8_mask.png", "volume_mask.nii.gz"]
        archive.extractall(folder)

    # The DICOM SEG references its source and holds the library's mask; the row gives mm² from the 0.6 mm pixels.
    ct = read_medical_image(medical["dicom"])
    expected = model.segment(ct.frames[0], value_range=ct.value_range)
    seg = hd.seg.segread(folder / "ct_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ct.dataset.SOPInstanceUID
    np.testing.assert_array_equal(np.asarray(seg.pixel_array).reshape(expected.shape) > 0, expected)
    assert rows[1]["mask"] == "ct_seg.dcm" and int(rows[1]["area_px"]) == int(expected.sum())
    assert float(rows[1]["area_mm2"]) == pytest.approx(int(expected.sum()) * 0.36, abs=1e-3)

    # The NIfTI mask has the volume's shape and affine, and each slice is the library's mask of that slice.
    volume = read_medical_image(medical["nifti"])
    written = nib.load(folder / "volume_mask.nii.gz")
    np.testing.assert_allclose(written.affine, nib.load(medical["nifti"]).affine)
    data = np.asarray(written.dataobj)
    assert data.shape == (96, 128, 5) and data.dtype == np.uint8
    for k in range(5):
        expected = model.segment(volume.frames[k], value_range=volume.value_range)
        np.testing.assert_array_equal(data[..., k] == 1, expected)
        row = rows[2 + k]
        assert row["mask"] == "volume_mask.nii.gz" and int(row["area_px"]) == int(expected.sum())
        assert float(row["area_mm2"]) == pytest.approx(int(expected.sum()) * 0.7 * 0.9, abs=1e-3)

    # The cine loop's masks come as PNGs per frame, and the rows say why there is no SEG.
    for k, row in enumerate(rows[7:], start=1):
        assert row["mask"] == f"cine_frame{k}_mask.png" and "Frame of Reference" in row["note"]
        assert row["area_mm2"] == ""  # no Pixel Spacing in the file: no mm²


def _library_labels(model_dir, path):
    from gms_hub import GMS

    labels = GMS.from_pretrained(model_dir).segment(Image.open(path))  # (H, W) uint8 0..2
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts[1] > 0 and counts[2] > 0, f"the random model must give both classes on this image: {counts}"
    return labels, counts


@pytest.mark.browser
def test_desktop_multiclass_overlay_with_legend(server, browser, images, multiclass_model_dir):
    from playwright.sync_api import expect

    _, counts = _library_labels(multiclass_model_dir, images["gray8"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator("#model input").click()
    page.get_by_role("option", name="my-multiclass").click()
    expect_text(page.locator("#model-source"), "local model folder")
    table = _upload_and_segment(page, images["gray8"], (90, 70))
    legend = page.locator("#legend")
    expect(legend).to_be_visible()
    expect(legend).to_contain_text("benign")
    expect(legend).to_contain_text("malignant")
    for name, count in (("benign", counts[1]), ("malignant", counts[2])):
        expect(table.locator("tr", has_text=name)).to_contain_text(f"{count:,} px ({100 * count / (90 * 70):.2f} %)")
    expect(table).not_to_contain_text("Threshold")  # the arg-max decides, not the threshold
    _image_ready(page, "#overlay img")
    page.screenshot(path=str(ARTIFACTS / "page_multiclass.png"), full_page=True)
    page.close()


def test_segment_batch_api_gives_per_class_areas(server, images, multiclass_model_dir):
    from gradio_client import Client, handle_file

    labels, counts = _library_labels(multiclass_model_dir, images["gray8"])
    client = Client(server.url, verbose=False)
    zip_path, csv_path, _ = client.predict([handle_file(str(images["gray8"]))], "my-multiclass", 0.5,
                                           api_name="/segment_batch")
    with zipfile.ZipFile(zip_path) as archive:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(archive.read("gray8_mask.png")))), labels)
    with open(csv_path, newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert int(row["area_px_benign"]) == counts[1] and int(row["area_px_malignant"]) == counts[2]
    assert int(row["area_px"]) == counts[1] + counts[2]


@pytest.mark.browser
@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_volume_slice_slider(server, browser, medical, width, height):
    """A NIfTI volume: every slice is segmented; the slice slider under the overlay changes the picture without the
    model, the table gives mL, the download holds the mask and volumes.csv; a phone shows it without overflow."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator("#image-file input[type=file]").set_input_files(str(medical["nifti"]))
    expect(page.locator("#frame")).to_be_visible(timeout=30_000)
    page.locator("#segment-button").click()
    table = page.locator("#result-table")
    expect_text(table, "mL")
    expect_text(table, "Slices")
    slider = page.locator("#slice")
    expect(slider).to_be_visible(timeout=30_000)
    expect_text(page.locator("#volume-files"), "volumes.csv")
    expect_text(page.locator("#volume-files"), "volume_mask.nii")
    _image_ready(page, "#overlay img")
    before = page.locator("#overlay img").get_attribute("src")
    number = page.get_by_label("number input for Slice of the segmented volume (1 to 5)")
    expect(number).to_have_value("3")  # the middle slice first
    number.fill("5")
    number.press("Tab")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", before, timeout=30_000)
    assert "slice5" in page.locator("#overlay img").get_attribute("src")
    assert _no_horizontal_overflow(page)
    page.screenshot(path=str(ARTIFACTS / f"page_volume_{width}.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory):
    """A 3-slice DICOM series whose file names and instance numbers disagree with the slice positions."""
    from _series_utils import write_series

    datasets = write_series(tmp_path_factory.mktemp("page_series") / "study", 3)
    return sorted(Path(ds.filename) for ds in datasets)  # by name: not the spatial order


@pytest.mark.browser
def test_dicom_series_files_dropped_together(server, browser, images, dicom_series):
    """Three DICOM files of one series chosen together in the series box: they replace the single box's image,
    make one volume (slice slider, mL) and one DICOM SEG with volumes.csv; a new image in the single box then
    empties the series box."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator("#image-file input[type=file]").set_input_files(str(images["gray8"]))
    _image_ready(page, "#preview img")
    page.locator("#series-accordion").get_by_text("DICOM series: several files of one scan").click()
    page.locator("#series-files input[type=file]").set_input_files([str(p) for p in dicom_series])
    expect_text(page.locator("#series-files"), dicom_series[0].stem)
    expect(page.locator("#frame")).to_be_visible(timeout=30_000)
    expect(page.get_by_label("number input for Slice (1 to 3", exact=False)).to_be_visible()
    expect(page.locator("#image-file input[type=file]")).to_have_count(1, timeout=30_000)  # the single box emptied
    expect(page.locator("#image-file")).not_to_contain_text("gray8.png")
    page.locator("#segment-button").click()
    table = page.locator("#result-table")
    expect_text(table, "mL")
    expect_text(table, "Slices")
    expect(page.locator("#slice")).to_be_visible(timeout=30_000)
    expect(page.get_by_label("number input for Slice of the segmented volume (1 to 3)")).to_have_value("2")
    expect_text(page.locator("#volume-files"), "series7_seg")  # the page shows "series7_seg .dcm"
    expect_text(page.locator("#volume-files"), "volumes.csv")
    # The 3D view shows the OBJ in a mounted viewer (a canvas of the box's size).
    expect(page.locator("#surface")).to_be_visible()
    expect(page.locator("#surface [data-testid=model3d-download-link]")).to_have_attribute(
        "download", "series7_surface.obj")
    expect(page.locator("#surface canvas")).to_have_count(1, timeout=30_000)
    assert page.locator("#surface canvas").evaluate("c => c.clientWidth > 200 && c.clientHeight > 200")
    page.screenshot(path=str(ARTIFACTS / "page_series_1280.png"), full_page=True)

    page.locator("#image-file input[type=file]").set_input_files(str(images["gray8"]))
    expect(page.locator("#series-files")).not_to_contain_text(dicom_series[0].stem, timeout=30_000)
    page.close()
