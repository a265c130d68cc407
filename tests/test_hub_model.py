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
