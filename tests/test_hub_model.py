"""GMS push_to_hub -> from_pretrained over real HTTP against the local Hub test server, then offline from the cache."""

import pytest

try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # tests/ is not a package
    from hub_server import HubServer, hub_env, run_python

PUSH = """
import sys, torch
sys.path.insert(0, "tests")
from huggingface_hub import HfApi
from conftest import make_tiny_vae, TINY_GMS_KWARGS
from gms_hub import GMS

api = HfApi()
api.create_repo("org/tiny-sd", exist_ok=True)
make_tiny_vae(seed=0).push_to_hub("org/tiny-sd", subfolder="vae")
pinned = api.model_info("org/tiny-sd").sha
make_tiny_vae(seed=1).push_to_hub("org/tiny-sd", subfolder="vae")  # main moves on; the pin must hold

torch.manual_seed(0)
model = GMS(vae="org/tiny-sd", vae_subfolder="vae", vae_revision=pinned, **TINY_GMS_KWARGS)
assert model.config["vae"] == "org/tiny-sd" and model.config["vae_revision"] == pinned
model.push_to_hub("me/gms-tiny")
model.push_to_hub("me/gms-bundled", include_vae=True)
x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    torch.save({"x": x, "probs": model(x).mask_probs}, r"{expected}")
files = sorted(api.list_repo_files("me/gms-bundled"))
assert "vae/diffusion_pytorch_model.safetensors" in files and "model.safetensors" in files, files
"""

LOAD = """
import torch
from gms_hub import GMS
expected = torch.load(r"{expected}")
for repo in ("me/gms-tiny", "me/gms-bundled"):
    model = GMS.from_pretrained(repo)
    with torch.no_grad():
        assert torch.equal(model(expected["x"]).mask_probs, expected["probs"]), repo
print("loaded")
"""


@pytest.fixture
def hub(tmp_path):
    server = HubServer(tmp_path / "hub_root").start()
    yield server
    server.stop()


def test_push_then_load_in_fresh_process_then_offline(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    expected = tmp_path / "expected.pt"
    run_python(PUSH.replace("{expected}", str(expected)), env, timeout=240)

    # A fresh process with an empty cache downloads everything over HTTP.
    fresh = hub_env(hub.url, tmp_path / "hf_home_client")
    assert "loaded" in run_python(LOAD.replace("{expected}", str(expected)), fresh, timeout=240).stdout

    # With the server gone, HF_HUB_OFFLINE=1 loads the same models from the cache.
    hub.stop()
    offline = dict(fresh, HF_HUB_OFFLINE="1")
    assert "loaded" in run_python(LOAD.replace("{expected}", str(expected)), offline, timeout=240).stdout


MIXIN_ARGUMENTS = """
import sys, torch
from pathlib import Path
sys.path.insert(0, "tests")
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from conftest import make_tiny_vae, TINY_GMS_KWARGS
from gms_hub import GMS

api, work = HfApi(), Path(r"{work}")
torch.manual_seed(0)
model = GMS(vae=make_tiny_vae(), **TINY_GMS_KWARGS)
x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    expected = model(x).mask_probs

# save_pretrained(push_to_hub=True, repo_id=...): the mixin's arguments go to push_to_hub, ours with them.
url = model.save_pretrained(work / "local", include_vae=True, push_to_hub=True, repo_id="me/gms-args",
                            commit_message="First upload", private=True)
assert "me/gms-args" in url, url
assert (work / "local" / "vae" / "config.json").is_file()
files = set(api.list_repo_files("me/gms-args"))
assert {"config.json", "model.safetensors", "README.md", "vae/diffusion_pytorch_model.safetensors"} <= files, files
assert api.model_info("me/gms-args").private
assert api.list_repo_commits("me/gms-args")[0].title == "First upload"
main_sha = api.model_info("me/gms-args").sha

# push_to_hub(branch=..., commit_message=..., config=...): a commit on the branch only, with the config entry.
api.create_branch("me/gms-args", branch="v2")
model.push_to_hub("me/gms-args", include_vae=True, branch="v2", commit_message="Lower threshold",
                  config={"threshold": 0.25})
assert api.list_repo_commits("me/gms-args", revision="v2")[0].title == "Lower threshold"
assert api.model_info("me/gms-args").sha == main_sha
try:
    model.push_to_hub("me/gms-args", include_vae=True, create_pr=True)
    raise AssertionError("create_pr did not reach the server")
except HfHubHTTPError as err:
    assert "create_pr" in str(err), err

# allow_patterns / ignore_patterns / delete_patterns reach upload_folder.
model.push_to_hub("me/gms-partial", include_vae=True, ignore_patterns=["vae/*"])
assert not any(f.startswith("vae/") for f in api.list_repo_files("me/gms-partial"))
model.push_to_hub("me/gms-json", include_vae=True, allow_patterns=["*.json"])
assert set(api.list_repo_files("me/gms-json")) == {".gitattributes", "config.json", "vae/config.json"}
api.upload_file(path_or_fileobj=b"old", path_in_repo="notes.txt", repo_id="me/gms-partial")
model.push_to_hub("me/gms-partial", include_vae=True, delete_patterns=["*.txt"])
assert "notes.txt" not in api.list_repo_files("me/gms-partial")

# from_pretrained(revision=..., cache_dir=..., local_files_only=..., force_download=..., overrides).
assert GMS.from_pretrained("me/gms-args", revision="v2").threshold == 0.25
main = GMS.from_pretrained("me/gms-args", revision=main_sha, cache_dir=work / "cache")
assert main.threshold == 0.5 and main.config["vae"] is None
with torch.no_grad():
    assert torch.equal(main(x).mask_probs, expected)
assert list((work / "cache").rglob("model.safetensors")), "cache_dir was not used"
assert GMS.from_pretrained("me/gms-args", threshold=0.4).threshold == 0.4
try:
    GMS.from_pretrained("me/gms-args", cache_dir=work / "empty", local_files_only=True)
    raise AssertionError("local_files_only downloaded")
except LocalEntryNotFoundError:
    pass
cached = GMS.from_pretrained("me/gms-args", revision=main_sha, cache_dir=work / "cache", local_files_only=True)
with torch.no_grad():
    assert torch.equal(cached(x).mask_probs, expected)
# A corrupt cached weights file is reported; force_download=True fetches it again.
blob = next((work / "cache").rglob("model.safetensors")).resolve()
blob.write_bytes(blob.read_bytes()[:100])
try:
    GMS.from_pretrained("me/gms-args", revision=main_sha, cache_dir=work / "cache")
    raise AssertionError("the corrupt file loaded")
except ValueError as err:
    assert "force_download=True" in str(err), err
fixed = GMS.from_pretrained("me/gms-args", revision=main_sha, cache_dir=work / "cache", force_download=True)
with torch.no_grad():
    assert torch.equal(fixed(x).mask_probs, expected)
print("arguments ok")
"""


def test_mixin_arguments_against_the_hub_server(hub, tmp_path):
    """Every argument PyTorchModelHubMixin documents for save_pretrained / push_to_hub / from_pretrained, with ours."""
    env = hub_env(hub.url, tmp_path / "hf_home")
    out = run_python(MIXIN_ARGUMENTS.replace("{work}", str(tmp_path)), env, timeout=300)
    assert "arguments ok" in out.stdout
    assert not hub.unhandled, hub.unhandled


PUSH_TINY = """
import sys, torch
sys.path.insert(0, "tests")
from huggingface_hub import HfApi
from conftest import make_tiny_taesd, TINY_GMS_KWARGS
from gms_hub import GMS

HfApi().create_repo("org/tiny-taesd", exist_ok=True)
make_tiny_taesd(seed=0).push_to_hub("org/tiny-taesd")  # as madebyollin/taesd: the VAE at the repo root
torch.manual_seed(0)
model = GMS(vae="org/tiny-taesd", vae_subfolder=None, **TINY_GMS_KWARGS)
assert model.config["vae_class"] == "AutoencoderTiny" and model.config["vae"] == "org/tiny-taesd"
model.push_to_hub("me/gms-taesd")
model.push_to_hub("me/gms-taesd-bundled", include_vae=True)
x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    torch.save({"x": x, "probs": model(x).mask_probs}, r"{expected}")
"""

LOAD_TINY = LOAD.replace('("me/gms-tiny", "me/gms-bundled")', '("me/gms-taesd", "me/gms-taesd-bundled")').replace(
    "model = GMS.from_pretrained(repo)", "model = GMS.from_pretrained(repo); assert model.is_tiny, repo"
)


def test_tiny_autoencoder_push_then_load_in_fresh_process(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    expected = tmp_path / "expected.pt"
    run_python(PUSH_TINY.replace("{expected}", str(expected)), env, timeout=240)
    fresh = hub_env(hub.url, tmp_path / "hf_home_client")
    assert "loaded" in run_python(LOAD_TINY.replace("{expected}", str(expected)), fresh, timeout=240).stdout
