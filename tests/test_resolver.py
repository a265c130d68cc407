"""gms_hub.load_model / classify_spec: every accepted spec form, and the errors for everything else."""

import functools
import http.server
import threading

import pytest
import torch

from gms_hub import DEMO_MODEL_PATH, GMS, load_model
from gms_hub.models.reference import convert_reference_state_dict, reference_checkpoint_path
from gms_hub.models.resolver import ModelSpec, classify_spec
from _reference_lmm import random_reference_state_dict, reference_key_shapes

try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # tests/ is not a package
    from hub_server import HubServer, hub_env, run_python


@pytest.fixture
def reference_state(tmp_path):
    """A random state dict in the reference layout, saved as the paper's `.pth` (state dict under `model`)."""
    state = random_reference_state_dict(reference_key_shapes())
    path = tmp_path / "best_model.pth"
    torch.save({"model": state}, str(path))
    return path, state


@pytest.fixture
def tiny_vae_kwargs(tiny_vae_dir):
    return dict(vae=str(tiny_vae_dir), vae_subfolder=None, image_size=64)


def _has_weights(model, state):
    ours = model.lmm.state_dict()
    converted = convert_reference_state_dict(state)
    return all(torch.equal(ours[key], value.to(ours[key].dtype)) for key, value in converted.items())


# ---------------------------------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("demo", ModelSpec("demo", str(DEMO_MODEL_PATH))),
        ("Demo", ModelSpec("demo", str(DEMO_MODEL_PATH))),
        ("BUSI", ModelSpec("reference", "busi")),
        ("kvasir-instrument", ModelSpec("reference", "kvasir-instrument")),
        ("https://example.org/ckpt/best_model.pth", ModelSpec("url", "https://example.org/ckpt/best_model.pth")),
        ("org/gms-busi", ModelSpec("hub", "org/gms-busi")),
        ("org/gms-busi@v1.0", ModelSpec("hub", "org/gms-busi", "v1.0")),
        ("gms-busi@0123abcd", ModelSpec("hub", "gms-busi", "0123abcd")),
    ],
)
def test_classify_names_urls_and_hub_ids(spec, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of these names exists here
    assert classify_spec(spec) == expected


def test_an_existing_path_wins_and_keeps_its_at_sign(tmp_path, monkeypatch, reference_state):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "busi").mkdir()  # e.g. train.py --output_dir busi
    (tmp_path / "gms@v1").mkdir()
    assert classify_spec("busi") == ModelSpec("local", "busi")
    assert classify_spec("gms@v1") == ModelSpec("local", "gms@v1")
    assert classify_spec(tmp_path / "gms@v1") == ModelSpec("local", str(tmp_path / "gms@v1"))
    assert classify_spec("best_model.pth") == ModelSpec("pth", "best_model.pth")
    assert classify_spec("glas") == ModelSpec("reference", "glas")


# ---------------------------------------------------------------------------------------------- loading each form
def test_demo_loads_the_bundled_model():
    model = load_model("demo")
    expected = GMS.from_pretrained(DEMO_MODEL_PATH)
    assert isinstance(model, GMS) and not model.training
    assert model.config == expected.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))


def test_pth_path_loads_the_reference_weights_on_the_asked_dtype(reference_state, tiny_vae_kwargs):
    path, state = reference_state
    model = load_model(str(path), torch_dtype=torch.bfloat16, threshold=0.4, **tiny_vae_kwargs)
    assert model.lmm.conv_in.weight.dtype == torch.bfloat16 and model.image_size == 64 and model.threshold == 0.4
    assert _has_weights(model, state)
    with pytest.raises(ValueError, match="applies to Hub repo ids only"):
        load_model(str(path), revision="v1", **tiny_vae_kwargs)


def test_reference_name_any_case_loads_the_cached_checkpoint(reference_state, tiny_vae_kwargs, tmp_path, monkeypatch):
    path, state = reference_state
    monkeypatch.setenv("GMS_HUB_CACHE", str(tmp_path / "cache"))
    cached = reference_checkpoint_path("busi")
    assert cached.is_relative_to(tmp_path / "cache") and not cached.exists()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    model = load_model("BuSi", threshold=0.3, **tiny_vae_kwargs)  # offline (conftest): read from the cache
    assert _has_weights(model, state) and model.threshold == 0.3
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE is set.*glas"):
        load_model("glas", **tiny_vae_kwargs)  # not cached: a clear error at once, no network wait


def test_url_is_downloaded_once_into_the_cache(reference_state, tiny_vae_kwargs, tmp_path, monkeypatch):
    from huggingface_hub import constants as hf_constants

    path, state = reference_state
    monkeypatch.setenv("GMS_HUB_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    try:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        with pytest.raises(ConnectionError, match="local_files_only=True"):
            load_model(url, local_files_only=True, **tiny_vae_kwargs)
        assert _has_weights(load_model(url, **tiny_vae_kwargs), state)
    finally:
        server.shutdown()
        server.server_close()
    assert reference_checkpoint_path(url).read_bytes() == path.read_bytes()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert _has_weights(load_model(url, **tiny_vae_kwargs), state)  # server gone, offline: from the cache


def test_local_folder_loads_what_save_pretrained_wrote(tiny_gms, tmp_path):
    folder = tmp_path / "gms@v2"  # an '@' in a local folder name is not a revision
    tiny_gms.save_pretrained(folder, include_vae=True)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for spec in (str(folder), folder):
        model = load_model(spec)
        with torch.no_grad():
            assert torch.equal(model(x).mask_probs, tiny_gms(x).mask_probs)
    assert load_model(folder, threshold=0.7).threshold == 0.7


HUB_REVISIONS = """
import sys, torch
sys.path.insert(0, "tests")
from huggingface_hub import HfApi
from conftest import make_tiny_vae, TINY_GMS_KWARGS
from gms_hub import GMS, load_model

api = HfApi()
vae = make_tiny_vae(seed=0)
torch.manual_seed(0)
first = GMS(vae=vae, **TINY_GMS_KWARGS).eval()
first.push_to_hub("me/gms-rev", include_vae=True)
pinned = api.model_info("me/gms-rev").sha
torch.manual_seed(1)
second = GMS(vae=vae, **TINY_GMS_KWARGS).eval()
second.push_to_hub("me/gms-rev", include_vae=True)
x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    assert not torch.equal(first(x).mask_probs, second(x).mask_probs)
    for spec, kwargs, expected in (("me/gms-rev@" + pinned, {}, first), ("me/gms-rev", {}, second),
                                   ("me/gms-rev@main", {}, second), ("me/gms-rev", {"revision": pinned}, first)):
        assert torch.equal(load_model(spec, **kwargs)(x).mask_probs, expected(x).mask_probs), spec
print("revisions ok")
"""


def test_hub_id_with_revision_against_the_local_hub(tmp_path):
    with HubServer(tmp_path / "hub_root") as hub:
        out = run_python(HUB_REVISIONS, hub_env(hub.url, tmp_path / "hf_home"), timeout=300)
    assert "revisions ok" in out.stdout


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec", ["", "   ", 42, None, ["busi"], "no/such/folder/here", "./missing-folder", "a b"])
def test_unknown_specs_list_the_accepted_forms(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Accepted: 'demo'.*reference name.*bus, busi, glas.*\\.pth.*Hub repo id"):
        load_model(spec)


def test_file_and_folder_errors_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="No checkpoint file at 'missing.pth'"):
        load_model("missing.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model("empty")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a .pth checkpoint.*Pass the folder that holds it"):
        load_model("model/config.json")
    with pytest.raises(ValueError, match="names no revision"):
        load_model("org/gms-busi@")


def test_revision_conflicts_are_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="applies to Hub repo ids only"):
        load_model("demo", revision="v1")
    with pytest.raises(ValueError, match="names revision 'v1' but revision='v2'"):
        load_model("org/gms-busi@v1", revision="v2")


def test_offline_hub_id_that_is_not_cached_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="org/gms-busi@v1 is not in the local Hub cache and HF_HUB_OFFLINE"):
        load_model("org/gms-busi@v1")
