"""The Space (app.py): model resolution, upload handling, the /segment API and the page in Chromium.

The app runs as `python app.py` in a subprocess on 127.0.0.1 with HF_HUB_OFFLINE=1 and no GMS_MODELS, so it
serves the demo model; `GMS_DEMO_MODEL` points it at a tiny random GMS saved with `include_vae=True`.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from _app_utils import ROOT, AppServer, free_port, imported_app, make_tiny_model, write_png_bomb

ARTIFACTS = ROOT / "test-artifacts"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("app_model") / "tiny-gms")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from gms_hub import GMS

    return GMS.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    app = AppServer(tiny_model_dir, tmp_path_factory.mktemp("app_server") / "app.log")
    try:
        yield app.wait_ready(timeout_s=120)
    finally:
        app.stop()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def _noise(height, width, channels, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    high = 65535 if dtype == np.uint16 else 255
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, high + 1, size=shape, dtype=np.int64).astype(dtype)


def _write(path: Path, array: np.ndarray, fmt: str) -> Path:
    Image.fromarray(array).save(path, format=fmt)
    return path


IMAGE_KINDS = {
    # name: (file name, array maker, PIL format); odd sizes on purpose
    "gray_png": ("gray.png", lambda: _noise(37, 53, 1), "PNG"),
    "rgb_jpeg": ("rgb.jpg", lambda: _noise(61, 45, 3), "JPEG"),
    "rgba_png": ("rgba.png", lambda: _noise(33, 50, 4), "PNG"),
    "gray16_png": ("gray16.png", lambda: _noise(40, 71, 1, np.uint16), "PNG"),
    "gray16_tiff": ("gray16.tif", lambda: _noise(29, 33, 1, np.uint16), "TIFF"),
    "rgb_bmp": ("rgb.bmp", lambda: _noise(45, 27, 3), "BMP"),
}


def _segment(client, path, model="busi", threshold=0.5):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)) if path is not None else None, model, threshold, api_name="/segment")


# ---------------------------------------------------------------------------------------------- the API
@pytest.mark.parametrize("kind", sorted(IMAGE_KINDS))
def test_segment_api_returns_png_mask_at_input_size(client, tiny_model, tmp_path, kind):
    name, make, fmt = IMAGE_KINDS[kind]
    path = _write(tmp_path / name, make(), fmt)
    overlay, mask_path, prob_path, stats = _segment(client, path)

    with Image.open(path) as original:
        size = original.size
        expected = tiny_model.segment(original.copy(), threshold=0.5)  # bool (H, W): the library's answer
    with Image.open(mask_path) as mask_image:
        assert mask_image.format == "PNG"
        assert mask_image.size == size
        mask = np.asarray(mask_image)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, expected)
    assert stats["area_px"] == int((mask == 255).sum())
    assert stats["area_percent"] == pytest.approx(100.0 * stats["area_px"] / mask.size, abs=1e-3)
    assert (stats["height"], stats["width"]) == (size[1], size[0])
    assert stats["source_kind"] == "demo"
    assert stats["source"] == "demo model trained on synthetic data"
    with Image.open(overlay) as image:
        assert image.format == "PNG" and image.size == size
    with Image.open(prob_path) as image:
        assert image.format == "PNG" and image.size == size


def test_segment_api_threshold_one_gives_empty_mask(client, tmp_path):
    # Probabilities are clamped to [0, 1] and the mask is probability > threshold.
    path = _write(tmp_path / "gray.png", _noise(24, 24, 1), "PNG")
    _, mask_path, _, stats = _segment(client, path, threshold=1.0)
    assert stats["area_px"] == 0 and stats["threshold"] == 1.0
    assert not np.asarray(Image.open(mask_path)).any()


def test_segment_api_is_documented(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/segment"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["image_file", "model_name", "threshold"]
    assert len(info["returns"]) == 4  # overlay, mask PNG, probability map, stats (the State stays server-side)


def _bad_inputs(tmp_path):
    good = _write(tmp_path / "ok.png", _noise(32, 32, 3), "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_write(tmp_path / "full.png", _noise(64, 64, 3), "PNG").read_bytes()[:2000])
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image\n" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {
        "not an image": (not_image, "busi", "not an image"),
        "truncated": (truncated, "busi", "truncated or corrupt"),
        "1x1": (_write(tmp_path / "one.png", np.zeros((1, 1), np.uint8), "PNG"), "busi", "at least 8 pixels"),
        "bomb": (write_png_bomb(tmp_path / "bomb.png"), "busi", "too large"),
        "empty file": (empty, "busi", "empty"),
        "no upload": (None, "busi", "No image was uploaded"),
        "unknown model": (good, "unet-9000", "Unknown model 'unet-9000'"),
    }


def test_bad_inputs_give_clear_errors_and_server_stays_up(client, tmp_path):
    from gradio_client.exceptions import AppError

    cases = _bad_inputs(tmp_path)
    good = tmp_path / "ok.png"
    for case, (path, model, message) in cases.items():
        with pytest.raises(AppError, match=message):
            _segment(client, path, model=model)
        # the next good request still succeeds
        _, mask_path, _, stats = _segment(client, good)
        assert Image.open(mask_path).size == (32, 32), case
        assert stats["source_kind"] == "demo"


# ---------------------------------------------------------------------------------------------- the page
@pytest.mark.browser
def test_browser_upload_segment_and_rethreshold(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            expect(page.locator("#model-source")).to_contain_text("demo model trained on synthetic data")
            page.locator("#image-file input[type=file]").set_input_files(str(ROOT / "examples" / "ultrasound.png"))
            page.locator("#segment-button").click()
            overlay = page.locator("#overlay img")
            expect(overlay).to_be_visible(timeout=60_000)
            page.wait_for_function(
                "() => { const img = document.querySelector('#overlay img'); return img && img.complete && img.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [128, 128]
            expect(page.locator("#result-table")).to_contain_text("Segmented area")
            expect(page.locator("#model-source")).to_contain_text("served by demo model trained on synthetic data")
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)

            # Re-threshold at 1.0 from the cached probabilities: nothing is above 1.
            number = page.get_by_label("number input for Threshold (re-thresholds without rerunning)")
            number.fill("1")
            number.press("Tab")
            expect(page.locator("#result-table")).to_contain_text("0 px (0.00 %)", timeout=30_000)

            # Clicking an example loads it (with its model) and segments it.
            page.locator("#examples").get_by_text("dermoscopy (RGB JPEG)").click()
            expect(page.locator("#result-table")).to_contain_text("HAM10000 (dermoscopy)", timeout=60_000)
            expect(page.locator("#result-table")).to_contain_text("160 ×")
        finally:
            browser.close()
    assert (ARTIFACTS / "app.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- in-process
@pytest.fixture
def app_module(tiny_model_dir, tmp_path, monkeypatch):
    """Import app.py in this process (offline, demo = the tiny model) without launching it."""
    with imported_app(tiny_model_dir, tmp_path, monkeypatch) as module:
        yield module


def test_threshold_change_reuses_cached_probabilities(app_module, tiny_model, monkeypatch):
    path = ROOT / "examples" / "histology.png"
    result = app_module.segment_page(str(path), "glas", 0.5)

    def no_model(*args, **kwargs):
        raise AssertionError("re-thresholding must not run the model")

    monkeypatch.setattr(app_module.registry, "mask_probabilities", no_model)
    monkeypatch.setattr(app_module.registry, "get", no_model)
    _, mask_path, stats = app_module.rethreshold(result, 0.45)
    expected = tiny_model.segment(Image.open(path), threshold=0.45)
    np.testing.assert_array_equal(np.asarray(Image.open(mask_path)) == 255, expected)
    assert stats["threshold"] == 0.45 and stats["area_px"] == int(expected.sum())
    assert app_module.rethreshold(None, 0.3) == (app_module.gr.skip(),) * 3  # nothing segmented yet: no update


def test_models_load_once_and_demo_is_shared(app_module, monkeypatch):
    from gms_hub import GMS

    calls = []
    original = GMS.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(GMS, "from_pretrained", classmethod(counting))
    threads = [threading.Thread(target=app_module.registry.get, args=(name,)) for name in ("busi", "bus", "busi", "glas")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app_module.registry.get("kvasir-instrument")
    assert len(calls) == 1  # one demo model serves every benchmark offline, loaded once
    assert "served by demo model trained on synthetic data" in app_module.registry.describe("bus")


# ---------------------------------------------------------------------------------------------- resolution
def test_parse_model_config_formats():
    from space.config import parse_model_config

    assert parse_model_config('{"busi": "org/gms-busi", "BUS": null, "_comment": "x"}') == {"busi": "org/gms-busi"}
    assert parse_model_config(" busi=org/gms-busi@v1 , Kvasir_Instrument=org/k ") == {
        "busi": "org/gms-busi@v1", "kvasir-instrument": "org/k"}
    assert parse_model_config("") == {}
    with pytest.raises(ValueError, match="not name=repo"):
        parse_model_config("org/gms-busi")
    # any other name is a model of its own (a dropdown entry), stored in lower case
    assert parse_model_config("My-Model=org/mine,busi=org/b") == {"my-model": "org/mine", "busi": "org/b"}
    with pytest.raises(ValueError, match="'my model!' is not usable"):
        parse_model_config("my model!=org/gms-lits")


def test_custom_model_names_are_served_by_their_model_only(tiny_model_dir, tmp_path):
    from space.config import UnknownModelError
    from space.registry import ModelRegistry, ModelUnavailableError

    registry = ModelRegistry({"My-Model": str(tiny_model_dir), "broken": str(tmp_path)}, online=False,
                             demo_model_path=tiny_model_dir, device="cpu")
    assert registry.names() == ["bus", "busi", "glas", "ham10000", "kvasir-instrument", "my-model", "broken"]
    assert registry.normalize("MY-MODEL") == "my-model" and registry.label("my-model") == "my-model"
    assert [s.kind for s in registry.candidates("my-model")] == ["local"]  # no reference, no demo fallback
    assert registry.get("my-model").source.kind == "local"
    with pytest.raises(UnknownModelError, match="Choose one of: bus, busi, glas, ham10000, kvasir-instrument, "
                                                "my-model, broken"):
        registry.normalize("lits")
    with pytest.raises((ModelUnavailableError, ValueError)):
        registry.get("broken")  # an empty folder: an error, not the demo model


def test_config_file_is_overridden_by_env_value(tmp_path):
    from space.config import load_model_config

    config_file = tmp_path / "app_models.json"
    config_file.write_text('{"busi": "org/file-busi", "glas": "org/file-glas"}')
    assert load_model_config(config_file, "busi=org/env-busi") == {"busi": "org/env-busi", "glas": "org/file-glas"}
    assert load_model_config(tmp_path / "missing.json", None) == {}


def test_resolution_order_and_offline_fallback(tiny_model_dir, tmp_path, monkeypatch):
    from space.registry import ModelRegistry

    monkeypatch.setenv("GMS_HUB_CACHE", str(tmp_path / "reference"))
    registry = ModelRegistry(
        hub_models={"busi": "org/not-cached-anywhere", "glas": str(tiny_model_dir)},
        online=False, demo_model_path=tiny_model_dir, device="cpu",
    )
    assert [s.kind for s in registry.candidates("busi")] == ["hub", "demo"]
    assert [s.kind for s in registry.candidates("glas")] == ["local", "demo"]
    assert [s.kind for s in registry.candidates("ham10000")] == ["demo"]
    # A cached reference checkpoint is usable offline, between the configured repo and the demo model.
    cached = tmp_path / "reference" / "bus" / "best_model.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert [s.kind for s in registry.candidates("bus")] == ["reference", "demo"]
    assert [s.kind for s in ModelRegistry(online=True, demo_model_path=tiny_model_dir).candidates("busi")] == [
        "reference", "demo"]

    assert "will be served by Hub model org/not-cached-anywhere" in registry.describe("busi")
    loaded = registry.get("busi")  # the repo is not in the cache and we are offline -> demo model
    assert loaded.source.kind == "demo" and loaded.dtype == torch.float32
    assert registry.get("glas").source.kind == "local"


def test_configured_values_are_classified_by_the_library_resolver(tiny_model_dir, tmp_path):
    from space.registry import ModelRegistry

    (tmp_path / "ckpt.pth").write_bytes(b"")
    registry = ModelRegistry(
        hub_models={"busi": "org/gms-busi@v2", "bus": str(tmp_path / "ckpt.pth"), "glas": "kvasir-instrument"},
        online=False, demo_model_path=tiny_model_dir, device="cpu",
    )
    assert registry.candidates("busi")[0].spec == ("hub", "org/gms-busi", "v2")
    assert registry.candidates("bus")[0].spec == ("pth", str(tmp_path / "ckpt.pth"), None)
    assert registry.candidates("glas")[0].spec == ("reference", "kvasir-instrument", None)
    with pytest.raises(ValueError, match="configured for 'bus'.*No checkpoint file"):
        ModelRegistry(hub_models={"bus": str(tmp_path / "missing.pth")}, online=False, device="cpu")
    with pytest.raises(ValueError, match="configured for 'busi'.*Accepted: 'demo'"):
        ModelRegistry(hub_models={"busi": "not a repo id"}, online=False, device="cpu")


def test_no_source_and_unknown_name_errors(tmp_path):
    from space.config import UnknownModelError
    from space.registry import ModelRegistry, ModelUnavailableError

    registry = ModelRegistry(online=False, demo_model_path=tmp_path / "missing", device="cpu")
    with pytest.raises(ModelUnavailableError, match="GMS_DEMO_MODEL"):
        registry.get("busi")
    with pytest.raises(UnknownModelError, match="Choose one of: bus, busi, glas, ham10000, kvasir-instrument"):
        registry.get("brats")


def test_network_probe(monkeypatch):
    from huggingface_hub import constants as hf_constants

    from space.config import network_available

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert network_available(endpoint="http://127.0.0.1:1") is False
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert network_available(timeout_s=2.0, endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}") is True
    assert network_available(timeout_s=2.0, endpoint=f"http://127.0.0.1:{free_port()}") is False


class _PrecisionStub(torch.nn.Module):
    """Stands in for GMS: probabilities 0.6 in float32; in float16 `half_value`."""

    image_size, threshold = 16, 0.5

    def __init__(self, half_value):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.half_value = half_value

    @property
    def device(self):
        return self.weight.device

    def forward(self, pixel_values):
        value = self.half_value if self.weight.dtype == torch.float16 else 0.6
        probs = torch.full((pixel_values.shape[0], 1, 16, 16), value, dtype=self.weight.dtype)
        return SimpleNamespace(mask_probs=probs)


def test_half_precision_check_counts_changed_mask_pixels():
    import copy

    from space.registry import count_half_precision_changes

    images = [np.zeros((20, 12), np.uint8)]
    same = _PrecisionStub(half_value=0.55)
    assert count_half_precision_changes(same, copy.deepcopy(same).half(), images) == 0
    flips = _PrecisionStub(half_value=0.45)
    assert count_half_precision_changes(flips, copy.deepcopy(flips).half(), images) == 16 * 16 + 20 * 12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_precision_keeps_float32_masks(tiny_model_dir):
    from gms_hub import GMS
    from space.results import mask_from_probabilities
    from space.registry import ModelRegistry

    images = [Image.open(ROOT / "examples" / name) for name in ("ultrasound.png", "dermoscopy.jpg", "histology.png")]
    registry = ModelRegistry(demo_model_path=tiny_model_dir, device="cuda", check_images=images)
    loaded = registry.get("busi")
    assert loaded.dtype in (torch.float16, torch.float32) and loaded.device.type == "cuda"
    reference = GMS.from_pretrained(tiny_model_dir, device="cuda")  # float32 on the same device
    for image in images:
        prepared = registry.prepare("busi", image)
        probs = registry.mask_probabilities("busi", prepared.pixel_values)
        mask = mask_from_probabilities(probs, prepared.size, 0.5)
        np.testing.assert_array_equal(mask, reference.segment(image, threshold=0.5))


# ---------------------------------------------------------------------------------------------- reading and rendering
def test_read_image_keeps_16_bit_and_rejects_before_decoding(tmp_path):
    from gms_hub.io.reading import ImageReadError, read_image

    image = read_image(_write(tmp_path / "a.png", _noise(10, 12, 1, np.uint16), "PNG"))
    assert image.mode.startswith("I") and np.asarray(image).max() > 255
    with pytest.raises(ImageReadError, match="limit is 0.0001 megapixels"):
        read_image(_write(tmp_path / "b.png", _noise(20, 20, 1), "PNG"), max_pixels=100)
    Image.fromarray(_noise(16, 16, 3)).save(tmp_path / "c.gif")
    with pytest.raises(ImageReadError, match="GIF"):
        read_image(tmp_path / "c.gif")
    with pytest.raises(ImageReadError, match=r"Use a PNG, JPEG, BMP or TIFF image, a DICOM file .* or a NIfTI image"):
        read_image(None)


def test_upload_errors_are_worded_for_the_user(tmp_path):
    from space.results import InputError, read_upload

    with pytest.raises(InputError, match="No image was uploaded"):
        read_upload(None)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="'empty.png' is empty"):
        read_upload(empty)
    assert read_upload(ROOT / "examples" / "ultrasound.png").size == (128, 128)


def test_previews_are_bounded_and_overlay_follows_the_mask():
    from gms_hub.io.visualize import overlay_labels
    from space.results import display_image, probability_image

    preview = display_image(np.ones((2048, 1000, 3), np.float32))
    assert preview.shape == (1024, 500, 3) and preview.dtype == np.uint8 and preview.min() == 255
    mask = np.zeros((2048, 1000), bool)
    mask[512:1536, 250:750] = True  # the central quarter, at full size
    overlay = overlay_labels(np.zeros((1024, 500, 3), np.uint8), mask)  # the default opacity, 0.45
    assert overlay[512, 250].tolist() == [115, 22, 22]  # inside: 45 % red over black
    assert overlay[256, 125].tolist() == [255, 48, 48] and overlay[767, 374].tolist() == [255, 48, 48]  # outline
    assert overlay[255, 125].tolist() == [0, 0, 0]  # just outside the (preview-size) mask
    assert overlay[0, 0].tolist() == [0, 0, 0] and overlay[1000, 490].tolist() == [0, 0, 0]  # outside untouched
    assert probability_image(np.full((8, 8), 0.5, np.float32), (30, 20)).shape == (30, 20)


def test_old_results_are_pruned(app_module):
    import os

    stale = app_module.OUTPUT_DIR / "stale"
    stale.mkdir()
    os.utime(stale, (0, 0))
    result = {"probs": np.zeros((8, 8), np.float32), "size": (10, 12), "display": np.zeros((10, 12, 3), np.uint8),
              "stem": "x", "model": "busi", "source": "s", "source_kind": "demo", "device": "cpu", "precision": "float32"}
    overlay, mask_path, stats = app_module.rethreshold(result, 0.5)
    assert not stale.exists() and Path(mask_path).is_file() and stats["area_px"] == 0


# ---------------------------------------------------------------------------------------------- uncertainty
def _segment_uncertainty(client, path, model="busi", threshold=0.5, num_samples=0, tta=False, seed=0, frame=1):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), model, threshold, num_samples, tta, seed, frame,
                          api_name="/segment_uncertainty")


def test_segment_uncertainty_api_is_documented(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/segment_uncertainty"]
    assert [p["parameter_name"] for p in info["parameters"]] == [
        "image_file", "model_name", "threshold", "num_samples", "tta", "seed", "frame"]
    assert len(info["returns"]) == 5  # overlay, mask PNG, probability map, uncertainty map PNG, stats


def test_segment_uncertainty_api_matches_the_library_and_is_seeded(client, tiny_model, tmp_path):
    path = _write(tmp_path / "gray.png", _noise(45, 38, 1, seed=3), "PNG")
    overlay, mask_path, prob_path, unc_path, stats = _segment_uncertainty(client, path, num_samples=3, tta=True, seed=7)
    with Image.open(path) as image:
        mask, uncertainty = tiny_model.segment(image.copy(), num_samples=3, tta=True, return_uncertainty=True,
                                               generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(np.asarray(Image.open(mask_path)) == 255, mask)
    with Image.open(unc_path) as image:
        assert image.size == (38, 45) and image.mode.startswith("I")  # 16-bit PNG at the input's size
        served = np.asarray(image, dtype=np.float64) / 65535.0
    np.testing.assert_allclose(served, uncertainty, atol=1e-4)
    assert stats["num_samples"] == 3 and stats["tta"] is True
    expected_mean = float(uncertainty[mask].mean()) if mask.any() else None
    assert stats["mean_uncertainty"] == (pytest.approx(expected_mean, abs=1e-3) if mask.any() else None)
    again = _segment_uncertainty(client, path, num_samples=3, tta=True, seed=7)
    np.testing.assert_array_equal(np.asarray(Image.open(again[3])), np.asarray(Image.open(unc_path)))
    other = _segment_uncertainty(client, path, num_samples=3, tta=False, seed=8)
    assert not np.array_equal(np.asarray(Image.open(other[3])), np.asarray(Image.open(unc_path)))


def test_segment_uncertainty_api_rejects_bad_settings(client, tmp_path):
    from gradio_client.exceptions import AppError

    path = _write(tmp_path / "gray.png", _noise(24, 24, 1), "PNG")
    with pytest.raises(AppError, match="16"):  # the slider's own bound
        _segment_uncertainty(client, path, num_samples=17)
    with pytest.raises(AppError, match="single frame"):
        _segment_uncertainty(client, path, frame=2)
    with pytest.raises(AppError, match="counted from 1"):
        _segment_uncertainty(client, path, frame=0)


# ---------------------------------------------------------------------------------------------- DICOM and NIfTI
@pytest.fixture(scope="module")
def medical_files(tmp_path_factory):
    """A CT slice with spacing 0.5 x 0.75 mm, an extensionless 4-frame cine DICOM, a 5-slice NIfTI volume."""
    import nibabel as nib

    from _medical_utils import ct_slices, write_dicom

    folder = tmp_path_factory.mktemp("medical")
    ct = ct_slices(1)[0]  # 16 x 12 pixels
    ct.save_as(folder / "ct.dcm", enforce_file_format=True)
    rng = np.random.default_rng(1)
    write_dicom(folder / "cine", rng.integers(0, 256, (4, 32, 40)).astype(np.uint8), modality="US",
                frame_of_reference=False)
    volume = rng.normal(100, 30, (36, 44, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.9, 2.5, 1.0])), folder / "volume.nii.gz")
    return {"ct": folder / "ct.dcm", "cine": folder / "cine", "nifti": folder / "volume.nii.gz"}


def _library_mask(model, path, frame):
    from gms_hub.io.reading import read_medical_image

    scan = read_medical_image(path)
    return model.segment(scan.frames[frame], value_range=scan.value_range), scan


@pytest.mark.parametrize("name, frame, pixel_mm2", [("ct", 1, 0.5 * 0.75), ("cine", 3, None), ("nifti", 4, 0.7 * 0.9)])
def test_medical_uploads_segment_the_chosen_frame(client, tiny_model, medical_files, name, frame, pixel_mm2):
    path = medical_files[name]
    _, mask_path, _, _, stats = _segment_uncertainty(client, path, frame=frame)
    expected, scan = _library_mask(tiny_model, path, frame - 1)
    mask = np.asarray(Image.open(mask_path)) == 255
    np.testing.assert_array_equal(mask, expected)
    assert stats["area_px"] == int(expected.sum())
    if pixel_mm2 is None:
        assert "area_mm2" not in stats  # cine ultrasound without Pixel Spacing: no mm²
    else:
        assert stats["area_mm2"] == pytest.approx(stats["area_px"] * pixel_mm2, rel=1e-6)
    if scan.num_frames > 1:
        assert (stats["frame"], stats["num_frames"]) == (frame, scan.num_frames)
    # /segment, unchanged, takes the first frame
    _, first_mask, _, first_stats = _segment(client, path)
    np.testing.assert_array_equal(np.asarray(Image.open(first_mask)) == 255, _library_mask(tiny_model, path, 0)[0])


def test_bad_medical_files_give_clear_errors_and_keep_no_patient_data(client, server, medical_files, tmp_path):
    import nibabel as nib
    from gradio_client.exceptions import AppError
    from nibabel.testing import data_path

    from _medical_utils import PATIENT, dicom_dataset

    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(medical_files["ct"].read_bytes()[:-1000])
    report = dicom_dataset()  # patient, study, series: no pixel data (as a structured report)
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    broken = tmp_path / "broken.nii"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.float32), np.eye(4)), broken)
    raw = bytearray(broken.read_bytes())
    raw[0:4], raw[344:348] = (999).to_bytes(4, "little"), b"xxxx"
    broken.write_bytes(bytes(raw))
    four_d = tmp_path / "example4d.nii.gz"
    four_d.write_bytes((Path(data_path) / "example4d.nii.gz").read_bytes())
    cases = [
        (truncated, 1, "truncated"),
        (tmp_path / "report.dcm", 1, "no Pixel Data"),
        (broken, 1, "header cannot be read"),
        (four_d, 1, "4D"),
        (medical_files["nifti"], 9, "5 frame"),
    ]
    for path, frame, message in cases:
        with pytest.raises(AppError, match=message):
            _segment_uncertainty(client, path, frame=frame)
        _, mask_path, _, stats = _segment(client, medical_files["ct"])  # the server keeps serving
        assert Image.open(mask_path).size == (12, 16)
    log = server.log()
    for value in PATIENT.values():
        assert value not in log and value.replace("^", " ") not in log


# ---------------------------------------------------------------------------------------------- multi-class, SEG
def test_multiclass_result_renders_one_colour_per_class_with_legend_and_areas(app_module):
    # No multi-class GMS exists on this branch yet: a hand-made (K+1, S, S) result stands in for its probabilities.
    from gms_hub.io.visualize import label_colors

    size = 16
    probs = np.zeros((3, size, size), np.float32)
    probs[0] = 1.0
    probs[:, 2:8, 2:8] = [[[0.1]], [[0.8]], [[0.1]]]  # class 1 ("benign")
    probs[:, 10:14, 4:12] = [[[0.1]], [[0.2]], [[0.7]]]  # class 2 ("malignant")
    display = np.full((size, size, 3), 100, np.uint8)
    result = dict(probs=probs, uncertainty=None, id2label={0: "background", 1: "benign", 2: "malignant"},
                  size=(size, size), display=display, stem="case", path="case.png", kind="image", frame=0,
                  num_frames=1, pixel_area=0.25, model="my-model", source="local model folder x",
                  source_location="x", source_kind="local", device="cpu", precision="float32", seconds=0.1)
    app_module.registry.hub_models["my-model"] = "x"  # a configured name, for the table's label
    overlay, _, mask_path, table, legend, *_ = app_module.update_view(result, 0.5, 1.0)
    labels = np.asarray(Image.open(mask_path))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]  # an index PNG
    assert (labels == 1).sum() == 36 and (labels == 2).sum() == 32
    rgb = np.asarray(Image.open(overlay).convert("RGB"))
    colors = label_colors(2)[1:]
    assert rgb[4, 4].tolist() == list(colors[0]) and rgb[12, 8].tolist() == list(colors[1])
    assert rgb[0, 15].tolist() == [100, 100, 100]
    assert legend["visible"] is True
    assert "benign" in legend["value"] and "malignant" in legend["value"] and "rgb({},{},{})".format(*colors[1]) in legend["value"]
    assert "36 px" in table and "32 px" in table and "9.0 mm²" in table and "8.0 mm²" in table
    assert "Threshold" not in table  # the arg-max decides, not the threshold


def test_dicom_input_offers_a_seg_that_reads_back(app_module, tmp_path):
    import highdicom as hd

    from _medical_utils import ct_slices, write_dicom

    source = ct_slices(1)[0]
    source.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    result = app_module.segment_page(str(tmp_path / "ct.dcm"), "busi", 0.3)
    overlay, _, mask_path, table, _, seg_file, seg_note = app_module.update_view(result, 0.3, 0.45)
    assert "mm²" in table
    seg = hd.seg.segread(seg_file["value"])
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "foreground"
    mask = np.asarray(Image.open(mask_path)) == 255
    np.testing.assert_array_equal(np.asarray(seg.pixel_array).reshape(mask.shape) > 0, mask)  # one frame, one segment
    assert seg_note["visible"] is False

    rng = np.random.default_rng(0)
    write_dicom(tmp_path / "cine.dcm", rng.integers(0, 256, (3, 16, 16)).astype(np.uint8), modality="US")
    result = app_module.segment_page(str(tmp_path / "cine.dcm"), "busi", 0.5, frame=2)
    *_, seg_file, seg_note = app_module.update_view(result, 0.5, 0.45)
    assert seg_file["visible"] is False and "must cover every frame" in seg_note["value"]
